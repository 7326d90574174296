"""State and helpers shared by the LCA backends (SPEC Eq. 2).

Shapes: dictionary ``phi`` (N, M), one atom per column; inputs ``s`` (B, N);
codes (B, M).  With ``b = s phi``, ``G = phi^T phi`` and ``r = 1/tau``::

    u[0] = 0,   u[k+1] = u[k] + r (b - u[k] - (G - diag G) a[k]),   a[k] = T_lam(u[k])

and the returned code is a[K].  The N-space backends keep instead
``z[k+1] = (1 - r) z[k] + r (s - phi a[k])`` and ``v[k+1] = (1 - r) v[k] + r a[k]``
(z[0] = v[0] = 0); by linearity ``u[k] = phi^T z[k] + diag(G) v[k]`` exactly.
While nothing is active, ``u[k] = c_k b`` and ``z[k] = c_k s`` with
``c_k = 1 - (1 - r)^k``, so each row starts at its first possible crossing step.

FLOPs (``LCATrace.stats["flops"]``): 2 per multiply-add of every matrix product
a backend runs -- dense products (with phi, G, the screening basis or bound),
sparse reconstructions phi a (2 N per active pair) and sampled dot products
phi_i^T z (2 N per pair) -- plus the per-pair bound dot products of the active
backend's near test.  Elementwise work and norms are not counted, nor is
per-dictionary preprocessing reused across calls (a Gram matrix passed in, the
cached screening basis); a Gram matrix the gramian backend builds itself is
``stats["setup_flops"]``.  Work done only for ``trace="energy"`` is not counted.
Low-precision products are included and reported again as
``stats["flops_low_precision"]``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

THRESHOLDS = ("soft", "hard")


class LCATrace(NamedTuple):
    """Final codes and optional per-step traces (step k = 1..K, after the update)."""

    codes: torch.Tensor                    # (B, M)
    potentials: torch.Tensor | None        # (B, M) u[K]  (None when not requested)
    active: torch.Tensor | None = None     # (K, B) number of non-zero a[k]
    energy: torch.Tensor | None = None     # (K, B) 1/2 ||s - phi a||^2 + lam ||a||_1
    residual: torch.Tensor | None = None   # (K, B) 1/2 ||s - phi a||^2
    sparsity: torch.Tensor | None = None   # (K, B) lam ||a||_1
    skipped_steps: int = 0                 # steps skipped for every row (min over rows)
    stats: dict | None = None              # work counters of the backend, "flops" among them

# ``trace`` argument of the dynamics: False (codes only), "active" (active counts per
# step, nearly free) or "energy" / True (also E and its two terms).

# ``allreduce(tensor, op)`` hook: identity in one process; sums (op "sum") or maxima
# (op "max") a tensor over the ranks that hold the other slices of the dictionary
# (spikevit.lca.distributed).  Every rank then sees the same z, hence the same dynamics.
AllReduce = Callable[[torch.Tensor, str], torch.Tensor]


def no_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    """The ``allreduce`` of a single process: the identity."""
    return t


def threshold(u: torch.Tensor, lam: float, rectify: bool = True, kind: str = "soft") -> torch.Tensor:
    """T_lambda(u): soft (shrink) or hard threshold, rectified or signed."""
    if kind == "soft":
        if rectify:
            return torch.clamp(u - lam, min=0.0)
        return torch.sign(u) * torch.clamp(u.abs() - lam, min=0.0)
    if kind == "hard":
        keep = (u >= lam) if rectify else (u.abs() >= lam)
        return u * keep
    raise ValueError(f"unknown threshold kind {kind!r}; choose from {THRESHOLDS}")


def _crossing(drive: float, lam: float, tau: float, steps: int) -> int:
    if drive <= lam:  # c_k < 1 always: never crosses
        return steps
    r = 1.0 - 1.0 / tau
    if r <= 0.0:  # tau <= 1: u[1] = b already
        return min(1, steps)
    # smallest k with 1 - r^k >= lam / drive; stay one step conservative for round-off
    k = math.log1p(-lam / drive) / math.log(r)
    return max(0, min(steps, math.ceil(k) - 1))


def first_crossing_step(b: torch.Tensor, lam: float, tau: float, rectify: bool, steps: int) -> int:
    """Number of steps that can be skipped exactly (no neuron of any sample is active).

    While every a is zero, u[k] = c_k b with c_k = 1 - (1 - 1/tau)^k, so a neuron
    can first be active at the smallest k with c_k * drive >= lam, where
    drive = max b (rectified) or max |b|.  Returns the largest k such that all
    a[0..k-1] are provably zero, capped at ``steps``.
    """
    if lam <= 0 or steps == 0:
        return 0
    return _crossing(float(b.max() if rectify else b.abs().max()), lam, tau, steps)


def first_crossing_steps(drive: torch.Tensor, lam: float, tau: float, steps: int) -> torch.Tensor:
    """Per-row version of :func:`first_crossing_step` from (B,) drives max_i b_i (or max |b_i|) -> (B,) int64."""
    if lam <= 0 or steps == 0:
        return torch.zeros(drive.shape, dtype=torch.long)
    return torch.tensor([_crossing(float(d), lam, tau, steps) for d in drive.double().cpu().tolist()],
                        dtype=torch.long)


def product_flops(rows: float, n: int, m: int) -> float:
    """FLOPs of a (rows, n) x (n, m) product: 2 per multiply-add."""
    return 2.0 * rows * n * m


# --------------------------------------------------------------------------- sparse helpers


def csr(flat: torch.Tensor, vals: torch.Tensor, n: int, M: int) -> torch.Tensor:
    """(n, M) CSR matrix from sorted flat (row * M + atom) indices and their values."""
    rows = flat // M
    crow = torch.zeros(n + 1, dtype=torch.long, device=flat.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, flat % M, vals, (n, M), check_invariants=False)


def reconstruct(phiT: torch.Tensor, n: int, flat: torch.Tensor, vals: torch.Tensor, M: int) -> torch.Tensor:
    """(n, N) phi a for the active (sorted flat index, value) pairs: work proportional to the active atoms."""
    if flat.numel() == 0:
        return torch.zeros(n, phiT.shape[1], dtype=phiT.dtype, device=phiT.device)
    return torch.sparse.mm(csr(flat, vals, n, M), phiT)   # CSR: ~2x the COO product's speed on CPU


def sampled_dots(z: torch.Tensor, phiT: torch.Tensor, flat: torch.Tensor, init: torch.Tensor, M: int):
    """init + (z @ phi) at the sorted flat (row * M + atom) indices, reading only those atoms."""
    if flat.numel() == 0:
        return init
    out = torch.sparse.sampled_addmm(csr(flat, init, z.shape[0], M), z, phiT.T)
    return out.values()


# --------------------------------------------------------------------------- shared state


class SelfTerm:
    """v[k] = sum_j r (1 - r)^(k-1-j) a[j], stored scaled by (1 - r)^-k so a step touches active pairs only."""

    def __init__(self, B, M, decay, like, keep_ever=True):
        self.decay, self.keep_ever, self.M = decay, keep_ever, M
        self.scaled = torch.zeros(B * M, dtype=like.dtype, device=like.device)
        self.base = 0                                              # v[k] = scaled * decay^(k - base)
        self.ever = torch.zeros(0, dtype=torch.long, device=like.device)

    def _rebase(self, k):
        if k - self.base > 400:  # keep decay^-(k - base) far from overflow
            self.scaled.mul_(self.decay ** (k - self.base))
            self.base = k

    def add(self, k: int, flat: torch.Tensor, vals: torch.Tensor, rate: float):
        """v[k+1] = (1 - r) v[k] + r a[k] for the given active pairs."""
        self._rebase(k)
        if flat.numel():
            self.scaled.index_add_(0, flat, vals * (rate / self.decay ** (k + 1 - self.base)))
            if self.keep_ever:
                self.ever = torch.unique(torch.cat([self.ever, flat]))

    def at(self, k: int, flat: torch.Tensor) -> torch.Tensor:
        return self.scaled[flat] * self.decay ** (k - self.base)

    def dense(self, k: int, n: int, M: int) -> torch.Tensor:
        return self.scaled[: n * M].view(n, M) * self.decay ** (k - self.base)

    def rows(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        return self.scaled.view(-1, self.M)[idx] * self.decay ** (k - self.base)


class Problem:
    """Everything the N-space backends share: drives, row start steps, exclusion, traces, the step update.

    Rows are processed in order of their first possible crossing step, so the
    rows running at step k are a prefix ``[0, n_k)`` of the sorted batch.
    ``work`` holds the counters every backend reports (drive products, full
    products, reconstructed pairs); backends add their own.
    """

    def __init__(self, phi, s, *, lam, tau, steps, rectify, kind, exclude, trace, skip, allreduce, backend):
        self.lam, self.steps, self.rectify, self.kind = lam, steps, rectify, kind
        self.rate = 1.0 / tau
        self.decay = 1.0 - self.rate
        self.allreduce = allreduce
        B, M = s.shape[0], phi.shape[1]
        self.B, self.M, self.N = B, M, phi.shape[0]
        b = s @ phi                                                # (B, M) drive
        keep = None
        if exclude is not None:
            keep = torch.ones_like(b, dtype=torch.bool)
            rows = torch.nonzero(exclude >= 0).squeeze(1)
            keep[rows, exclude[rows]] = False
        drive = (b if keep is None else b.masked_fill(~keep, -math.inf if rectify else 0.0))
        drive = drive.amax(1) if rectify else drive.abs().amax(1)
        drive = allreduce(drive.clone(), "max")
        start = first_crossing_steps(drive, lam, tau, steps) if skip else torch.zeros(B, dtype=torch.long)
        self.order = torch.argsort(start, stable=True).to(s.device)
        self.start = start[self.order.cpu()]                       # sorted, on CPU
        self.first = int(self.start[0]) if B else steps            # first step any row runs
        self.started = 0                                           # rows admitted so far
        self.inverse = torch.argsort(self.order)
        self.s = s[self.order].contiguous()
        self.b = b[self.order].contiguous()
        self.keep = None if keep is None else keep[self.order].contiguous()
        self.gdiag = (phi * phi).sum(0)                            # (M,)
        self.with_energy = trace is True or trace == "energy"
        self.trace = bool(trace)
        dt, dev = b.dtype, b.device
        self.active = torch.zeros(steps, B, dtype=dt, device=dev) if trace else None
        if self.with_energy:
            self.residual = (0.5 * (self.s * self.s).sum(1)).expand(steps, B).clone()
            self.sparsity = torch.zeros(steps, B, dtype=dt, device=dev)
        self.stats = {"backend": backend, "rows": B, "first_step": self.first, "full_products": 0.0,
                      "recon_pairs": 0.0}

    # ---- rows and closed forms

    def running(self, k: int) -> int:
        """Number of rows (a prefix of the sorted batch) that can be active at step k."""
        return int(torch.searchsorted(self.start, torch.tensor([k]), right=True))

    def coef(self, k: int) -> float:
        """c_k = 1 - (1 - r)^k: u[k] = c_k b and z[k] = c_k s while nothing was active."""
        return 1.0 - self.decay ** k

    def admit(self, k: int, z: torch.Tensor) -> tuple[int, int]:
        """Rows whose first possible crossing is step k join with z[k] = c_k s (nothing was active).

        Returns (lo, n): the new rows are [lo, n), the running rows [0, n).
        """
        n = self.running(k)
        lo = self.started
        if n > lo:
            z[lo:n] = self.coef(k) * self.s[lo:n]
            self.started = n
        return lo, n

    # ---- active pairs

    def active_pairs(self, flat: torch.Tensor, u: torch.Tensor):
        """(flat indices, values) of the non-zero a among candidate (flat index, potential) pairs."""
        a = threshold(u, self.lam, self.rectify, self.kind)
        if self.keep is not None:
            a = a * self.keep.view(-1)[flat]
        nz = a != 0
        return flat[nz], a[nz]

    def danger(self, u: torch.Tensor) -> torch.Tensor:
        return (u >= self.lam) if self.rectify else (u.abs() >= self.lam)

    # ---- one step

    def record(self, k: int, n: int, rows: torch.Tensor, vals: torch.Tensor, recon: torch.Tensor | None):
        """Trace entry k - 1 (codes a[k]) for the first n rows: counts, residual, l1."""
        if not self.trace or k == 0:
            return
        counts = torch.bincount(rows, minlength=n).to(self.active.dtype)
        self.active[k - 1, :n] = self.allreduce(counts, "sum")
        if self.with_energy:
            l1 = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals.abs())
            self.sparsity[k - 1, :n] = self.lam * self.allreduce(l1, "sum")
            self.residual[k - 1, :n] = 0.5 * ((self.s[:n] - recon) ** 2).sum(1)

    def advance(self, k: int, n: int, z: torch.Tensor, v: SelfTerm, phiT: torch.Tensor,
                flat: torch.Tensor, vals: torch.Tensor, step_norm: torch.Tensor | None = None) -> bool:
        """End of step k once a[k] is known as sorted (flat index, value) pairs of the first n rows.

        Reconstruction phi a[k] (summed over dictionary shards), trace entry, and,
        unless k = K, z[k+1] = (1 - r) z[k] + r (s - phi a[k]) and v[k+1].  With
        ``step_norm`` (B,), its first n entries receive ||z[k+1] - z[k]||.
        Returns True after the last step.
        """
        last = k == self.steps
        recon = None
        if not last or self.with_energy:
            recon = self.allreduce(reconstruct(phiT, n, flat, vals, self.M), "sum")
        self.record(k, n, flat // self.M, vals, recon)
        if last:
            return True
        self.stats["recon_pairs"] += flat.numel()
        z_new = self.decay * z[:n] + self.rate * (self.s[:n] - recon)
        if step_norm is not None:
            step_norm[:n] = (z_new - z[:n]).norm(dim=1)
        z[:n] = z_new
        v.add(k, flat, vals, self.rate)
        return False

    # ---- results

    def codes_from(self, flat: torch.Tensor | None, vals: torch.Tensor | None) -> torch.Tensor:
        """(B, M) codes (sorted row order) from the final active (flat index, value) pairs (None: none)."""
        codes = torch.zeros(self.B, self.M, dtype=self.b.dtype, device=self.b.device)
        if flat is not None and flat.numel():
            codes.view(-1)[flat] = vals
        return codes

    def final_potentials(self, running: torch.Tensor | None) -> torch.Tensor:
        """u[K] (sorted rows): ``running`` (n, M) for the rows that ran, c_K b for rows that never started."""
        pot = self.coef(self.steps) * self.b.clone()
        if running is not None and running.shape[0]:
            pot[: running.shape[0]] = running
        if self.keep is None:  # the reference zeroes b of an excluded atom: remove its drive c_K b
            return pot
        return torch.where(self.keep, pot, pot - self.coef(self.steps) * self.b)

    def finish(self, codes_sorted, u_sorted, flops: float, **flops_parts) -> LCATrace:
        """LCATrace in the caller's row order; ``flops`` (and e.g. flops_bf16=...) go into the stats."""
        stats = self.stats
        stats["flops"] = float(flops)
        stats.update({key: float(val) for key, val in flops_parts.items()})
        skipped = min(self.first, self.steps)
        inv = self.inverse
        codes = codes_sorted[inv]
        u = None if u_sorted is None else u_sorted[inv]
        if not self.trace:
            return LCATrace(codes, u, skipped_steps=skipped, stats=stats)
        active = self.active[:, inv]
        if not self.with_energy:
            return LCATrace(codes, u, active, skipped_steps=skipped, stats=stats)
        res, l1 = self.residual[:, inv], self.sparsity[:, inv]
        return LCATrace(codes, u, active, res + l1, res, l1, skipped, stats)

    def base_flops(self) -> float:
        """Drive b = s phi for every row, full (N x M) products and reconstructions phi a counted so far."""
        N, M = self.N, self.M
        return (product_flops(self.B, N, M) + product_flops(self.stats["full_products"], N, M)
                + 2.0 * N * self.stats["recon_pairs"])
