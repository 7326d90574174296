"""Multi-step LIF module: a thin holder of defaults over :func:`spikevit.functional.neurons.lif_multistep`."""
from __future__ import annotations

import torch
from torch import nn

from spikevit.functional.neurons import lif_multistep, triangle_spike


class LIF(nn.Module):
    """Multi-step LIF (soft reset, triangular surrogate). ``[T, B, ...] -> [T, B, ...]`` spikes in {0, Vth}.

    H[t] = leak U[t-1] + x[t];  O[t] = Vth H(H[t] - Vth);  U[t] = H[t] - O[t];
    dO/dH = gamma / Vth max(0, 1 - |H/Vth - 1|).
    """

    def __init__(self, leak: float = 0.5, vth: float = 1.0, gamma: float = 1.0, detach_reset: bool = False):
        super().__init__()
        self.leak, self.vth, self.gamma, self.detach_reset = float(leak), float(vth), float(gamma), detach_reset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lif_multistep(x, self.leak, self.vth, self.gamma, spike_fn=triangle_spike,
                             detach_reset=self.detach_reset)

    def extra_repr(self) -> str:
        return f"leak={self.leak}, vth={self.vth}, gamma={self.gamma}, detach_reset={self.detach_reset}"
