"""LCA dynamics (SPEC Eq. 2), as pure functions.

Shapes: dictionary ``phi`` is (N, M) with one atom per column, inputs ``s`` are
(B, N), codes are (B, M).  With ``b = s phi`` and ``G = phi^T phi``::

    u[0] = 0
    u[k+1] = u[k] + (1/tau) (b - u[k] - (G - diag(G)) a[k])
    a[k]   = T_lambda(u[k])                                  k = 0 .. K-1

and the returned code is a[K] = T_lambda(u[K]).  Three thresholds:
"soft" (rectified: max(u - lam, 0), the authors' code and the default),
"soft" with ``rectify=False`` (u - lam sign(u) where |u| >= lam) and "hard"
(u where u >= lam, or |u| >= lam when not rectified).

Three exact formulations (all return the same a[K] up to float round-off):

* ``lca_gramian``: the recursion above with the dense M x M Gramian, as in the
  authors' code (the reference; no step skipping).
* ``lca_factored``: the N-dimensional state view.  With r = 1/tau and
  z[k+1] = (1 - r) z[k] + r (s - phi a[k]),  v[k+1] = (1 - r) v[k] + r a[k]
  (z[0] = 0, v[0] = 0), linearity gives exactly

      u[k] = phi^T z[k] + diag(G) * v[k]

  so one (B, N) x (N, M) product per step gives every potential; phi a[k]
  touches the active atoms only; v is non-zero on ever-active atoms only.
  Rows are started at their own first possible crossing step: while a = 0,
  u[k] = (1 - (1 - r)^k) b, so the steps before are skipped exactly per sample.
* ``lca_active``: event-driven / active-set form with safe screening.  After
  an exact refresh p = u[k0] (one full product), for every later step

      u_i[k] <= p_i + phi_i^T (z[k] - z[k0])     (atoms silent since k0)

  and phi_i^T dz is split exactly along a small orthonormal basis (top
  singular vectors of phi plus the input direction) with a Cauchy-Schwarz
  bound on the remainder.  Atoms whose bound stays below lam are provably
  silent; only the others ("tracked" pairs) are computed exactly, by sampled
  dot products phi_i^T z.  Work per step is proportional to the tracked
  (active and near-threshold) atoms; a full refresh happens only when the
  tracked set grows too large.  Exact, not approximate.
"""
from __future__ import annotations

import math
import warnings
import weakref
from typing import Callable, NamedTuple

import torch

THRESHOLDS = ("soft", "hard")

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class LCATrace(NamedTuple):
    """Final codes and optional per-step traces (step k = 1..K, after the update)."""

    codes: torch.Tensor                    # (B, M)
    potentials: torch.Tensor | None        # (B, M) u[K]  (None when not requested)
    active: torch.Tensor | None = None     # (K, B) number of non-zero a[k]
    energy: torch.Tensor | None = None     # (K, B) 1/2 ||s - phi a||^2 + lam ||a||_1
    residual: torch.Tensor | None = None   # (K, B) 1/2 ||s - phi a||^2
    sparsity: torch.Tensor | None = None   # (K, B) lam ||a||_1
    skipped_steps: int = 0                 # steps skipped for every row (min over rows)
    stats: dict | None = None              # work counters of the backend (products, tracked pairs ...)

# ``trace`` argument of the dynamics: False (codes only), "active" (active counts per
# step, nearly free) or "energy" / True (also E and its two terms).

# ``allreduce(tensor, op)`` hook: identity in one process; sums (op "sum") or maxima
# (op "max") a tensor over the ranks that hold the other slices of the dictionary
# (spikevit.lca.distributed).  Every rank then sees the same z, hence the same dynamics.
AllReduce = Callable[[torch.Tensor, str], torch.Tensor]


def _no_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
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


# --------------------------------------------------------------------------- reference


def lca_gramian(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                rectify: bool = True, kind: str = "soft", gram: torch.Tensor | None = None,
                exclude: torch.Tensor | None = None, trace: bool = False, potentials: bool = True) -> LCATrace:
    """Reference dynamics with the dense M x M Gramian (authors' formulation, every step, no skipping)."""
    if gram is None:
        gram = phi.T @ phi
    gdiag = torch.diagonal(gram)

    def inhibition(a):
        return a @ gram - a * gdiag

    return _run(phi, s, inhibition, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind,
                exclude=exclude, trace=trace, skip=False)


