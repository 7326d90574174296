"""Spike-coded operands for fully spiking conversion: :class:`SpikeEncoder` (calibrated signed neurons)
and the products that consume spikes (:func:`spike_linear`, :func:`spike_conv`, :func:`spike_matmul`).

A :class:`SpikeCode` is what a layer of neurons hands to the next product::

    x_hat = sum_l coef[l] * spikes[l] * scale        (scale broadcast along ``channel_dim`` of x)

* ``spikes: [L, *x.shape]``: for rate coding the spike **counts** of the positive and the negative IF
  neuron of each signed pair (``L = 2``, integers 0..T); for few-spike coding the **binary** spike
  trains, ``L = 2K`` (K steps x sign) or ``L = K`` (a few-spike activation's own spikes);
* ``coef: [L]`` the weight of each slice (+-1 for rate, +-2^-t for few-spike, d[t] for activations);
* ``scale``: the per-channel step (``theta / T`` or ``theta``), ``None`` for 1.

The products run the layer **once on all L slices stacked in the leading dimension**, so the operator
sees a tensor of spikes (0/1) or spike counts (0..T), and the per-channel scale is folded into the other
operand (the weights, or the analog side of a matmul).  The decoding ``sum_l coef[l] y[l]`` is done on
the product's output (linear in the spikes: it is what the receiving neurons' membranes integrate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.errors import SpikevitError, require
from spikevit.functional.coding import fewspike_identity_bits, if_rate_counts, qcfs_counts, signed_pair

CODINGS = ("rate", "fewspike")
THETA_MIN = 1e-6          # learned thresholds are kept at least this large


@dataclass
class SpikeCode:
    """Spikes ``[L, *shape]``, slice weights ``coef [L]``, per-channel ``scale [C]`` on ``channel_dim``."""

    spikes: torch.Tensor
    coef: torch.Tensor
    scale: torch.Tensor | None = None
    channel_dim: int = -1
    signed_pair: bool = False        # L = 2 with coef (1, -1) (rate coding)

    def _scale_shape(self, ndim: int) -> list[int]:
        shape = [1] * ndim
        shape[self.channel_dim] = -1
        return shape

    def combine(self, y: torch.Tensor) -> torch.Tensor:
        """``sum_l coef[l] y[l]``: ``y: [L, *]`` -> ``[*]`` (elementwise multiply-add, no product op)."""
        if self.signed_pair:                     # coef = (1, -1): positive minus negative neuron
            return y[0] - y[1]
        return (self.coef.to(y.dtype).reshape(-1, *([1] * (y.dim() - 1))) * y).sum(0)

    def decode(self) -> torch.Tensor:
        """The value the spikes stand for: ``[*shape]``."""
        x = self.combine(self.spikes)
        if self.scale is not None:
            x = x * self.scale.reshape(self._scale_shape(x.dim()))
        return x


class SpikeEncoder(nn.Module):
    """A layer of signed spiking neurons with per-channel thresholds, calibrated on data.

    Args:
        coding: ``"rate"`` (IF neurons, spike counts over ``steps``) or ``"fewspike"`` (binary-weighted
            few-spike identity neurons, ``steps`` = K).
        steps: T (rate) or K (few-spike).
        channel_dim: dimension of the input holding the channels that get their own threshold.
        name: label for reports.

    ``forward(x)`` returns the spikes ``[L, *x.shape]`` (what the neurons emit; the tensor carries its
    :class:`SpikeCode` as ``._spike_code``); :meth:`encode` returns the :class:`SpikeCode`.
    ``last_spikes`` / ``last_neurons`` hold the spikes (all steps, both signs) and the neurons
    (``x.numel()``, one signed pair per value) of the last call.
    Calibration: with ``calibrating = True`` the input passes through unchanged (``encode`` returns None)
    while per-channel ``max |x|`` and a sample are recorded; :meth:`finish_calibration` sets ``theta``.

    Quantisation-aware training (rate coding, :meth:`make_quantisation_aware`): ``theta`` becomes a
    learnable parameter and, with autograd on, the code carries gradients: one slice ``L = 1`` holding the
    signed counts ``n+ - n-`` with a straight-through gradient (:func:`~spikevit.functional.coding.qcfs_counts`)
    and the scale ``theta / T`` (the QCFS / LSQ threshold gradient); its decoded value is the one of the two
    IF neurons' counts, and a product on it differs from the product on the two neurons' counts by float
    rounding only.  With autograd off (evaluation) the neurons themselves run, so the model computes
    exactly what its conversion computes.  :meth:`freeze` turns the learned thresholds back into buffers.
    """

    def __init__(self, coding: str = "rate", steps: int = 12, channel_dim: int = -1, name: str = ""):
        super().__init__()
        if coding not in CODINGS:
            raise SpikevitError(f"unknown spike coding {coding!r}; choose from {list(CODINGS)}")
        require(isinstance(steps, int) and steps >= 1, f"coding steps must be an integer >= 1, got {steps!r}")
        self.coding, self.steps, self.channel_dim, self.name = coding, steps, channel_dim, name
        self.register_buffer("theta", torch.empty(0))
        self.calibrating = False
        self._amax: torch.Tensor | None = None
        self._sample: list[torch.Tensor] = []
        self.clip_fraction = float("nan")
        self.last_spikes = 0.0
        self.last_neurons = 0
        self.quantisation_aware = False

    # -- quantisation-aware training -----------------------------------------------------------------------
    def make_quantisation_aware(self) -> None:
        """Learnable thresholds (initialised by calibration) and straight-through gradients (rate coding)."""
        require(self.coding == "rate", f"{self.name or 'spike encoder'}: quantisation-aware training is defined "
                f"for rate coding (coding={self.coding!r})")
        require(self.calibrated, f"{self.name or 'spike encoder'}: calibrate the neurons before making them "
                "quantisation-aware (their thresholds start from the calibration)")
        if not self.quantisation_aware:
            theta = self.theta.detach().clone()
            del self._buffers["theta"]
            self.theta = nn.Parameter(theta)
            self.quantisation_aware = True

    def freeze(self) -> None:
        """Back to spiking neurons: the learned thresholds (kept > 0) become the buffer ``theta``."""
        if self.quantisation_aware:
            theta = self.theta.detach().clamp_min(THETA_MIN).clone()
            del self._parameters["theta"]
            self.register_buffer("theta", theta)
            self.quantisation_aware = False

    # -- calibration -------------------------------------------------------------------------------------
    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().movedim(self.channel_dim, -1).reshape(-1, x.shape[self.channel_dim])

    def observe(self, x: torch.Tensor) -> None:
        """Record per-channel ``max |x|`` and up to 4096 rows of ``x`` (channels last)."""
        rows = self._channels_last(x)
        amax = rows.abs().amax(0)
        if self._amax is not None and self._amax.shape != amax.shape:
            raise SpikevitError(f"{self.name or 'spike encoder'}: calibration inputs change the number of "
                                f"channels ({self._amax.numel()} -> {amax.numel()})")
        self._amax = amax if self._amax is None else torch.maximum(self._amax, amax)
        have = sum(s.shape[0] for s in self._sample)
        if have < 4096:
            step = max(1, rows.shape[0] // 1024)
            self._sample.append(rows[::step][: 4096 - have].cpu())

    def finish_calibration(self, grid: int = 16) -> None:
        """``theta = alpha * max|x|`` per channel; ``alpha`` in (0.1, 1] minimises the coding error on the
        recorded sample (one alpha for the whole layer, grid search)."""
        require(self._amax is not None, f"{self.name or 'spike encoder'}: no calibration data reached this layer")
        amax = self._amax.cpu().clamp_min(1e-8)
        sample = torch.cat(self._sample)
        best = (float("inf"), 1.0)
        for alpha in torch.linspace(0.1, 1.0, grid).tolist():
            theta = alpha * amax
            err = float((self._code_value(sample, theta) - sample).pow(2).mean())
            if err < best[0]:
                best = (err, alpha)
        self.theta = (best[1] * amax).to(self._amax.device)
        self.clip_fraction = best[1]
        self._amax, self._sample, self.calibrating = None, [], False

    def _code_value(self, rows: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Decoded value of channels-last ``rows`` under thresholds ``theta`` (calibration search)."""
        pair = signed_pair(rows)
        if self.coding == "rate":
            q = if_rate_counts(pair, theta, self.steps) * (theta / self.steps)
        else:
            q = 2.0 ** self.steps
            q = theta * torch.floor(pair / theta * q + 0.5).clamp(0, q - 1) / q
        return q[0] - q[1]

    @property
    def calibrated(self) -> bool:
        return self.theta.numel() > 0

    # -- coding --------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> SpikeCode | None:
        """The :class:`SpikeCode` of ``x`` (None while calibrating: ``x`` is only observed)."""
        out = self(x)
        return None if self.calibrating else out._spike_code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
            return x
        require(self.calibrated, f"{self.name or 'spike encoder'}: neurons have no thresholds; convert with "
                "calibration= (model inputs or a DataLoader)")
        C = x.shape[self.channel_dim]
        require(C == self.theta.numel(), f"{self.name or 'spike encoder'}: input has {C} channels, the neurons "
                f"were calibrated for {self.theta.numel()}")
        shape = [1] * x.dim()
        shape[self.channel_dim] = C
        if self.quantisation_aware and torch.is_grad_enabled():
            return self._quantisation_aware(x, shape)
        theta = self.theta.to(x.dtype).reshape(shape)
        if self.coding == "rate":
            # counts of the positive and the negative IF neuron (closed form of if_rate_counts on x and -x)
            u = x.detach() * (self.steps / theta)             # spikes carry no gradient (Heaviside)
            spikes = torch.empty((2, *x.shape), dtype=x.dtype, device=x.device)
            torch.floor(u + 0.5, out=spikes[0])
            torch.floor(0.5 - u, out=spikes[1])
            spikes.clamp_(0, self.steps)                       # [2, *] counts 0..T
            coef = torch.tensor([1.0, -1.0], device=x.device, dtype=x.dtype)
            scale = self.theta.to(x.dtype) / self.steps
            pair = True
        else:
            K = self.steps
            z = fewspike_identity_bits(signed_pair(x), theta, K)     # [K, 2, *] binary (= the neuron's spikes)
            spikes = z.reshape(2 * K, *x.shape)
            w = torch.pow(2.0, -torch.arange(1, K + 1, device=x.device, dtype=x.dtype))
            coef = torch.stack((w, -w), 1).reshape(2 * K)
            scale = self.theta.to(x.dtype)
            pair = False
        self.last_spikes = float(spikes.sum())
        self.last_neurons = x.numel()
        spikes._spike_code = SpikeCode(spikes, coef, scale, self.channel_dim, pair)
        return spikes

    def _quantisation_aware(self, x: torch.Tensor, shape: list[int]) -> torch.Tensor:
        """Signed counts ``[1, *x.shape]`` with straight-through gradients, scale ``theta / T`` (learnable)."""
        theta = self.theta.clamp_min(THETA_MIN).to(x.dtype)
        n = qcfs_counts(x, theta.reshape(shape), self.steps).unsqueeze(0)
        coef = torch.ones(1, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            self.last_spikes = float(n.abs().sum())           # one of the pair fires: |n+ - n-| = n+ + n-
        self.last_neurons = x.numel()
        n._spike_code = SpikeCode(n, coef, theta / self.steps, self.channel_dim, False)
        return n

    def extra_repr(self) -> str:
        return f"coding={self.coding}, steps={self.steps}, channel_dim={self.channel_dim}, " \
               f"channels={self.theta.numel()}, alpha={self.clip_fraction:.3g}"


# ----------------------------------------------------------------------------------------------------------
# products with one spike operand
# ----------------------------------------------------------------------------------------------------------
def spike_linear(code: SpikeCode, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x_hat, W, b)`` computed on the spikes: ``spikes [L, *, C_in]`` -> ``[*, C_out]``.

    The input scale (channels = last dim) is folded into the weight's columns.
    """
    require(code.channel_dim in (-1, code.spikes.dim() - 2), "spike_linear needs channels in the last dim")
    w = weight if code.scale is None else weight * code.scale.to(weight.dtype)
    y = code.combine(F.linear(code.spikes.to(w.dtype), w))      # spikes are exact in any float dtype
    return y if bias is None else y + bias


def spike_conv(code: SpikeCode, conv: nn.modules.conv._ConvNd) -> torch.Tensor:
    """``conv(x_hat)`` on the spikes: ``spikes [L, B, C_in, *S]`` -> ``[B, C_out, *S']``.

    The per-input-channel scale (``channel_dim`` = 1 of x) is folded into the kernel (groups respected).
    """
    w = conv.weight
    if code.scale is not None:
        cin_g = w.shape[1]
        out_g = w.shape[0] // conv.groups
        groups_of_out = torch.arange(w.shape[0], device=w.device) // out_g             # [C_out]
        cin_index = groups_of_out[:, None] * cin_g + torch.arange(cin_g, device=w.device)[None]
        s = code.scale.to(w.dtype)[cin_index]                                           # [C_out, C_in/g]
        w = w * s.reshape(*s.shape, *([1] * (w.dim() - 2)))
    L, B = code.spikes.shape[:2]
    y = conv._conv_forward(code.spikes.to(w.dtype).reshape(L * B, *code.spikes.shape[2:]), w, None)
    y = code.combine(y.reshape(L, B, *y.shape[1:]))
    if conv.bias is not None:
        y = y + conv.bias.reshape(1, -1, *([1] * (y.dim() - 2)))
    return y


def spike_matmul_left(code: SpikeCode, b: torch.Tensor) -> torch.Tensor:
    """``x_hat @ b`` with the spikes on the left: ``spikes [L, *, M, K]``, ``b [*, K, N]`` -> ``[*, M, N]``.

    The scale of the spiking side (its last dim, the contraction) is folded into the rows of ``b``.
    """
    if code.scale is not None:
        b = b * code.scale.to(b.dtype)[:, None]
    return code.combine(torch.matmul(code.spikes.to(b.dtype), b))


def spike_matmul_right(a: torch.Tensor, code: SpikeCode) -> torch.Tensor:
    """``a @ x_hat`` with the spikes on the right: ``a [*, M, K]``, ``spikes [L, *, K, N]`` -> ``[*, M, N]``.

    The scale of the spiking side (its last dim, N) multiplies the output columns.
    """
    y = code.combine(torch.matmul(a, code.spikes.to(a.dtype)))
    return y if code.scale is None else y * code.scale.to(y.dtype)


# ----------------------------------------------------------------------------------------------------------
# layers whose input is spike-coded
# ----------------------------------------------------------------------------------------------------------
class SpikingLinear(nn.Module):
    """An ``nn.Linear`` (shared parameters) whose input arrives as spikes.

    The input is coded by ``encoder``, unless it already carries the spikes of a few-spike activation
    (``x._spike_code``, set by :class:`~spikevit.nn.spiking_softmax.FewSpikeActivation`): those are used
    directly.  ``[*, C_in]`` -> ``[*, C_out]``.
    """

    def __init__(self, linear: nn.Linear, encoder: SpikeEncoder | None):
        super().__init__()
        self.linear, self.encoder = linear, encoder

    weight = property(lambda self: self.linear.weight)      # code that reads the layer's parameters still works
    bias = property(lambda self: self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = getattr(x, "_spike_code", None)
        if code is None:
            require(self.encoder is not None, "spiking linear layer: its input should be spikes of a few-spike "
                    "activation (calibrated so) but is an analog tensor")
            code = self.encoder.encode(x)
            if code is None:                             # calibrating: the encoder passed x through
                return self.linear(x)
        return spike_linear(code, self.linear.weight, self.linear.bias)


class SpikingConv(nn.Module):
    """An ``nn.Conv1d/2d/3d`` (shared parameters) whose input arrives as spikes (per-channel thresholds).

    ``[B, C_in, *S]`` -> ``[B, C_out, *S']``.
    """

    def __init__(self, conv: nn.modules.conv._ConvNd, encoder: SpikeEncoder | None):
        super().__init__()
        self.conv, self.encoder = conv, encoder

    weight = property(lambda self: self.conv.weight)
    bias = property(lambda self: self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = getattr(x, "_spike_code", None)
        if code is None or code.spikes.dim() != x.dim() + 1:
            require(self.encoder is not None, "spiking convolution: its input should be spikes of a few-spike "
                    "activation (calibrated so) but is an analog tensor")
            code = self.encoder.encode(x)
            if code is None:
                return self.conv(x)
        return spike_conv(code, self.conv)
