"""Straight-through training wrappers of the converted model's few-spike neurons (quantisation-aware
fine-tuning before conversion, :func:`spikevit.conversion.quantisation_aware`).

The spiking softmax (SI-exp + SI-norm) and the few-spike activations are piecewise constant in their
inputs (their gradient is zero almost everywhere).  :class:`StraightThrough` keeps their forward value
exactly and takes the gradient of the function they approximate::

    out = spiking(x) + (exact(x) - exact(x).detach())         # value: spiking(x); gradient: d exact / dx

so a model fine-tuned through them computes, in its forward pass, what the converted model computes.
Shapes: ``[*]`` -> ``[*]``.
"""
from __future__ import annotations

import torch
from torch import nn

from spikevit.errors import require
from spikevit.nn.spiking_softmax import EXACT_FUNCTIONS, FewSpikeActivation, SpikingSoftmax



def exact_softmax(m: SpikingSoftmax, x: torch.Tensor) -> torch.Tensor:
    """``softmax(s(x))`` along ``m.dim``: what the spiking softmax ``m`` approximates (``s``: its squeeze)."""
    xf = x.float()
    s = m._squeeze(xf) if m._squeeze is not None else xf
    return torch.softmax(s, m.dim).to(x.dtype)


class StraightThrough(nn.Module):
    """A :class:`SpikingSoftmax` or :class:`FewSpikeActivation` whose gradient is the exact function's.

    ``forward(x) = spiking(x) + (exact(x) - exact(x).detach())``: the spiking module's value, the exact
    function's gradient.  Without autograd (``torch.no_grad`` or an input that needs no gradient) only the
    spiking module runs.  ``spiking`` keeps its spike statistics (``last_spikes``, ``last_neurons``).
    """

    def __init__(self, spiking: nn.Module):
        super().__init__()
        require(isinstance(spiking, (SpikingSoftmax, FewSpikeActivation)),
                f"straight-through training wraps a SpikingSoftmax or FewSpikeActivation, got {type(spiking).__name__}")
        if isinstance(spiking, FewSpikeActivation):
            require(spiking.function in EXACT_FUNCTIONS, f"no exact function for few-spike activation {spiking.function!r}")
        self.spiking = spiking

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.spiking, SpikingSoftmax):
            return exact_softmax(self.spiking, x)
        return EXACT_FUNCTIONS[self.spiking.function](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.spiking(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return out
        e = self.exact(x)
        return out + (e - e.detach())

    @property
    def last_spikes(self):
        return self.spiking.last_spikes

    @property
    def last_neurons(self):
        return self.spiking.last_neurons


def unwrap_straight_through(net: nn.Module) -> nn.Module:
    """Replace every :class:`StraightThrough` under ``net`` by the spiking module it wraps (in place)."""
    for name, m in list(net.named_modules()):
        if isinstance(m, StraightThrough) and name:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, m.spiking)
    return net