def _run(phi, s, inhibition, *, lam, tau, steps, rectify, kind, exclude, trace, skip) -> LCATrace:
    b = s @ phi                                                    # (B, M)
    keep = None
    if exclude is not None:  # per-sample atom that must stay silent (leave-one-out coding)
        keep = torch.ones_like(b, dtype=torch.bool)
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        keep[rows, exclude[rows]] = False
        b = b * keep
    with_energy = trace is True or trace == "energy"
    k0 = first_crossing_step(b, lam, tau, rectify, steps) if skip else 0
    rate = 1.0 / tau
    u = (1.0 - (1.0 - rate) ** k0) * b if k0 else torch.zeros_like(b)
    actives, res_terms, l1_terms = [], [], []
    if trace and k0:
        zeros = torch.zeros(k0, b.shape[0], dtype=b.dtype, device=b.device)
        actives.append(zeros.clone())
        if with_energy:
            res_terms.append(0.5 * (s * s).sum(1).expand(k0, -1).clone())
            l1_terms.append(zeros)
    for _ in range(k0, steps):
        a = threshold(u, lam, rectify, kind)
        if keep is not None:
            a = a * keep
        u = u + rate * (b - u - inhibition(a))
        if trace:
            a_new = threshold(u, lam, rectify, kind)
            if keep is not None:
                a_new = a_new * keep
            actives.append((a_new != 0).sum(1, keepdim=True).T.to(b.dtype))
            if with_energy:
                recon = a_new @ phi.T
                res_terms.append((0.5 * ((s - recon) ** 2).sum(1))[None])
                l1_terms.append((lam * a_new.abs().sum(1))[None])
    codes = threshold(u, lam, rectify, kind)
    if keep is not None:
        codes = codes * keep
    stats = {"full_products": float(steps - k0) * b.shape[0], "backend": "gramian"}
    if not trace:
        return LCATrace(codes, u, skipped_steps=k0, stats=stats)
    active = torch.cat(actives) if actives else b.new_zeros(0, b.shape[0])
    if not with_energy:
        return LCATrace(codes, u, active, skipped_steps=k0, stats=stats)
    residual = torch.cat(res_terms) if res_terms else b.new_zeros(0, b.shape[0])
    sparsity = torch.cat(l1_terms) if l1_terms else b.new_zeros(0, b.shape[0])
    return LCATrace(codes, u, active, residual + sparsity, residual, sparsity, k0, stats)


# --------------------------------------------------------------------------- shared state


class _Problem:
    """Everything both N-space backends share: drives, row start steps, exclusion, traces.

    Rows are processed in order of their first possible crossing step, so the
    rows running at step k are a prefix ``[0, n_k)`` of the sorted batch.
    """

    def __init__(self, phi, s, *, lam, tau, steps, rectify, kind, exclude, trace, skip, allreduce):
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

    def running(self, k: int) -> int:
        """Number of rows (a prefix of the sorted batch) that can be active at step k."""
        return int(torch.searchsorted(self.start, torch.tensor([k]), right=True))

    def coef(self, k: int) -> float:
        """c_k = 1 - (1 - r)^k: u[k] = c_k b and z[k] = c_k s while nothing was active."""
        return 1.0 - self.decay ** k

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

    def active_pairs(self, flat: torch.Tensor, u: torch.Tensor):
        """(flat indices, values) of the non-zero a among candidate (flat index, potential) pairs."""
        a = threshold(u, self.lam, self.rectify, self.kind)
        if self.keep is not None:
            a = a * self.keep.view(-1)[flat]
        nz = a != 0
        return flat[nz], a[nz]

    def danger(self, u: torch.Tensor) -> torch.Tensor:
        return (u >= self.lam) if self.rectify else (u.abs() >= self.lam)

    def codes_from(self, flat: torch.Tensor | None, vals: torch.Tensor | None) -> torch.Tensor:
        """(B, M) codes (sorted row order) from the final active (flat index, value) pairs (None: none)."""
        codes = torch.zeros(self.B, self.M, dtype=self.b.dtype, device=self.b.device)
        if flat is not None and flat.numel():
            codes.view(-1)[flat] = vals
        return codes

    def without_excluded_drive(self, pot: torch.Tensor, steps: int) -> torch.Tensor:
        """The reference zeroes b of an excluded atom: remove its drive c_K b from the potentials u[K]."""
        if self.keep is None:
            return pot
        return torch.where(self.keep, pot, pot - self.coef(steps) * self.b)

    def finish(self, codes_sorted, u_sorted, skipped, stats) -> LCATrace:
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


