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

Two exact formulations of the inhibition (G - diag G) a:
  * gramian:  G a - g a, with the dense M x M Gramian (the authors' code);
  * factored: phi^T (phi a) - g a, with phi a computed on the active atoms
    only; no M x M matrix.
Steps before any neuron can cross threshold are skipped exactly: while a = 0,
u[k] = (1 - (1 - 1/tau)^k) b.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

THRESHOLDS = ("soft", "hard")


class LCATrace(NamedTuple):
    """Final codes and optional per-step traces (step k = 1..K, after the update)."""

    codes: torch.Tensor                    # (B, M)
    potentials: torch.Tensor               # (B, M) u[K]
    active: torch.Tensor | None = None     # (K, B) number of non-zero a[k]
    energy: torch.Tensor | None = None     # (K, B) 1/2 ||s - phi a||^2 + lam ||a||_1
    residual: torch.Tensor | None = None   # (K, B) 1/2 ||s - phi a||^2
    sparsity: torch.Tensor | None = None   # (K, B) lam ||a||_1
    skipped_steps: int = 0

# ``trace`` argument of the dynamics: False (codes only), "active" (active counts per
# step, nearly free) or "energy" / True (also E and its two terms: one extra
# (B, M) x (M, N) product per step).


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


def first_crossing_step(b: torch.Tensor, lam: float, tau: float, rectify: bool, steps: int) -> int:
    """Number of steps that can be skipped exactly (no neuron of any sample is active).

    While every a is zero, u[k] = c_k b with c_k = 1 - (1 - 1/tau)^k, so a neuron
    can first be active at the smallest k with c_k * drive >= lam, where
    drive = max b (rectified) or max |b|.  Returns the largest k such that all
    a[0..k-1] are provably zero, capped at ``steps``.
    """
    if lam <= 0 or steps == 0:
        return 0
    drive = float(b.max() if rectify else b.abs().max())
    if drive <= lam:  # c_k < 1 always: never crosses
        return steps
    r = 1.0 - 1.0 / tau
    if r <= 0.0:  # tau <= 1: u[1] = b already
        return min(1, steps)
    # smallest k with 1 - r^k >= lam / drive; stay one step conservative for round-off
    k = math.log1p(-lam / drive) / math.log(r)
    return max(0, min(steps, math.ceil(k) - 1))


def lca_gramian(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                rectify: bool = True, kind: str = "soft", gram: torch.Tensor | None = None,
                exclude: torch.Tensor | None = None, trace: bool = False) -> LCATrace:
    """Reference dynamics with the dense M x M Gramian (authors' formulation)."""
    if gram is None:
        gram = phi.T @ phi
    gdiag = torch.diagonal(gram)

    def inhibition(a):
        return a @ gram - a * gdiag

    return _run(phi, s, inhibition, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind,
                exclude=exclude, trace=trace, skip=False)


def lca_factored(phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                 rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                 trace: bool = False, skip: bool = True, matmul_dtype: torch.dtype | None = None) -> LCATrace:
    """Factored dynamics: (G - diag G) a = phi^T (phi_A a_A) - g a, A = active atoms."""
    gdiag = (phi * phi).sum(0)
    phi_mm = phi if matmul_dtype is None else phi.to(matmul_dtype)

    def inhibition(a):
        active_cols = torch.nonzero(a.abs().amax(0) > 0).squeeze(1)
        if active_cols.numel() == 0:
            return torch.zeros_like(a)
        recon = a[:, active_cols] @ phi[:, active_cols].T          # (B, N)
        if matmul_dtype is not None:
            back = (recon.to(matmul_dtype) @ phi_mm).float()
        else:
            back = recon @ phi
        return back - a * gdiag

    return _run(phi, s, inhibition, lam=lam, tau=tau, steps=steps, rectify=rectify, kind=kind,
                exclude=exclude, trace=trace, skip=skip)


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
    if not trace:
        return LCATrace(codes, u, skipped_steps=k0)
    active = torch.cat(actives) if actives else b.new_zeros(0, b.shape[0])
    if not with_energy:
        return LCATrace(codes, u, active, skipped_steps=k0)
    residual = torch.cat(res_terms) if res_terms else b.new_zeros(0, b.shape[0])
    sparsity = torch.cat(l1_terms) if l1_terms else b.new_zeros(0, b.shape[0])
    return LCATrace(codes, u, active, residual + sparsity, residual, sparsity, k0)
