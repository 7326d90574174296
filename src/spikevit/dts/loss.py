"""Mask loss (DTS-SNN Eq. 8): L_mask = lambda_m * sum_{l in chosen groups} sum_t TM_l[t]."""
from __future__ import annotations

import torch
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
