"""``lca_gramian``: the reference dynamics with the dense M x M Gramian (authors' formulation).

    u[k+1] = u[k] + (1/tau) (b - u[k] - (G - diag G) a[k]),   a[k] = T_lam(u[k])

every step from u[0] = 0 (no step skipping).  Memory and work grow with M^2:
the reference the other backends are tested against, and the fastest form
when M <= N.
"""
from __future__ import annotations

import torch

from spikevit.errors import SpikevitError
from spikevit.functional.lca.core import AllReduce, LCATrace, no_reduce, product_flops, threshold
from spikevit.functional.lca.protocol import lca_backend


@lca_backend
def lca_gramian(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                trace: bool | str = False, potentials: bool = True, allreduce: AllReduce = no_reduce,
                gram: torch.Tensor | None = None) -> LCATrace:
    """Codes a[K] (B, M) of ``s`` (B, N) over ``phi`` (N, M) with the dense Gramian ``gram`` (M, M).

    ``gram`` = phi^T phi when given (built once per dictionary, "training"); built
    here otherwise (its FLOPs are then ``stats["setup_flops"]``).  A dictionary
    split over ranks cannot use the Gramian (it couples every shard).
    """
    if allreduce is not no_reduce:
        raise SpikevitError("the gramian backend cannot run on a sharded dictionary (G couples every shard); "
                            "use factored or mixed")
    B, N, M = s.shape[0], phi.shape[0], phi.shape[1]
    setup = 0.0
    if gram is None:
        gram = phi.T @ phi
        setup = product_flops(M, N, M)
    gdiag = torch.diagonal(gram)
    b = s @ phi                                                    # (B, M)
    keep = None
    if exclude is not None:  # per-sample atom that must stay silent (leave-one-out coding)
        keep = torch.ones_like(b, dtype=torch.bool)
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        keep[rows, exclude[rows]] = False
        b = b * keep

    def code(u):
        a = threshold(u, lam, rectify, kind)
        return a if keep is None else a * keep

    with_energy = trace is True or trace == "energy"
    rate = 1.0 / tau
    u = torch.zeros_like(b)
    actives, res_terms, l1_terms = [], [], []
    for _ in range(steps):
        a = code(u)
        u = u + rate * (b - u - (a @ gram - a * gdiag))
        if trace:
            a_new = code(u)
            actives.append((a_new != 0).sum(1, keepdim=True).T.to(b.dtype))
            if with_energy:
                recon = a_new @ phi.T
                res_terms.append((0.5 * ((s - recon) ** 2).sum(1))[None])
                l1_terms.append((lam * a_new.abs().sum(1))[None])
    codes = code(u)
    stats = {"backend": "gramian", "full_products": float(steps * B), "rows": B,
             "flops": product_flops(B, N, M) + steps * product_flops(B, M, M), "setup_flops": setup}
    pot = u if potentials else None
    if not trace:
        return LCATrace(codes, pot, stats=stats)
    active = torch.cat(actives) if actives else b.new_zeros(0, B)
    if not with_energy:
        return LCATrace(codes, pot, active, stats=stats)
    residual = torch.cat(res_terms) if res_terms else b.new_zeros(0, B)
    sparsity = torch.cat(l1_terms) if l1_terms else b.new_zeros(0, B)
    return LCATrace(codes, pot, active, residual + sparsity, residual, sparsity, 0, stats)
