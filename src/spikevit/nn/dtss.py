"""Dynamic time-step spiking: the DTSS gate and the DTSS-wrapped LIF layer (DTS-SNN Sec. III-A)."""
from __future__ import annotations

import torch
from torch import nn

from spikevit.errors import require
from spikevit.functional.dts import init_time_params, kept_steps, time_mask, time_scores
from spikevit.nn.lif import LIF


class DTSS(nn.Module):
    """Trainable time-step mask. ``mask()`` -> TM ``[tmax]`` (0/1, a prefix of ones, differentiable through
    the straight-through surrogate); ``forward(y)`` with y ``[tmax, B, ...]`` returns ``y * TM[t]``.

    TP (``self.tp``) starts so that TM is the first ``init_steps`` ones; TS = |TP| @ coeff keeps TM a
    prefix for any TP.  ``min_steps`` forces the first steps on.
    """

    def __init__(self, tmax: int, init_steps: int, min_steps: int = 0):
        super().__init__()
        require(0 <= min_steps <= tmax, f"min_steps must lie in [0, tmax={tmax}], got {min_steps}")
        self.tmax, self.init_steps, self.min_steps = int(tmax), int(init_steps), int(min_steps)
        self.tp = nn.Parameter(init_time_params(self.tmax, self.init_steps))

    def scores(self) -> torch.Tensor:
        """TS ``[tmax]``, non-increasing."""
        return time_scores(self.tp)

    def mask(self) -> torch.Tensor:
        """TM ``[tmax]``."""
        return time_mask(self.tp, self.min_steps)

    def steps(self) -> int:
        """T_l: the number of kept (leading) time steps."""
        with torch.no_grad():
            return kept_steps(self.mask())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        require(y.shape[0] == self.tmax, f"DTSS expects [tmax={self.tmax}, ...] input, got shape {tuple(y.shape)}")
        tm = self.mask().to(y.dtype)
        return y * tm.view(-1, *([1] * (y.dim() - 1)))

    def extra_repr(self) -> str:
        return f"tmax={self.tmax}, init_steps={self.init_steps}, min_steps={self.min_steps}"


class DTSSLIF(nn.Module):
    """A LIF layer followed by a DTSS gate (Eq. 7: O = SN(W O_{l-1}) * TM), tagged with a layer ``group``.

    x: ``[tmax, B, ...]`` input currents.  In training (or with ``skip_masked=False``) the LIF runs all
    steps and the output ``[tmax, B, ...]`` is masked.  In eval mode with ``skip_masked`` only the kept
    T_l steps are computed and the output is ``[T_l, B, ...]``: the masked steps cost nothing here, and a
    consumer of the output processes only T_l steps.  ``dts=False`` gives a plain fixed-T LIF (all steps).
    """

    def __init__(self, tmax: int, init_steps: int | None = None, group: str = "", dts: bool = True,
                 leak: float = 0.5, vth: float = 1.0, gamma: float = 1.0, min_steps: int = 0,
                 detach_reset: bool = False):
        super().__init__()
        self.tmax, self.group = int(tmax), group
        self.lif = LIF(leak, vth, gamma, detach_reset)
        self.dtss = DTSS(tmax, tmax if init_steps is None else init_steps, min_steps) if dts else None
        self.skip_masked = True

    def mask(self) -> torch.Tensor:
        if self.dtss is None:
            return torch.ones(self.tmax)
        return self.dtss.mask()

    def steps(self) -> int:
        return self.tmax if self.dtss is None else self.dtss.steps()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require(x.shape[0] == self.tmax, f"{self.group or 'DTSSLIF'} layer expects [tmax={self.tmax}, ...] "
                                         f"input, got shape {tuple(x.shape)}")
        if self.dtss is None:
            return self.lif(x)
        if self.skip_masked and not self.training:
            return self.lif(x[: self.steps()])
        return self.dtss(self.lif(x))

    def extra_repr(self) -> str:
        return f"group={self.group!r}, tmax={self.tmax}"
