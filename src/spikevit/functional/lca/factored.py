"""``lca_factored``: the N-space form, one (B, N) x (N, M) product per step and no M x M matrix.

With r = 1/tau, z[k+1] = (1 - r) z[k] + r (s - phi a[k]) and
v[k+1] = (1 - r) v[k] + r a[k] (z[0] = v[0] = 0), linearity gives exactly

    u[k] = phi^T z[k] + diag(G) v[k]

so one product per step gives every potential; phi a[k] touches the active
atoms only; v is non-zero on ever-active atoms only.  Rows start at their own
first possible crossing step (u[k] = c_k b before it), exactly.
"""
from __future__ import annotations

import torch

from spikevit.functional.lca.core import AllReduce, LCATrace, Problem, SelfTerm, no_reduce, product_flops
from spikevit.functional.lca.protocol import lca_backend


@lca_backend
def lca_factored(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                 rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                 trace: bool | str = False, potentials: bool = True, allreduce: AllReduce = no_reduce,
                 skip: bool = True, matmul_dtype: torch.dtype | None = None) -> LCATrace:
    """Codes a[K] (B, M) of ``s`` (B, N) over ``phi`` (N, M): u[k] = phi^T z[k] + diag(G) v[k].

    ``skip`` starts each row at its own first possible crossing (exact);
    ``matmul_dtype`` (e.g. torch.bfloat16) runs the big product in low
    precision with float32 state (opt-in, not exact; its FLOPs are
    ``stats["flops_low_precision"]``).  ``allreduce`` sums phi a over dictionary shards.
    """
    P = Problem(phi, s, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind, exclude=exclude,
                trace=trace, skip=skip, allreduce=allreduce, backend="factored")
    B, M, N = P.B, P.M, P.N
    phiT = phi.T.contiguous()
    phi_mm = phi if matmul_dtype is None else phi.to(matmul_dtype)
    z = torch.zeros(B, N, dtype=s.dtype, device=s.device)
    v = SelfTerm(B, M, P.decay, s)
    u = flat = vals = None
    for k in range(P.first, steps + 1):
        _, n = P.admit(k, z)
        if matmul_dtype is None:
            u = z[:n] @ phi
        else:
            u = (z[:n].to(matmul_dtype) @ phi_mm).to(s.dtype)
        P.stats["full_products"] += n
        ever = v.ever
        if ever.numel():
            u.view(-1).index_add_(0, ever, P.gdiag[ever % M] * v.at(k, ever))
        cand = torch.nonzero(P.danger(u).view(-1)).squeeze(1)
        flat, vals = P.active_pairs(cand, u.view(-1)[cand])
        if P.advance(k, n, z, v, phiT, flat, vals):
            break
    codes = P.codes_from(flat, vals)
    pot = P.final_potentials(u) if potentials else None
    low = 0.0 if matmul_dtype is None else product_flops(P.stats["full_products"], N, M)
    extra = {} if matmul_dtype is None else {"flops_low_precision": low}
    return P.finish(codes, pot, P.base_flops(), **extra)
