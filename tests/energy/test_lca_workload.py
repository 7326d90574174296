"""The LCA closed-form workload (ViT-LCA Eq. 9) cross-checked against operator-level profiles.

Eq. 9 counts K ((2N - 1) M / K + 2 M Mhat + M) FLOPs per inference: the drive b = s phi once, one
inhibition product a G over the Mhat active neurons per step, and M threshold updates per step.  The
profile of the Gramian-form dynamics sees the same products; the factored backend replaces a G by one
dense (N, M) product and a sparse (Mhat, N) reconstruction per step.
"""
from __future__ import annotations

import torch
from torch import nn

from spikevit.energy import lca_inference_flops, profile
from spikevit.functional.lca import lca_factored, lca_gramian


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, s):
        return self.fn(s)


def _problem(N=12, M=40, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(N, M, generator=g, dtype=torch.float64)
    phi = phi / phi.norm(dim=0, keepdim=True)
    s = torch.randn(B, N, generator=g, dtype=torch.float64)
    return phi, s


def _active_per_step(phi, s, K, lam, tau):
    """nnz(a[k]) for k = 0 .. K-1 (a[0] = 0): the trace reports a[1..K]."""
    tr = lca_gramian(phi, s, lam=lam, tau=tau, steps=K, trace="active")
    return torch.cat([torch.zeros(1, s.shape[0], dtype=tr.active.dtype), tr.active[:-1]])   # (K, B)


def test_gramian_profile_equals_eq9():
    phi, s = _problem()
    N, M = phi.shape
    B, K, lam, tau = s.shape[0], 8, 0.3, 2.0
    gram = phi.T @ phi
    p = profile(_Call(lambda x: lca_gramian(phi, x, lam=lam, tau=tau, steps=K, gram=gram).codes), s)
    active = _active_per_step(phi, s, K, lam, tau)
    m_hat = float(active.mean(0).mean())                     # mean active neurons per step and sample
    assert m_hat > 0
    # the drive: B N M dense MACs; the inhibition: M MACs per active neuron and step
    assert p.nonzero_macs == B * N * M + M * int(active.sum())
    # Eq. 9 per inference: 2 FLOPs per MAC, minus the M additions the drive does not need, plus M updates/step
    eq9 = lca_inference_flops(M, N, K, m_hat)
    assert abs(eq9 - (2 * p.nonzero_macs / B - M + K * M)) < 1e-6 * eq9
    # dense accounting (no zero skipping) is Eq. 9 with every neuron active (a[0] = 0 is an all-zero,
    # i.e. spike, operand: it costs no MACs, but its dense count is there)
    assert abs(lca_inference_flops(M, N, K, None) - (2 * p.dense / B - M + K * M)) < 1e-6 * eq9


def test_factored_backend_step_profile():
    phi, s = _problem(seed=1)
    N, M = phi.shape
    B, K, lam, tau = s.shape[0], 6, 0.3, 2.0
    p = profile(_Call(lambda x: lca_factored(phi, x, lam=lam, tau=tau, steps=K, skip=False).codes), s)
    active = _active_per_step(phi, s, K, lam, tau)
    drive = [r for r in p.ops if r.shapes == ((B, N), (N, M))]
    recon = [r for r in p.ops if r.aten == "_sparse_addmm"]
    # the drive b once plus one potential product per step (k = 0 .. K): B N M multiplies each (z[0] = 0
    # is an all-zero operand at k = 0, so that one costs no MACs)
    assert len(drive) == K + 2 and all(r.dense == B * N * M for r in drive)
    assert [r.macs for r in drive] == [B * N * M, 0] + [B * N * M] * K
    # phi a: N MACs per active neuron, for the steps that still update z (k = 0 .. K-1; a[0] = 0 has none)
    assert sum(r.macs for r in recon) == N * int(active.sum())
    # per step, factored = N M + N Mhat MACs per sample against Eq. 9's M Mhat (the Gramian form)
    m_hat = float(active.mean())
    per_step = (sum(r.dense for r in drive[1:-1]) + sum(r.macs for r in recon)) / (K * B)
    assert abs(per_step - (N * M + N * m_hat)) < 1e-9 * per_step
