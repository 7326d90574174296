"""Screening basis of a dictionary: top singular directions and the per-atom pieces of the safe bound."""
from __future__ import annotations

import weakref

import torch

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
