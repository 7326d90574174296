"""``lca_active``: event-driven exact LCA with safe screening (research backend, not in the public registry).

After an exact refresh p = u[k0] (one full product) of a row, for every later step

    u_i[k] <= p_i + phi_i^T (z[k] - z[k0])     (atoms silent since k0)

and phi_i^T dz is split exactly along a small orthonormal basis (top singular
vectors of phi plus the input direction) with a Cauchy-Schwarz bound on the
remainder.  Atoms whose bound stays below lam are provably silent; only the
others ("tracked" pairs) are computed exactly, by sampled dot products phi_i^T z.
Work per step is proportional to the tracked (active and near-threshold) atoms;
a refresh happens only when a row's tracked set grows too large.  Exact, not
approximate -- but on the benchmarks of docs/lca-backends.md it performs ~15x
fewer FLOPs than ``factored`` and is no faster (many small kernels), so
``spikevit.lca.encode`` does not offer it; import it from this module.
"""
from __future__ import annotations

import math

import torch

from spikevit.functional.lca.basis import screening_basis
from spikevit.functional.lca.core import AllReduce, LCATrace, Problem, SelfTerm, no_reduce, sampled_dots
from spikevit.functional.lca.protocol import lca_backend


def _merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if b.numel() == 0:
        return a
    return torch.unique(torch.cat([a, b]))


