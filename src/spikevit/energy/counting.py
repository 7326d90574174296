"""Operation counting for ANN and spiking layers.

``count_layer_ops`` runs a model once with forward hooks on its Linear / Conv
layers (a table of per-module rules, replaceable) and returns MACs and input
sizes per layer.  Spiking variants scale the dense count by the measured input
spike rate (SIT-conversion / DTS: FLOPs_SNN = FLOPs_ANN * spikes / neurons).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LayerOps:
    """Per-layer dense MACs and the number of input elements (neurons) seen."""

    name: str
    kind: str
    macs: int = 0
    inputs: int = 0
    nonzero_inputs: int = 0
    calls: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def input_rate(self) -> float:
        """Fraction of non-zero inputs (spike rate when inputs are spikes)."""
        return self.nonzero_inputs / self.inputs if self.inputs else 0.0


def _linear_macs(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> int:
    return int(y.numel() // y.shape[-1]) * m.in_features * m.out_features


def _conv_macs(m: nn.modules.conv._ConvNd, x: torch.Tensor, y: torch.Tensor) -> int:
    kernel = int(torch.tensor(m.kernel_size).prod())
    return int(y.numel()) * (m.in_channels // m.groups) * kernel


OP_RULES: dict[type, Callable] = {nn.Linear: _linear_macs, nn.Conv1d: _conv_macs,
                                 nn.Conv2d: _conv_macs, nn.Conv3d: _conv_macs}


def count_layer_ops(model: nn.Module, *inputs, rules: dict[type, Callable] | None = None,
                    **kwargs) -> dict[str, LayerOps]:
    """Run ``model(*inputs)`` once and count dense MACs per Linear/Conv layer."""
    rules = rules or OP_RULES
    ops: dict[str, LayerOps] = {}
    handles = []
    for name, mod in model.named_modules():
        rule = next((r for t, r in rules.items() if type(mod) is t), None)
        if rule is None:
            continue

        def hook(m, args, out, name=name, rule=rule):
            x = args[0]
            rec = ops.setdefault(name, LayerOps(name, type(m).__name__))
            rec.macs += rule(m, x, out)
            rec.inputs += x.numel()
            rec.nonzero_inputs += int((x != 0).sum())
            rec.calls += 1

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return ops


def snn_flops(ann_flops: float, spikes: float, neurons: float) -> float:
    """FLOPs_SNN = FLOPs_ANN * spikes / neurons (SIT-conversion Eq. 17, DTS Sec. IV-E)."""
    return ann_flops * (spikes / neurons) if neurons else 0.0
