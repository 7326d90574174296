"""``lca_screened``: exact LCA with a shared, growing set of exactly computed atoms (research backend).

Same dynamics and N-space state as :func:`spikevit.functional.lca.factored.lca_factored`
(u[k] = phi^T z[k] + diag(G) v[k]), but the full (B, N) x (N, M) product is
only formed at *refreshes*.  Between refreshes every atom i outside the
"union" U (the atoms computed exactly, shared by all rows of the batch) is
provably silent because its potential obeys, for dz = z[k] - z[k0],

    u_i[k] <= u_i[k0] + phi_i^T dz <= u_i[k0] + (V^T phi_i) . (V^T dz) + rho_i ||dz - V V^T dz||

(its self term diag(G)_i v_i >= 0 only decays while it is silent; V is an
orthonormal basis of phi's top singular directions, rho_i the norm of atom i
outside span(V)).  That bound is one small (B, d+1) x (d+1, M) product per
step.  Atoms whose bound reaches lam in any row join U; atoms of U are
computed exactly by a (B, N) x (N, |U|) product on a contiguous copy of their
columns.  When U outgrows ``union_cap`` x M, a refresh (one full product)
restarts the bound from the exact potentials and empties U.

Everything is dense and batched (no per-pair gathers): the work per step is
the two small products plus a few passes over a (B, M) array, instead of the
(B, N) x (N, M) product of the factored form.  The codes are exact (the same
a[K] as the dense reference to float round-off), not an approximation.

Rectified thresholds only (the default, the authors' choice): the bound is
one-sided.  ``rectify=False`` falls back to the factored form.

Not in the public registry of ``spikevit.lca.encode``: on the committed
benchmarks (docs/lca-backends.md) it is never faster than ``factored`` (the
shared set grows with the batch); import it from this module for research.
"""
from __future__ import annotations

import math

import torch

from spikevit.functional.lca.basis import screening_basis
from spikevit.functional.lca.core import AllReduce, LCATrace, Problem, no_reduce, threshold
from spikevit.functional.lca.factored import lca_factored
from spikevit.functional.lca.protocol import lca_backend


class _Union:
    """Atoms computed exactly: indices, a contiguous copy of their columns (|U|, N), self terms (B, |U|)."""

    def __init__(self, phiT: torch.Tensor, B: int, keep: torch.Tensor | None, capacity: int):
        self.phiT, self.B, self.keep = phiT, B, keep
        self.M, self.N = phiT.shape
        self.size = 0
        self._alloc(max(capacity, 16))
        self.member = torch.zeros(self.M, dtype=torch.bool, device=phiT.device)

    def _alloc(self, cap: int):
        dev, dt = self.phiT.device, self.phiT.dtype
        old = None if not hasattr(self, "idx") else (self.idx, self.cols, self.v, self.kp)
        self.cap = cap
        self.idx = torch.empty(cap, dtype=torch.long, device=dev)
        self.cols = torch.empty(cap, self.N, dtype=dt, device=dev)
        self.v = torch.zeros(self.B, cap, dtype=dt, device=dev)
        self.kp = None if self.keep is None else torch.ones(self.B, cap, dtype=torch.bool, device=dev)
        if old is not None and self.size:
            n = self.size
            self.idx[:n], self.cols[:n], self.v[:, :n] = old[0][:n], old[1][:n], old[2][:, :n]
            if self.kp is not None:
                self.kp[:, :n] = old[3][:, :n]

    def clear(self):
        self.member[self.idx[: self.size]] = False
        self.v[:, : self.size] = 0
        self.size = 0

    def add(self, atoms: torch.Tensor, v_now: torch.Tensor):
        """Append ``atoms`` with their current self terms ``v_now`` (B, len(atoms))."""
        n, a = self.size, atoms.numel()
        if n + a > self.cap:
            self._alloc(max(2 * self.cap, n + a))
        self.idx[n:n + a] = atoms
        self.cols[n:n + a] = self.phiT.index_select(0, atoms)
        self.v[:, n:n + a] = v_now
        if self.kp is not None:
            self.kp[:, n:n + a] = self.keep[:, atoms]
        self.member[atoms] = True
        self.size = n + a

    def view(self):
        n = self.size
        return self.idx[:n], self.cols[:n], self.v[:, :n], (None if self.kp is None else self.kp[:, :n])

