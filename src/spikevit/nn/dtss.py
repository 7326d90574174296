"""Dynamic time-step spiking: the DTSS gate and the DTSS-wrapped LIF layer (DTS-SNN Sec. III-A)."""
from __future__ import annotations

import torch
from torch import nn

from spikevit.errors import require
from spikevit.functional.dts import (default_init_steps, hoyer_square, init_time_params, kept_steps, time_mask,
                                     time_scores)
from spikevit.functional.neurons import lif_multistep, triangle_spike
from spikevit.nn.lif import LIF
from spikevit.validation import non_negative_int, positive_int


class DTSS(nn.Module):
    """Trainable time-step mask. ``mask()`` -> TM ``[tmax]`` (0/1, a prefix of ones, differentiable through
    the straight-through surrogate); ``forward(y)`` with y ``[tmax, B, ...]`` returns ``y * TM[t]``.

    TP (``self.tp``) starts so that TM is the first ``init_steps`` ones; TS = |TP| @ coeff keeps TM a
    prefix for any TP.  ``min_steps`` forces the first steps on.  Masked steps of the output are exactly
    zero, even where ``y`` is NaN or infinite there.
    """

    def __init__(self, tmax: int, init_steps: int, min_steps: int = 0):
        super().__init__()
        tmax = positive_int(tmax, "tmax")
        init_steps, min_steps = non_negative_int(init_steps, "init_steps"), non_negative_int(min_steps, "min_steps")
        require(init_steps <= tmax, f"init_steps must lie in [0, tmax={tmax}], got {init_steps}")
        require(min_steps <= tmax, f"min_steps must lie in [0, tmax={tmax}], got {min_steps}")
        self.tmax, self.init_steps, self.min_steps = tmax, init_steps, min_steps
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
        tm = self.mask().to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        # y * TM alone lets NaN / inf through masked steps (NaN * 0 = NaN).  Masked entries are made finite
        # first; dO/dTM = y there (Eq. 10) stays finite, and dO/dy = TM = 0.
        y = torch.where(tm.detach() > 0, y, torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0))
        return y * tm

    def extra_repr(self) -> str:
        return f"tmax={self.tmax}, init_steps={self.init_steps}, min_steps={self.min_steps}"


class DTSSLIF(nn.Module):
    """A LIF layer followed by a DTSS gate (Eq. 7: O = SN(W O_{l-1}) * TM), tagged with a layer ``group``.

    x: ``[tmax, B, ...]`` input currents.  In training (or with ``skip_masked=False``) the LIF runs all
    steps and the output ``[tmax, B, ...]`` is masked.  In eval mode with ``skip_masked`` only the kept
    T_l steps are computed and the output is ``[T_l, B, ...]``: the masked steps cost nothing here, and a
    consumer of the output processes only T_l steps.  ``dts=False`` gives a plain fixed-T LIF (all steps).
    ``init_steps`` (default :func:`~spikevit.functional.dts.default_init_steps`) is the gate's initial T_l.

    ``track_hoyer``: in training, also keep ``self.hoyer`` = H(clip(H_pre / Vth, 0, 1)) over the kept steps
    (:func:`~spikevit.functional.dts.hoyer_square` of the pre-spike potentials H_pre[t] = leak U[t-1] + x[t],
    with its graph), the per-layer term of the Hoyer regulariser.
    """

    def __init__(self, tmax: int, init_steps: int | None = None, group: str = "", dts: bool = True,
                 leak: float = 0.5, vth: float = 1.0, gamma: float = 1.0, min_steps: int = 0,
                 detach_reset: bool = False):
        super().__init__()
        self.tmax, self.group = positive_int(tmax, "tmax"), group
        self.lif = LIF(leak, vth, gamma, detach_reset)
        init_steps = default_init_steps(self.tmax) if init_steps is None else init_steps
        self.dtss = DTSS(tmax, init_steps, min_steps) if dts else None
        self.skip_masked = True
        self.track_hoyer = False
        self.hoyer: torch.Tensor | None = None

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
            return self._spikes(x)
        if self.skip_masked and not self.training:
            return self.lif(x[: self.steps()])
        return self.dtss(self._spikes(x))

    def _spikes(self, x: torch.Tensor) -> torch.Tensor:
        """LIF spikes ``[tmax, B, ...]``; records the Hoyer term when asked to (training only)."""
        if not (self.track_hoyer and self.training):
            self.hoyer = None
            return self.lif(x)
        lif = self.lif
        o, u = lif_multistep(x, lif.leak, lif.vth, lif.gamma, spike_fn=triangle_spike,
                             detach_reset=lif.detach_reset, return_potential=True)
        h = x + lif.leak * torch.cat([torch.zeros_like(u[:1]), u[:-1]])      # pre-spike potentials
        h = h[: self.steps()]
        h = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h      # sums in fp32 at least
        self.hoyer = hoyer_square((h / lif.vth).clamp(0.0, 1.0))
        return o

    def extra_repr(self) -> str:
        return f"group={self.group!r}, tmax={self.tmax}"
