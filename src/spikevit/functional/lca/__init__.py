"""LCA dynamics (SPEC Eq. 2) as pure functions: one module per backend, one signature for all.

Dictionary ``phi`` (N, M) with one atom per column, inputs ``s`` (B, N), codes (B, M)::

    u[0] = 0,  u[k+1] = u[k] + (1/tau) (b - u[k] - (G - diag G) a[k]),  a[k] = T_lam(u[k]),  b = s phi,  G = phi^T phi

and the code is a[K].  Public backends (all exact: the same a[K] up to float round-off),
each an :class:`LCABackend` reporting its work and FLOPs in ``LCATrace.stats``:

* :func:`lca_gramian` -- the dense M x M Gramian every step (the authors' formulation, the reference);
* :func:`lca_factored` -- u = phi^T z + diag(G) v: one (B, N) x (N, M) product per step, no M x M matrix;
* :func:`lca_mixed` -- the factored form with a bfloat16 screening product and a proven error bound.

Research backends, not re-exported here (no measured regime where they win, see docs/lca-backends.md):
``spikevit.functional.lca.active.lca_active`` and ``spikevit.functional.lca.screened.lca_screened``.
"""
from spikevit.functional.lca.basis import screening_basis
from spikevit.functional.lca.core import (THRESHOLDS, AllReduce, LCATrace, first_crossing_step, first_crossing_steps,
                                          no_reduce, threshold)
from spikevit.functional.lca.factored import lca_factored
from spikevit.functional.lca.gramian import lca_gramian
from spikevit.functional.lca.mixed import bf16_product_bound, lca_mixed, round_down, screening_kernel_ok
from spikevit.functional.lca.protocol import LCABackend, lca_backend

__all__ = [
    "THRESHOLDS", "AllReduce", "LCABackend", "LCATrace", "bf16_product_bound", "first_crossing_step",
    "first_crossing_steps", "lca_backend", "lca_factored", "lca_gramian", "lca_mixed", "no_reduce", "round_down",
    "screening_basis", "screening_kernel_ok", "threshold",
]