def _reconstruct(phiT: torch.Tensor, n: int, flat: torch.Tensor, vals: torch.Tensor, M: int) -> torch.Tensor:
    """(n, N) phi a for the active (sorted flat index, value) pairs: work proportional to the active atoms."""
    if flat.numel() == 0:
        return torch.zeros(n, phiT.shape[1], dtype=phiT.dtype, device=phiT.device)
    return torch.sparse.mm(_csr(flat, vals, n, M), phiT)   # CSR: ~2x the COO product's speed on CPU


class _SelfTerm:
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


# --------------------------------------------------------------------------- factored


def lca_factored(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                 rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                 trace: bool = False, skip: bool = True, matmul_dtype: torch.dtype | None = None,
                 potentials: bool = True, allreduce: AllReduce = _no_reduce) -> LCATrace:
    """N-space dynamics: u[k] = phi^T z[k] + diag(G) v[k], one (B, N) x (N, M) product per step.

    ``skip`` starts each row at its own first possible crossing (exact);
    ``matmul_dtype`` (e.g. torch.bfloat16) runs the big product in low
    precision with float32 state (opt-in, not exact: its error is reported by
    the benchmark).  ``allreduce`` sums phi a over dictionary shards.
    """
    P = _Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                 trace=trace, skip=skip, allreduce=allreduce)
    B, M, N = P.B, P.M, P.N
    phiT = phi.T.contiguous()
    phi_mm = phi if matmul_dtype is None else phi.to(matmul_dtype)
    z = torch.zeros(B, N, dtype=s.dtype, device=s.device)
    v = _SelfTerm(B, M, P.decay, s)
    products = 0
    first = int(P.start[0]) if B else steps
    n_prev = 0
    u = None
    for k in range(first, steps + 1):
        n = P.running(k)
        if n > n_prev:  # rows starting now: closed form z[k] = c_k s (nothing was active)
            z[n_prev:n] = P.coef(k) * P.s[n_prev:n]
            n_prev = n
        if matmul_dtype is None:
            u = z[:n] @ phi
        else:
            u = (z[:n].to(matmul_dtype) @ phi_mm).to(s.dtype)
        products += n
        ever = v.ever
        if ever.numel():
            u.view(-1).index_add_(0, ever, P.gdiag[ever % M] * v.at(k, ever))
        cand = torch.nonzero(P.danger(u).view(-1)).squeeze(1)
        flat, vals = P.active_pairs(cand, u.view(-1)[cand])
        recon = None
        if k < steps or P.with_energy:
            recon = allreduce(_reconstruct(phiT, n, flat, vals, M), "sum")
        P.record(k, n, flat // M, vals, recon)
        if k == steps:
            break
        z[:n] = P.decay * z[:n] + P.rate * (P.s[:n] - recon)
        v.add(k, flat, vals, P.rate)
    n = P.running(steps)
    ran = first <= steps and n                                     # flat / vals exist only if the loop ran
    codes = P.codes_from(flat, vals) if ran else P.codes_from(None, None)
    pot = None
    if potentials:
        pot = P.coef(steps) * P.b.clone()
        if u is not None and n:
            pot[:n] = u
        pot = P.without_excluded_drive(pot, steps)
    stats = {"backend": "factored", "full_products": float(products), "rows": B, "first_step": first}
    return P.finish(codes, pot, min(first, steps), stats)


# --------------------------------------------------------------------------- active set + screening

_BASIS_CACHE: list = []   # [(weakref to phi, version, shape, d, (V, PT, rho, norms, phiT))]


def screening_basis(phi: torch.Tensor, d: int = 32, seed: int = 0):
    """Orthonormal (N, d) basis V of phi's top singular directions and the per-atom pieces of the bound.

    Returns (V, PT (M, d) = (V^T phi)^T, rho (M,) = ||phi_i - V V^T phi_i||, norms (M,), phiT (M, N)).
    Cached per dictionary tensor (identity + version), so streaming batches reuse it.
    """
    for ref, version, shape, dd, value in _BASIS_CACHE:
        if ref() is phi and version == phi._version and shape == tuple(phi.shape) and dd == d:
            return value
    N, M = phi.shape
    d = max(0, min(d, N, M))
    phiT = phi.T.contiguous()
    if d:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            U = torch.svd_lowrank(phi, q=min(d + 8, N, M), niter=2)[0][:, :d]
        finally:
            torch.random.set_rng_state(state)
        V = torch.linalg.qr(U)[0].contiguous()
    else:
        V = phi.new_zeros(N, 0)
    PT = (phiT @ V).contiguous()                                   # (M, d)
    rho = (phi - V @ PT.T).norm(dim=0)                             # (M,) norm outside span(V)
    norms = phi.norm(dim=0)
    value = (V, PT, rho, norms, phiT)
    _BASIS_CACHE[:] = [e for e in _BASIS_CACHE if e[0]() is not None][-1:]
    _BASIS_CACHE.append((weakref.ref(phi), phi._version, tuple(phi.shape), d, value))
    return value


def _csr(flat: torch.Tensor, vals: torch.Tensor, n: int, M: int) -> torch.Tensor:
    rows = flat // M
    crow = torch.zeros(n + 1, dtype=torch.long, device=flat.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return torch.sparse_csr_tensor(crow, flat % M, vals, (n, M), check_invariants=False)


def _sampled_dots(z: torch.Tensor, phiT: torch.Tensor, flat: torch.Tensor, init: torch.Tensor, M: int):
    """init + (z @ phi) at the sorted flat (row * M + atom) indices, reading only those atoms."""
    if flat.numel() == 0:
        return init
    out = torch.sparse.sampled_addmm(_csr(flat, init, z.shape[0], M), z, phiT.T)
    return out.values()


def _merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if b.numel() == 0:
        return a
    return torch.unique(torch.cat([a, b]))


def lca_active(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
               rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
               trace: bool = False, skip: bool = True, basis_dim: int = 32, refresh_fraction: float = 0.01,
               near_fraction: float = 0.05, test_every: float = 8.0, potentials: bool = True,
               allreduce: AllReduce = _no_reduce) -> LCATrace:
    """Event-driven exact LCA: safe screening + exact updates of tracked (possibly active) atoms only.

    Per row, after a refresh at step k0 (p = u[k0] exact for every atom), an
    atom that stayed silent since k0 obeys, for dz = z[k] - z[k0],

        u_i[k] <= p_i + gamma b_i + c' . (V^T phi_i) + rho_i ||res|| + tol

    (dz = V c + s_perp gamma' + res with V the screening basis, s_perp the
    input direction outside it; the self term diag(G) v only decays while
    silent).  Atoms whose bound reaches lam join the row's tracked set and are
    computed exactly (phi_i^T z + diag(G)_i v_i) from then on; the others are
    provably silent.  The bound is evaluated on every atom only every few
    steps ("full test", when the drift since the last one could close the
    margin ``D``), and on the atoms within ``D`` of lam in between.
    A row is refreshed (one full product) when its tracked set exceeds
    ``refresh_fraction`` * M.  Returns the same codes as the dense reference.
    """
    P = _Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                 trace=trace, skip=skip, allreduce=allreduce)
    B, M, N = P.B, P.M, P.N
    dev, dt = s.device, s.dtype
    V, PT, rho, norms, phiT = screening_basis(phi, basis_dim)
    d = V.shape[1]
    maxnorm = float(norms.max())
    eps = torch.finfo(dt).eps
    lam = float(lam)
    # per-row pieces of the input direction outside span(V): s = V sigma + eta s_perp
    sigma = P.s @ V                                                # (B, d)
    s_perp = P.s - sigma @ V.T
    eta = s_perp.norm(dim=1)
    s_norm = P.s.norm(dim=1)
    use_s = eta > 1e-6 * s_norm.clamp_min(1e-30)
    s_perp = torch.where(use_s[:, None], s_perp / eta.clamp_min(1e-30)[:, None], torch.zeros_like(s_perp))
    eta_safe = torch.where(use_s, eta, torch.ones_like(eta))
    PextT = torch.cat([PT, rho[:, None]], 1).contiguous()           # (M, d + 1): [V^T phi, rho] per atom
    Pext = PextT.T.contiguous()                                    # (d + 1, M)
    excluded = None if P.keep is None else ~P.keep

    z = torch.zeros(B, N, dtype=dt, device=dev)
    z0 = torch.zeros_like(z)                                       # z at the row's last refresh
    zt = torch.zeros_like(z)                                       # z at the row's last full test
    p_hi = torch.zeros(B, M, dtype=dt, device=dev)                 # u[k0] (+ self-term bound)
    p_lo = None if rectify else torch.zeros_like(p_hi)
    gv0max = torch.zeros(B, dtype=dt, device=dev)                  # max |diag(G) v[k0]| per row
    z0norm = torch.zeros(B, dtype=dt, device=dev)
    margin_D = torch.zeros(B, dtype=dt, device=dev)                # far atoms safe while drift < D
    need_full = torch.ones(B, dtype=torch.bool, device=dev)
    v = _SelfTerm(B, M, P.decay, s, keep_ever=False)
    tracked = torch.zeros(0, dtype=torch.long, device=dev)         # sorted flat indices row * M + atom
    near = None                                                    # dict of per-pair arrays
    stats = {"backend": "active", "full_products": 0.0, "full_tests": 0.0, "near_tests": 0.0,
             "tracked_pair_steps": 0.0, "active_pair_steps": 0.0, "refreshes": 0.0, "rows": B}
    first = int(P.start[0]) if B else steps
    n_prev = 0
    last_step_drift = torch.zeros(B, dtype=dt, device=dev)
    flat = torch.zeros(0, dtype=torch.long, device=dev)
    vals = torch.zeros(0, dtype=dt, device=dev)
    refresh_cap = max(64, int(refresh_fraction * M))
    near_cap = max(256, int(near_fraction * M))
    for k in range(first, steps + 1):
        n = P.running(k)
        if n > n_prev:  # rows starting now: z = c_k s, u = c_k b exactly; reference point here
            c = P.coef(k)
            z[n_prev:n] = c * P.s[n_prev:n]
            z0[n_prev:n] = z[n_prev:n]
            p_hi[n_prev:n] = c * P.b[n_prev:n]
            if p_lo is not None:
                p_lo[n_prev:n] = p_hi[n_prev:n]
            z0norm[n_prev:n] = z[n_prev:n].norm(dim=1)
            last_step_drift[n_prev:n] = P.rate * (1.0 - c) * s_norm[n_prev:n]  # next step's |dz| while silent
            need_full[n_prev:n] = True
            n_prev = n
        # ---- refresh rows whose tracked set grew too large: exact p = u[k] for every atom
        if tracked.numel():  # tracked pairs that are silent now are what a refresh removes
            silent = torch.bincount(tracked // M, minlength=n) - torch.bincount(flat // M, minlength=n)
            redo = torch.nonzero(silent > refresh_cap).squeeze(1)
            if redo.numel():
                zr = z[redo]
                p = zr @ phi
                gv = v.rows(k, redo) * P.gdiag
                p_hi[redo] = p + gv.clamp_min(0)
                if p_lo is not None:
                    p_lo[redo] = p + gv.clamp_max(0)
                gv0max[redo] = gv.abs().amax(1)
                z0[redo] = zr
                z0norm[redo] = zr.norm(dim=1)
                need_full[redo] = True
                drop = torch.zeros(n, dtype=torch.bool, device=dev)
                drop[redo] = True
                tracked = tracked[~drop[tracked // M]]
                stats["full_products"] += redo.numel()
                stats["refreshes"] += redo.numel()
        # ---- screening quantities per row: dz = V c + s_perp gamma' + res
        dz = z[:n] - z0[:n]
        c = dz @ V                                                 # (n, d)
        g1 = (dz * s_perp[:n]).sum(1)                              # gamma'
        res = dz - c @ V.T - g1[:, None] * s_perp[:n]
        e = res.norm(dim=1)
        gamma = g1 / eta_safe[:n]
        cprime = c - gamma[:, None] * sigma[:n]
        tol = 64 * eps * (maxnorm * (z0norm[:n] + dz.norm(dim=1) + s_norm[:n]) + gv0max[:n] + abs(lam))
        drift = maxnorm * (z[:n] - zt[:n]).norm(dim=1)
        full_rows = torch.nonzero(need_full[:n] | (drift + tol >= margin_D[:n])).squeeze(1)
        new_pairs = []
        if full_rows.numel():  # bound on every atom of these rows
            F = full_rows
            every = F.numel() == n
            pick = (lambda x: x[:n]) if every else (lambda x: x.index_select(0, F))
            coeff = torch.cat([cprime[F], e[F, None]], 1)
            b_F = pick(P.b)
            # margin lam - hi, hi = p + gamma b + c'.V^T phi + e rho + tol  (upper bound of u)
            marg = torch.addmm(torch.addcmul(pick(p_hi), gamma[F, None], b_F).add_(tol[F, None] - lam),
                               coeff, Pext).neg_()
            if p_lo is not None:
                lo = torch.addmm(torch.addcmul(pick(p_lo), gamma[F, None], b_F).sub_(tol[F, None] - lam),
                                 torch.cat([cprime[F], -e[F, None]], 1), Pext)
                marg = torch.minimum(marg, lo)
            if excluded is not None:
                marg = marg.masked_fill(excluded[F], math.inf)
            hit = torch.nonzero(marg <= 0)
            new_pairs.append(F[hit[:, 0]] * M + hit[:, 1])
            # margin D: what the drift may eat before the next full test
            want = test_every * maxnorm * last_step_drift[F] + 2 * tol[F]
            cnt = (marg < want[:, None]).sum(1)
            over = torch.nonzero(cnt > near_cap).squeeze(1)
            if over.numel():
                want[over] = torch.kthvalue(marg[over], near_cap, dim=1).values
            nz = torch.nonzero((marg < want[:, None]) & (marg > 0))
            rows_n = F[nz[:, 0]]
            cols_n = nz[:, 1]
            idx_n = rows_n * M + cols_n
            keep_old = None
            if near is not None:
                in_f = torch.zeros(n, dtype=torch.bool, device=dev)
                in_f[F] = True
                keep_old = ~in_f[near["rows"]]
            fresh = {"rows": rows_n, "idx": idx_n, "p_hi": p_hi.view(-1).index_select(0, idx_n),
                     "b": P.b.view(-1).index_select(0, idx_n), "P": PextT.index_select(0, cols_n)}
            if p_lo is not None:
                fresh["p_lo"] = p_lo.view(-1).index_select(0, idx_n)
            near = fresh if near is None else {key: torch.cat([near[key][keep_old], fresh[key]]) for key in near}
            margin_D[F] = want
            zt[F] = z[F]
            need_full[F] = False
            stats["full_tests"] += F.numel()
        if near is not None and near["rows"].numel():  # bound on the atoms within D of lam
            r_ = near["rows"]
            coeff = torch.cat([cprime, e[:, None]], 1).index_select(0, r_)
            shift = near["p_hi"] + gamma.index_select(0, r_) * near["b"]
            proj = (coeff[:, :d] * near["P"][:, :d]).sum(1)
            slack = coeff[:, d] * near["P"][:, d] + tol.index_select(0, r_)
            bad = shift + proj + slack >= lam
            if p_lo is not None:
                lo_shift = near["p_lo"] + gamma.index_select(0, r_) * near["b"]
                bad |= lo_shift + proj - slack <= -lam
            new_pairs.append(near["idx"][bad])
            stats["near_tests"] += r_.numel()
        if new_pairs:
            tracked = _merge(tracked, torch.cat(new_pairs))
        # ---- exact potentials of tracked pairs, a[k], reconstruction
        if tracked.numel():
            u_t = _sampled_dots(z[:n], phiT, tracked, P.gdiag[tracked % M] * v.at(k, tracked), M)
            flat, vals = P.active_pairs(tracked, u_t)
        else:
            flat = tracked
            vals = torch.zeros(0, dtype=dt, device=dev)
        stats["tracked_pair_steps"] += tracked.numel()
        stats["active_pair_steps"] += flat.numel()
        recon = None
        if k < steps or P.with_energy:
            recon = allreduce(_reconstruct(phiT, n, flat, vals, M), "sum")
        P.record(k, n, flat // M, vals, recon)
        if k == steps:
            break
        z_new = P.decay * z[:n] + P.rate * (P.s[:n] - recon)
        last_step_drift[:n] = (z_new - z[:n]).norm(dim=1)
        z[:n] = z_new
        v.add(k, flat, vals, P.rate)
    codes = P.codes_from(flat if first <= steps else None, vals)
    pot = None
    if potentials:
        n = P.running(steps)
        pot = P.coef(steps) * P.b.clone()
        if n and first <= steps:
            pot[:n] = z[:n] @ phi + v.dense(steps, n, M) * P.gdiag
            stats["full_products"] += n
        pot = P.without_excluded_drive(pot, steps)
    stats["first_step"] = first
    return P.finish(codes, pot, min(first, steps), stats)