class _Screen:
    """Per-row screening state: reference point of the last refresh, last full test, and the near set.

    An atom silent since the row's refresh at k0 obeys, for dz = z[k] - z[k0] = V c + s_perp gamma' + res,

        u_i[k] <= p_hi_i + gamma b_i + c' . (V^T phi_i) + rho_i ||res|| + tol

    (p_hi = u[k0] plus the self term's bound; signed thresholds also use the mirror
    lower bound with p_lo).
    """

    def __init__(self, P: Problem, phi: torch.Tensor, basis_dim: int, refresh_cap: int, near_cap: int,
                 test_every: float):
        B, M, N = P.B, P.M, P.N
        dev, dt = P.s.device, P.s.dtype
        self.P, self.phi, self.M = P, phi, M
        self.V, PT, rho, norms, self.phiT = screening_basis(phi, basis_dim)
        self.d = self.V.shape[1]
        self.maxnorm = float(norms.max())
        self.eps = torch.finfo(dt).eps
        self.lam = float(P.lam)
        self.refresh_cap, self.near_cap, self.test_every = refresh_cap, near_cap, test_every
        # per-row pieces of the input direction outside span(V): s = V sigma + eta s_perp
        V = self.V
        self.sigma = P.s @ V                                       # (B, d)
        s_perp = P.s - self.sigma @ V.T
        eta = s_perp.norm(dim=1)
        self.s_norm = P.s.norm(dim=1)
        use_s = eta > 1e-6 * self.s_norm.clamp_min(1e-30)
        self.s_perp = torch.where(use_s[:, None], s_perp / eta.clamp_min(1e-30)[:, None], torch.zeros_like(s_perp))
        self.eta_safe = torch.where(use_s, eta, torch.ones_like(eta))
        self.PextT = torch.cat([PT, rho[:, None]], 1).contiguous()  # (M, d + 1): [V^T phi, rho] per atom
        self.Pext = self.PextT.T.contiguous()                      # (d + 1, M)
        self.excluded = None if P.keep is None else ~P.keep
        self.z0 = torch.zeros(B, N, dtype=dt, device=dev)          # z at the row's last refresh
        self.zt = torch.zeros_like(self.z0)                        # z at the row's last full test
        self.p_hi = torch.zeros(B, M, dtype=dt, device=dev)        # u[k0] (+ self-term bound)
        self.p_lo = None if P.rectify else torch.zeros_like(self.p_hi)
        self.gv0max = torch.zeros(B, dtype=dt, device=dev)         # max |diag(G) v[k0]| per row
        self.z0norm = torch.zeros(B, dtype=dt, device=dev)
        self.margin_D = torch.zeros(B, dtype=dt, device=dev)       # far atoms safe while drift < D
        self.need_full = torch.ones(B, dtype=torch.bool, device=dev)
        self.last_step_drift = torch.zeros(B, dtype=dt, device=dev)
        self.near = None                                           # dict of per-pair arrays
        P.stats.update({"full_tests": 0.0, "near_tests": 0.0, "tracked_pair_steps": 0.0,
                        "active_pair_steps": 0.0, "refreshes": 0.0, "row_steps": 0.0, "basis_dim": self.d})

    def start(self, k: int, lo: int, n: int, z: torch.Tensor):
        """Rows [lo, n) start at step k: z = c_k s, u = c_k b exactly; their reference point is here."""
        P = self.P
        c = P.coef(k)
        self.z0[lo:n] = z[lo:n]
        self.p_hi[lo:n] = c * P.b[lo:n]
        if self.p_lo is not None:
            self.p_lo[lo:n] = self.p_hi[lo:n]
        self.z0norm[lo:n] = z[lo:n].norm(dim=1)
        self.last_step_drift[lo:n] = P.rate * (1.0 - c) * self.s_norm[lo:n]  # next step's |dz| while silent
        self.need_full[lo:n] = True

    def refresh(self, k: int, n: int, z: torch.Tensor, v: SelfTerm, tracked: torch.Tensor,
                flat: torch.Tensor) -> torch.Tensor:
        """Rows whose tracked set grew too large get exact p = u[k] for every atom; returns the tracked pairs left."""
        if not tracked.numel():
            return tracked
        P, M = self.P, self.M
        # tracked pairs that are silent now are what a refresh removes
        silent = torch.bincount(tracked // M, minlength=n) - torch.bincount(flat // M, minlength=n)
        redo = torch.nonzero(silent > self.refresh_cap).squeeze(1)
        if not redo.numel():
            return tracked
        zr = z[redo]
        p = zr @ self.phi
        gv = v.rows(k, redo) * P.gdiag
        self.p_hi[redo] = p + gv.clamp_min(0)
        if self.p_lo is not None:
            self.p_lo[redo] = p + gv.clamp_max(0)
        self.gv0max[redo] = gv.abs().amax(1)
        self.z0[redo] = zr
        self.z0norm[redo] = zr.norm(dim=1)
        self.need_full[redo] = True
        drop = torch.zeros(n, dtype=torch.bool, device=tracked.device)
        drop[redo] = True
        P.stats["full_products"] += redo.numel()
        P.stats["refreshes"] += redo.numel()
        return tracked[~drop[tracked // M]]

    def geometry(self, n: int, z: torch.Tensor):
        """dz = z - z0 = V c + s_perp gamma' + res per row -> (c' = c - gamma sigma, ||res||, gamma, tol)."""
        V, sp = self.V, self.s_perp[:n]
        dz = z[:n] - self.z0[:n]
        c = dz @ V                                                 # (n, d)
        g1 = (dz * sp).sum(1)                                      # gamma'
        res = dz - c @ V.T - g1[:, None] * sp
        e = res.norm(dim=1)
        gamma = g1 / self.eta_safe[:n]
        cprime = c - gamma[:, None] * self.sigma[:n]
        tol = 64 * self.eps * (self.maxnorm * (self.z0norm[:n] + dz.norm(dim=1) + self.s_norm[:n])
                               + self.gv0max[:n] + abs(self.lam))
        return cprime, e, gamma, tol

    def full_test(self, n: int, z: torch.Tensor, cprime, e, gamma, tol) -> torch.Tensor | None:
        """Bound on every atom of the rows due for it; refreshes the near set and margin D of those rows.

        A row is due when new, just refreshed, or when its drift since the last full
        test could close the margin D.  Returns the flat pairs whose bound reaches lam.
        """
        P, M, lam = self.P, self.M, self.lam
        drift = self.maxnorm * (z[:n] - self.zt[:n]).norm(dim=1)
        F = torch.nonzero(self.need_full[:n] | (drift + tol >= self.margin_D[:n])).squeeze(1)
        if not F.numel():
            return None
        every = F.numel() == n
        pick = (lambda x: x[:n]) if every else (lambda x: x.index_select(0, F))
        coeff = torch.cat([cprime[F], e[F, None]], 1)
        b_F = pick(P.b)
        # margin lam - hi, hi = p + gamma b + c'.V^T phi + e rho + tol  (upper bound of u)
        marg = torch.addmm(torch.addcmul(pick(self.p_hi), gamma[F, None], b_F).add_(tol[F, None] - lam),
                           coeff, self.Pext).neg_()
        if self.p_lo is not None:
            lo = torch.addmm(torch.addcmul(pick(self.p_lo), gamma[F, None], b_F).sub_(tol[F, None] - lam),
                             torch.cat([cprime[F], -e[F, None]], 1), self.Pext)
            marg = torch.minimum(marg, lo)
        if self.excluded is not None:
            marg = marg.masked_fill(self.excluded[F], math.inf)
        hit = torch.nonzero(marg <= 0)
        new_pairs = F[hit[:, 0]] * M + hit[:, 1]
        # margin D: what the drift may eat before the next full test
        want = self.test_every * self.maxnorm * self.last_step_drift[F] + 2 * tol[F]
        cnt = (marg < want[:, None]).sum(1)
        over = torch.nonzero(cnt > self.near_cap).squeeze(1)
        if over.numel():
            want[over] = torch.kthvalue(marg[over], self.near_cap, dim=1).values
        nz = torch.nonzero((marg < want[:, None]) & (marg > 0))
        rows_n = F[nz[:, 0]]
        cols_n = nz[:, 1]
        idx_n = rows_n * M + cols_n
        keep_old = None
        if self.near is not None:
            in_f = torch.zeros(n, dtype=torch.bool, device=F.device)
            in_f[F] = True
            keep_old = ~in_f[self.near["rows"]]
        fresh = {"rows": rows_n, "idx": idx_n, "p_hi": self.p_hi.view(-1).index_select(0, idx_n),
                 "b": P.b.view(-1).index_select(0, idx_n), "P": self.PextT.index_select(0, cols_n)}
        if self.p_lo is not None:
            fresh["p_lo"] = self.p_lo.view(-1).index_select(0, idx_n)
        near = self.near
        self.near = fresh if near is None else {key: torch.cat([near[key][keep_old], fresh[key]]) for key in near}
        self.margin_D[F] = want
        self.zt[F] = z[F]
        self.need_full[F] = False
        P.stats["full_tests"] += F.numel()
        return new_pairs

    def near_test(self, cprime, e, gamma, tol) -> torch.Tensor | None:
        """Bound on the atoms within D of lam (between full tests); returns the flat pairs that reach lam."""
        near, d, lam = self.near, self.d, self.lam
        if near is None or not near["rows"].numel():
            return None
        r_ = near["rows"]
        coeff = torch.cat([cprime, e[:, None]], 1).index_select(0, r_)
        shift = near["p_hi"] + gamma.index_select(0, r_) * near["b"]
        proj = (coeff[:, :d] * near["P"][:, :d]).sum(1)
        slack = coeff[:, d] * near["P"][:, d] + tol.index_select(0, r_)
        bad = shift + proj + slack >= lam
        if self.p_lo is not None:
            lo_shift = near["p_lo"] + gamma.index_select(0, r_) * near["b"]
            bad |= lo_shift + proj - slack <= -lam
        self.P.stats["near_tests"] += r_.numel()
        return near["idx"][bad]


@lca_backend
def lca_active(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
               rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
               trace: bool | str = False, potentials: bool = True, allreduce: AllReduce = no_reduce,
               skip: bool = True, basis_dim: int = 32, refresh_fraction: float = 0.01,
               near_fraction: float = 0.05, test_every: float = 8.0) -> LCATrace:
    """Event-driven exact LCA: safe screening + exact updates of tracked (possibly active) atoms only.

    Each step: (1) refresh rows whose tracked set exceeds ``refresh_fraction`` * M
    (one full product each); (2) the screening test -- the bound on every atom
    for rows due for it (new, refreshed, or drifted by the margin ``D``), on the
    ``near_fraction`` * M atoms within D of lam otherwise; (3) the exact update:
    potentials of the tracked pairs by sampled dot products, a[k], and the shared
    reconstruction / z, v update.  Returns the same codes as the dense reference.
    """
    P = Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                trace=trace, skip=skip, allreduce=allreduce, backend="active")
    B, M, N = P.B, P.M, P.N
    dev, dt = s.device, s.dtype
    S = _Screen(P, phi, basis_dim, refresh_cap=max(64, int(refresh_fraction * M)),
                near_cap=max(256, int(near_fraction * M)), test_every=test_every)
    stats = P.stats
    z = torch.zeros(B, N, dtype=dt, device=dev)
    v = SelfTerm(B, M, P.decay, s, keep_ever=False)
    tracked = torch.zeros(0, dtype=torch.long, device=dev)         # sorted flat indices row * M + atom
    flat = torch.zeros(0, dtype=torch.long, device=dev)
    vals = torch.zeros(0, dtype=dt, device=dev)
    for k in range(P.first, steps + 1):
        lo, n = P.admit(k, z)
        if n > lo:
            S.start(k, lo, n, z)
        tracked = S.refresh(k, n, z, v, tracked, flat)
        geom = S.geometry(n, z)
        new_pairs = [p for p in (S.full_test(n, z, *geom), S.near_test(*geom)) if p is not None]
        if new_pairs:
            tracked = _merge(tracked, torch.cat(new_pairs))
        # exact potentials of the tracked pairs and a[k]
        if tracked.numel():
            u_t = sampled_dots(z[:n], S.phiT, tracked, P.gdiag[tracked % M] * v.at(k, tracked), M)
            flat, vals = P.active_pairs(tracked, u_t)
        else:
            flat = tracked
            vals = torch.zeros(0, dtype=dt, device=dev)
        stats["tracked_pair_steps"] += tracked.numel()
        stats["active_pair_steps"] += flat.numel()
        stats["row_steps"] += n
        if P.advance(k, n, z, v, S.phiT, flat, vals, step_norm=S.last_step_drift):
            break
    codes = P.codes_from(flat if P.first <= steps else None, vals)
    pot = None
    if potentials:
        n = P.running(steps)
        u_end = None
        if n and P.first <= steps:
            u_end = z[:n] @ phi + v.dense(steps, n, M) * P.gdiag
            stats["full_products"] += n
        pot = P.final_potentials(u_end)
    d, sides = S.d, 1 if rectify else 2
    # input split s = V sigma + eta s_perp once, dz = V c + ... every row-step: 2 (N x d) products each
    geometry = 4.0 * N * d * (B + stats["row_steps"])
    tests = 2.0 * (d + 1) * (sides * M * stats["full_tests"] + stats["near_tests"])
    return P.finish(codes, pot, P.base_flops() + 2.0 * N * stats["tracked_pair_steps"] + geometry + tests)