class _Bound:
    """Reference point of the bound (z0, exact u0 and v0 at the last refresh) and the exactly computed set U."""

    def __init__(self, P: Problem, phi: torch.Tensor, basis_dim: int, union_cap: float):
        B, M, N = P.B, P.M, P.N
        dt, dev = P.s.dtype, P.s.device
        self.P, self.phi = P, phi
        self.lam = float(P.lam)
        self.V, PT, rho, norms, phiT = screening_basis(phi, basis_dim)
        self.Pext = torch.cat([PT, rho[:, None]], 1).T.contiguous()  # (d + 1, M)
        self.d = self.V.shape[1]
        self.eps = torch.finfo(dt).eps
        self.maxnorm = float(norms.max())
        self.s_norm = P.s.norm(dim=1)
        self.z0 = torch.zeros(B, N, dtype=dt, device=dev)          # z at the row's reference point
        self.u0 = torch.zeros(B, M, dtype=dt, device=dev)          # exact u at the reference (incl. self term)
        self.v0 = torch.zeros(B, M, dtype=dt, device=dev)          # v at the last refresh (all atoms)
        self.k_ref = 0
        self.gv0max = torch.zeros(B, dtype=dt, device=dev)
        self.cap = max(64, int(union_cap * M))
        self.cap_now = self.cap
        self.U = _Union(phiT, B, P.keep, self.cap + 64)
        P.stats.update({"refreshes": 0.0, "union_atom_steps": 0.0, "active_pair_steps": 0.0, "bound_tests": 0.0,
                        "basis_dim": self.d})

    def start(self, k: int, lo: int, n: int, z: torch.Tensor):
        """Rows [lo, n) start at step k: z = c_k s and u = c_k b exactly (nothing was active)."""
        P = self.P
        self.z0[lo:n] = z[lo:n]
        self.u0[lo:n] = P.coef(k) * P.b[lo:n]
        if P.keep is not None:
            self.u0[lo:n].masked_fill_(~P.keep[lo:n], -math.inf)

    def v_all(self, n: int, k: int) -> torch.Tensor:
        """v[k] of every atom for the first n rows: decayed refresh values, exact values on U."""
        out = self.v0[:n] * (self.P.decay ** (k - self.k_ref))
        idx, _, vU, _ = self.U.view()
        if idx.numel():
            out[:, idx] = vU[:n]
        return out

    def test(self, n: int, z: torch.Tensor) -> torch.Tensor:
        """Atoms outside U whose bound reaches lam in any of the first n rows (one (n, d+1) x (d+1, M) product)."""
        V, lam = self.V, self.lam
        dz = z[:n] - self.z0[:n]
        c = dz @ V                                                 # (n, d)
        e = (dz - c @ V.T).norm(dim=1)
        tol = 64 * self.eps * (self.maxnorm * (self.z0[:n].norm(dim=1) + dz.norm(dim=1) + self.s_norm[:n])
                               + self.gv0max[:n] + lam)
        bound = torch.addmm(self.u0[:n], torch.cat([c, e[:, None]], 1), self.Pext)
        hit = bound >= (lam - tol)[:, None]
        idx = self.U.view()[0]
        if idx.numel():
            hit.index_fill_(1, idx, False)
        self.P.stats["bound_tests"] += n
        return torch.nonzero(hit.any(0)).squeeze(1)

    def refresh(self, k: int, n: int, z: torch.Tensor):
        """Exact potentials of every atom (one full product per row); the bound restarts here and U empties."""
        P, gdiag = self.P, self.P.gdiag
        va = self.v_all(n, k)
        self.u0[:n] = torch.addcmul(z[:n] @ self.phi, va, gdiag)
        if P.keep is not None:
            self.u0[:n].masked_fill_(~P.keep[:n], -math.inf)
        self.v0[:n] = va
        self.v0[n:] = 0
        self.k_ref = k
        self.gv0max[:n] = (va * gdiag).amax(1)
        self.z0[:n] = z[:n]
        self.U.clear()
        P.stats["full_products"] += n
        P.stats["refreshes"] += 1

    def grow(self, k: int, n: int, z: torch.Tensor):
        """Add the atoms whose bound reaches lam to U; refresh first when U would outgrow its cap."""
        new = self.test(n, z)
        refreshed = self.U.size + new.numel() > self.cap_now
        if refreshed:
            self.refresh(k, n, z)
            new = self.test(n, z)
        if new.numel():
            self.U.add(new, self.v0[:, new] * (self.P.decay ** (k - self.k_ref)))
        if refreshed:  # just refreshed: leave room to grow beyond the atoms needed right now
            self.cap_now = max(self.cap, 2 * self.U.size)


