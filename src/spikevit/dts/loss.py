"""Mask loss (DTS-SNN Eq. 8): L_mask = lambda_m * sum_{l in chosen groups} sum_t TM_l[t]; and the losses of
the DTS paper's Table II baselines on the same Spikformer:

    TET   (Deng et al. 2022, ref. [14]):   L = (1 - lam) (1/T) sum_t CE(O_t, y) + lam MSE(O, phi)
    Hoyer (Datta et al. 2022, ref. [9]):   L = CE + lam_H sum_l H(clip(U_l / Vth, 0, 1)),  H(z) = |z|_1^2 / |z|_2^2

O_t are the per-step logits ``[T, B, K]`` (the prediction is their mean over t), MSE is over every entry of
O against the constant phi, U_l the pre-spike membrane potentials of LIF layer l over its kept steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.errors import SpikevitError
from spikevit.nn.dtss import DTSSLIF

MASK_GROUPS = ("sps", "qkv", "attn", "mlp")
DEFAULT_MASK_GROUPS = ("qkv", "mlp")  # the paper's best (Table III)


def parse_groups(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"qkv,mlp"`` / ``"all"`` (sps, qkv, attn, mlp) / ``"none"`` / a list -> a tuple of group names."""
    if spec is None:
        return DEFAULT_MASK_GROUPS
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return MASK_GROUPS
        if s in ("none", ""):
            return ()
        spec = [g for g in s.replace("+", ",").split(",") if g.strip()]
    groups = tuple(dict.fromkeys(g.strip() for g in spec))
    bad = [g for g in groups if g not in MASK_GROUPS + ("head",)]
    if bad:
        raise SpikevitError(f"unknown mask-loss group(s) {bad}; choose from {list(MASK_GROUPS)} (+ 'head'), "
                            "'all' or 'none'")
    return groups


def gated_layers(model: nn.Module, groups: tuple[str, ...] | None = None) -> dict[str, DTSSLIF]:
    """DTSS-gated LIF layers of ``model`` (optionally only those in ``groups``), by module name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, DTSSLIF) and m.dtss is not None and (groups is None or m.group in groups)}


def mask_steps(model: nn.Module, groups: tuple[str, ...]) -> torch.Tensor:
    """sum_{l in groups} sum_t TM_l[t] (differentiable through the straight-through surrogate)."""
    layers = gated_layers(model, groups)
    if not layers:
        return torch.zeros(())
    return torch.stack([m.dtss.mask().sum() for m in layers.values()]).sum()


def mask_loss(model: nn.Module, lambda_m: float, groups: tuple[str, ...] = DEFAULT_MASK_GROUPS) -> torch.Tensor:
    """lambda_m * sum_{l in groups} sum_t TM_l[t]."""
    return lambda_m * mask_steps(model, groups)


def tet_loss(step_logits: torch.Tensor, targets: torch.Tensor, lam: float = 1e-3, phi: float = 1.0,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """TET loss of per-step logits ``[T, B, K]`` and labels ``[B]`` (Deng et al. 2022, Eq. 10-11):
    ``(1 - lam) * mean_t CE(O_t, y) + lam * mean((O - phi)^2)``.  lam = 1e-3 and phi = 1 are the TET
    paper's defaults."""
    steps = step_logits.shape[0]
    ce = F.cross_entropy(step_logits.flatten(0, 1).float(), targets.repeat(steps), label_smoothing=label_smoothing)
    if lam == 0:
        return ce
    mse = (step_logits.float() - phi).square().mean()
    return (1.0 - lam) * ce + lam * mse


def track_hoyer(model: nn.Module, flag: bool = True) -> int:
    """Make every LIF layer of ``model`` record its Hoyer term in training; returns how many layers."""
    layers = [m for m in model.modules() if isinstance(m, DTSSLIF)]
    for m in layers:
        m.track_hoyer = flag
    return len(layers)


def hoyer_terms(model: nn.Module) -> torch.Tensor:
    """sum_l H(clip(U_l / Vth, 0, 1)) over the LIF layers of the last training forward (see :func:`track_hoyer`)."""
    terms = [m.hoyer for m in model.modules() if isinstance(m, DTSSLIF) and m.hoyer is not None]
    if not terms:
        raise SpikevitError("no Hoyer terms recorded: call track_hoyer(model) and run a training-mode forward")
    return torch.stack(terms).sum()
