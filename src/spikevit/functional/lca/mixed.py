"""``lca_mixed``: exact LCA whose big product runs in bfloat16, with a proven error bound.

Same dynamics and N-space state as :func:`spikevit.functional.lca.factored.lca_factored`
(u[k] = phi^T z[k] + diag(G) v[k]).  The factored form needs u for *every*
atom at every step only to find the atoms that are (or become) active; the
value of u matters only for those.  So each row keeps a reference
``z_ref = z[k0]`` whose potentials ``U = phi^T z_ref`` were computed exactly
(float32) at its last *refresh*, and at later steps the increment
``phi^T (z[k] - z_ref)`` is formed by one bfloat16 product ``P`` (float32
accumulation, bfloat16 output; 5-6x the float32 rate on the AMX CPU of
benchmarks/lca_encode.py).  Rounding analysis with unit roundoff
``eps = 2^-8`` of bfloat16, for an atom i and D = z[k] - z_ref::

    |phi_i^T D - P_i| <= c1 ||phi_i|| ||D|| + c2 |P_i|
    c1 = 2 eps + eps^2 + gamma_N (1 + eps)^2,   c2 = eps / (1 - eps),   gamma_N = N 2^-24 / (1 - N 2^-24)

(both factors rounded to bfloat16, products summed in float32, the sum rounded
once to bfloat16); the code uses ``safety`` (default 2) times these constants.
An atom silent since the refresh has self term diag(G)_i v_i[k] <= diag(G)_i v_i[k0]
(v >= 0 decays while it is silent), so with the margin m_i = lam - U_i - diag(G)_i v_i[k0]
it can only cross lam when

    P_i (1 + c2) >= m_i - E,      E >= c1 max_i ||phi_i|| ||D||   (the row's budget)

Atoms within E of lam at the refresh, atoms that passed the screen and atoms
active since the refresh are *tracked*: computed exactly every step (float32 CSR
sampled dot products phi_i^T z) and left out of the screen (threshold +inf).
Every other atom is screened by one comparison of ``P`` with a per-(row, atom)
bfloat16 threshold (rounded down, so the test stays conservative).  A row whose
||D|| would exceed the budget is refreshed (one float32 product for that row; rows
half-way through their budget join it).  Rows start with a free refresh: while
nothing is active u[k] = c_k b.

The codes are therefore the factored form's codes (float32 round-off), not an
approximation: no atom whose bound stays below lam can be active, and every
other atom is computed in float32.  Thresholds: rectified "soft"/"hard" (the
default, the authors' choice); ``rectify=False`` falls back to the factored form.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from spikevit.errors import SpikevitError
from spikevit.functional.lca.core import (AllReduce, LCATrace, Problem, SelfTerm, no_reduce, product_flops,
                                          sampled_dots)
from spikevit.functional.lca.factored import lca_factored
from spikevit.functional.lca.protocol import lca_backend

# unit roundoff of the screening formats (round to nearest even)
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8}


def bf16_product_bound(n: int, unit: float = 2.0 ** -8, safety: float = 2.0) -> tuple[float, float]:
    """(c1, c2) with |phi^T D - lowp(phi)^T lowp(D)| <= c1 ||phi|| ||D|| + c2 |P| (see module docstring)."""
    g = n * 2.0 ** -24
    gamma = g / (1.0 - g)
    c1 = 2 * unit + unit * unit + gamma * (1 + unit) ** 2
    c2 = unit / (1 - unit)
    return safety * c1, safety * c2


def round_down(x: torch.Tensor, dtype: torch.dtype, unit: float) -> torch.Tensor:
    """A ``dtype`` tensor y with y <= x elementwise (x float32; -inf stays -inf).

    Nudging x down by 2 unit |x| before round-to-nearest keeps the result below x:
    RN(x - 2u|x|) <= (x - 2u|x|)(1 + u) < x for x > 0, and symmetrically for x < 0.
    Values below the smallest normal of ``dtype`` are pushed down by its smallest normal.
    """
    tiny = torch.finfo(dtype).tiny
    y = x - (2 * unit) * x.abs() - tiny
    return y.to(dtype)


_KERNEL_CHECKS: dict = {}


def screening_kernel_ok(n: int, device: torch.device, screen_dtype: torch.dtype = torch.bfloat16) -> bool:
    """Check once per (device, N, dtype) that this machine's low-precision product obeys the bound.

    The bound assumes float32 accumulation inside the kernel (true for AVX512-BF16, AMX and tensor
    cores).  A 64 x 512 product of random data is compared with float64; a kernel that violates the
    bound (with the proven constants, safety 1) makes :func:`lca_mixed` fall back to the factored form.
    """
    key = (str(device), int(n), screen_dtype)
    if key not in _KERNEL_CHECKS:
        g = torch.Generator().manual_seed(1234)
        phiT = torch.randn(512, n, generator=g)
        D = torch.randn(64, n, generator=g) * torch.rand(64, 1, generator=g)
        P = F.linear(D.to(device, screen_dtype), phiT.to(device, screen_dtype)).double().cpu()
        exact = D.double() @ phiT.double().T
        c1, c2 = bf16_product_bound(n, UNIT_ROUNDOFF[screen_dtype], safety=1.0)
        bound = c1 * D.double().norm(dim=1, keepdim=True) * phiT.double().norm(dim=1) + c2 * P.abs()
        _KERNEL_CHECKS[key] = bool(((exact - P).abs() <= bound).all())
    return _KERNEL_CHECKS[key]


class _Screen:
    """Per-row reference points z_ref, bfloat16 screening thresholds and the tracked (exact) pairs.

    One step = :meth:`due` (rows whose error budget is used up get a float32
    refresh), then three sources of candidate pairs -- :meth:`tracked` (exact dot
    products), :meth:`refresh` (exact full rows) and :meth:`screen` (the bfloat16
    product on the other rows) -- merged by :meth:`step`.
    """

    def __init__(self, P: Problem, phi: torch.Tensor, screen_dtype: torch.dtype, budget: float, safety: float,
                 refresh_share: float):
        B, M, N = P.B, P.M, P.N
        dev, dt = P.s.device, P.s.dtype
        self.P, self.phi, self.dt, self.screen_dtype = P, phi, dt, screen_dtype
        self.unit = UNIT_ROUNDOFF[screen_dtype]
        self.c1, self.c2 = bf16_product_bound(N, self.unit, safety)
        self.norm_max = float(P.allreduce(P.gdiag.max().sqrt().reshape(1).clone(), "max")) if M else 0.0
        self.E = budget * P.lam
        self.refresh_share = refresh_share
        self.phiT = phi.T.contiguous()                             # (M, N) rows for gathers
        self.phi_lo = self.phiT.to(screen_dtype)                   # (M, N): F.linear reads it ~1.4x faster
        self.z_ref = torch.zeros(B, N, dtype=dt, device=dev)
        # screening thresholds; +inf for tracked atoms (computed exactly) and excluded ones
        self.thr = torch.full((B, M), math.inf, dtype=screen_dtype, device=dev)
        self.pos_inf = torch.tensor(math.inf, dtype=screen_dtype, device=dev)
        self.track = torch.zeros(0, dtype=torch.long, device=dev)  # sorted flat (row * M + atom) tracked pairs
        self.any_active = False                                    # v is zero until the first activation
        self.excluded = None if P.keep is None else ~P.keep
        self.fresh = torch.zeros(B, dtype=torch.bool, device=dev)  # rows whose z was just set in closed form
        P.stats.update({"screen_products": 0.0, "tracked_pairs": 0.0, "screen_hits": 0.0, "refreshes": 0.0,
                        "active_pair_steps": 0.0})

    def due(self, n: int, z: torch.Tensor):
        """(rows to refresh (n,) bool, D = z - z_ref (n, N)): new rows, and rows whose budget is used up."""
        D_all = z[:n] - self.z_ref[:n]
        usage = (self.c1 * self.norm_max / self.E) * D_all.norm(dim=1)  # share of the row's error budget in use
        refresh = self.fresh[:n] | (usage > 1.0)
        if bool((refresh & ~self.fresh[:n]).any()):  # a float32 product is due: take rows that are half-way too
            refresh |= usage > self.refresh_share
        return refresh, D_all

    def _exact(self, k: int, n: int, z: torch.Tensor, v: SelfTerm, flat: torch.Tensor,
               atoms: torch.Tensor) -> torch.Tensor:
        """Exact float32 potentials at the flat pairs (``atoms`` = flat % M): phi_i^T z + diag(G)_i v_i."""
        u = sampled_dots(z[:n], self.phiT, flat, torch.zeros(flat.numel(), dtype=self.dt, device=flat.device),
                         self.P.M)
        if self.any_active:
            u = u + self.P.gdiag[atoms] * v.at(k, flat)
        return u

    def tracked(self, k: int, n: int, z: torch.Tensor, v: SelfTerm, refresh: torch.Tensor, n_ref: int):
        """Tracked atoms of rows that are not refreshed: exact float32 dot products at those pairs only."""
        M = self.P.M
        if n_ref:
            self.track = self.track[~refresh[self.track // M]]
        if not self.track.numel():
            return None
        t_u = self._exact(k, n, z, v, self.track, self.track % M)
        self.P.stats["tracked_pairs"] += float(self.track.numel())
        return self.P.active_pairs(self.track, t_u)

    def refresh(self, k: int, z: torch.Tensor, v: SelfTerm, refresh: torch.Tensor):
        """Refreshed rows: every potential exact (free for starting rows), new reference and thresholds."""
        P, M, E, lam = self.P, self.P.M, self.E, self.P.lam
        ref_rows = torch.nonzero(refresh).squeeze(1)
        new_rows = self.fresh[ref_rows]
        old = ref_rows[~new_rows]
        u_full = P.coef(k) * P.b[ref_rows]
        if old.numel():
            u_full[~new_rows] = z[old] @ self.phi
            P.stats["full_products"] += float(old.numel())
            P.stats["refreshes"] += float(old.numel())
        if self.any_active:
            u_full = u_full + P.gdiag * v.rows(k, ref_rows)
        self.fresh[ref_rows] = False
        margin = lam - u_full
        t = round_down((margin - E) / (1.0 + self.c2), self.screen_dtype, self.unit)
        near = margin <= E                                         # includes the active atoms
        t = t.masked_fill(near, math.inf)
        if self.excluded is not None:
            t = t.masked_fill(self.excluded[ref_rows], math.inf)
        self.thr[ref_rows] = t
        self.z_ref[ref_rows] = z[ref_rows]
        hit = torch.nonzero(near)
        f0 = ref_rows[hit[:, 0]] * M + hit[:, 1]
        self.track = torch.cat([self.track, f0])
        return P.active_pairs(f0, u_full[hit[:, 0], hit[:, 1]])

    def screen(self, k: int, n: int, z: torch.Tensor, v: SelfTerm, refresh: torch.Tensor, n_ref: int,
               D_all: torch.Tensor):
        """The other atoms of the other rows: one low-precision product against the thresholds."""
        P, M = self.P, self.P.M
        whole = n_ref == 0                                         # plain slices, no copies
        rows = None if whole else torch.nonzero(~refresh).squeeze(1)
        D = D_all if whole else D_all[rows]
        Pm = F.linear(D.to(self.screen_dtype), self.phi_lo)        # (|S|, M) low-precision increment
        P.stats["screen_products"] += float(Pm.shape[0])
        hit = torch.nonzero(Pm >= (self.thr[:n] if whole else self.thr[rows]))
        if not hit.numel():
            return None
        rows_c = hit[:, 0] if whole else rows[hit[:, 0]]
        f0 = rows_c * M + hit[:, 1]
        u = self._exact(k, n, z, v, f0, hit[:, 1])
        P.stats["screen_hits"] += float(f0.numel())
        self.thr.view(-1)[f0] = self.pos_inf                       # tracked (exact) from now on
        self.track = torch.cat([self.track, f0])
        return P.active_pairs(f0, u)

    def step(self, k: int, n: int, z: torch.Tensor, v: SelfTerm):
        """a[k] of the first n rows as sorted (flat index, value) pairs."""
        refresh, D_all = self.due(n, z)
        n_ref = int(refresh.sum())
        pieces = [self.tracked(k, n, z, v, refresh, n_ref)]
        if n_ref:
            pieces.append(self.refresh(k, z, v, refresh))
        if n_ref < n:
            pieces.append(self.screen(k, n, z, v, refresh, n_ref, D_all))
        pieces = [p for p in pieces if p is not None]
        self.track = torch.sort(self.track).values
        dev = z.device
        flat = torch.cat([f for f, _ in pieces]) if pieces else torch.zeros(0, dtype=torch.long, device=dev)
        vals = torch.cat([a for _, a in pieces]) if pieces else torch.zeros(0, dtype=self.dt, device=dev)
        order = torch.argsort(flat)
        self.P.stats["active_pair_steps"] += float(flat.numel())
        return flat[order], vals[order]


@lca_backend
def lca_mixed(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
              rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
              trace: bool | str = False, potentials: bool = True, allreduce: AllReduce = no_reduce,
              skip: bool = True, screen_dtype: torch.dtype = torch.bfloat16, budget: float = 0.01,
              safety: float = 2.0, refresh_share: float = 0.5) -> LCATrace:
    """Exact LCA (codes of :func:`lca_factored`) with a bfloat16 screening product.

    ``budget``: refresh a row when the bound on its screening error would exceed
    ``budget * lam`` (smaller: more float32 refreshes, fewer exactly computed atoms).
    ``safety``: multiplies the rounding-error constants (>= 1).  ``stats["flops"]``
    includes the screening products, ``stats["flops_low_precision"]`` is their share.
    """
    fallback = dict(lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude, trace=trace,
                    skip=skip, potentials=potentials, allreduce=allreduce)
    if not rectify:
        return lca_factored(phi, s, **fallback)
    if screen_dtype not in UNIT_ROUNDOFF:
        raise SpikevitError(f"screen_dtype {screen_dtype} is not supported; choose from {list(UNIT_ROUNDOFF)}")
    if not (budget > 0 and math.isfinite(budget)):
        raise SpikevitError(f"budget must be a positive number, got {budget}")
    if not safety >= 1.0:
        raise SpikevitError(f"safety must be >= 1 (it multiplies a proven error bound), got {safety}")
    ok = screening_kernel_ok(phi.shape[0], phi.device, screen_dtype)
    # every rank of a sharded dictionary must take the same branch (their collectives must match)
    ok = float(allreduce(torch.tensor([0.0 if ok else 1.0], device=phi.device), "max")) == 0.0
    if not ok:
        warnings.warn(f"the {screen_dtype} matrix product on {phi.device} does not meet the rounding bound the "
                      "mixed backend relies on; using the factored form (same codes, slower)", RuntimeWarning)
        return lca_factored(phi, s, **fallback)
    P = Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                trace=trace, skip=skip, allreduce=allreduce, backend="mixed")
    B, M, N = P.B, P.M, P.N
    S = _Screen(P, phi, screen_dtype, budget, safety, refresh_share)
    z = torch.zeros(B, N, dtype=s.dtype, device=s.device)
    v = SelfTerm(B, M, P.decay, s, keep_ever=False)
    flat = vals = None
    for k in range(P.first, steps + 1):
        lo, n = P.admit(k, z)  # rows starting now: nothing was active, z[k] = c_k s and u[k] = c_k b exactly
        S.fresh[lo:n] = True
        flat, vals = S.step(k, n, z, v)
        if P.advance(k, n, z, v, S.phiT, flat, vals):
            break
        S.any_active = S.any_active or flat.numel() > 0
    codes = P.codes_from(flat, vals)
    pot = None
    if potentials:  # one exact product for u[K] (the screening never forms it)
        n = P.running(steps)
        u_end = None
        if P.first <= steps and n:
            u_end = z[:n] @ phi
            if S.any_active:
                u_end += P.gdiag * v.dense(steps, n, M)
            P.stats["full_products"] += float(n)
        pot = P.final_potentials(u_end)
    stats = P.stats
    low = product_flops(stats["screen_products"], N, M)
    dots = 2.0 * N * (stats["tracked_pairs"] + stats["screen_hits"])
    return P.finish(codes, pot, P.base_flops() + dots + low, flops_low_precision=low)