@lca_backend
def lca_screened(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                 rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                 trace: bool | str = False, potentials: bool = True, allreduce: AllReduce = no_reduce,
                 skip: bool = True, basis_dim: int = 32, union_cap: float = 0.08) -> LCATrace:
    """Exact LCA codes with screening: full products only at refreshes (see the module docstring).

    ``basis_dim``: size of the screening basis; ``union_cap``: fraction of M
    the exactly computed set may reach before a refresh.  Same interface and
    result as :func:`lca_factored`; ``stats`` counts full products, refreshes,
    the exactly computed atom-steps and the FLOPs.
    """
    if not rectify:
        out = lca_factored(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                           trace=trace, potentials=potentials, allreduce=allreduce, skip=skip)
        out.stats["backend"] = "screened->factored (signed threshold)"
        return out
    P = Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                trace=trace, skip=skip, allreduce=allreduce, backend="screened")
    B, M, N = P.B, P.M, P.N
    dt, dev = s.dtype, s.device
    S = _Bound(P, phi, basis_dim, union_cap)
    U, gdiag, stats = S.U, P.gdiag, P.stats
    z = torch.zeros(B, N, dtype=dt, device=dev)
    rows = torch.zeros(0, dtype=torch.long, device=dev)
    vals = torch.zeros(0, dtype=dt, device=dev)
    a_U = None
    for k in range(P.first, steps + 1):
        lo, n = P.admit(k, z)
        if n > lo:
            S.start(k, lo, n, z)
        S.grow(k, n, z)
        # exact potentials and codes of the atoms in U
        idx, cols, vU, kpU = U.view()
        uU = torch.addcmul(z[:n] @ cols.T, vU[:n], gdiag[idx])      # (n, |U|)
        a_U = threshold(uU, S.lam, True, kind)
        if kpU is not None:
            a_U = a_U * kpU[:n]
        nz = torch.nonzero(a_U)
        rows, cidx = nz[:, 0], nz[:, 1]
        vals = a_U[rows, cidx]
        stats["union_atom_steps"] += float(n * idx.numel())
        stats["active_pair_steps"] += float(rows.numel())
        # reconstruction from U's columns, trace, update of z and of U's self terms
        recon = None
        if k < steps or P.with_energy:
            if rows.numel():
                sp = torch.sparse_coo_tensor(nz.T, vals, (n, idx.numel()), is_coalesced=True, check_invariants=False)
                recon = torch.sparse.mm(sp, cols)
            else:
                recon = torch.zeros(n, N, dtype=dt, device=dev)
            recon = allreduce(recon, "sum")
        P.record(k, n, rows, vals, recon)
        if k == steps:
            break
        stats["recon_pairs"] += float(rows.numel())
        z[:n] = P.decay * z[:n] + P.rate * (P.s[:n] - recon)
        vU[:n] = P.decay * vU[:n] + P.rate * a_U
    codes = torch.zeros(B, M, dtype=dt, device=dev)
    if P.first <= steps and a_U is not None and rows.numel():
        codes[rows, U.view()[0][cidx]] = vals
    pot = None
    if potentials:
        n = P.running(steps)
        u_end = None
        if P.first <= steps and n:
            u_end = torch.addcmul(z[:n] @ phi, S.v_all(n, steps), gdiag)
            stats["full_products"] += n
        pot = P.final_potentials(u_end)
    # per bound test of a row: dz = V c + res (two N x d products) and the (d + 1) x M bound product
    d = S.d
    bound = (4.0 * N * d + 2.0 * (d + 1) * M) * stats["bound_tests"]
    return P.finish(codes, pot, P.base_flops() + 2.0 * N * stats["union_atom_steps"] + bound)
