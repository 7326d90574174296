"""``SpikingSoftmax`` (SI-exp + SI-norm neurons) and few-spike activations, thin modules over
:mod:`spikevit.functional.fewspike`.

Both keep the spike statistics of their last forward pass (``last_spikes``: spikes summed over
neurons and time steps, ``last_neurons``: number of neurons, i.e. input elements) so that forward
hooks (:class:`spikevit.conversion.SpikeCounter`) can accumulate spikes per layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.errors import SpikevitError, require
from spikevit.functional.fewspike import fs_lookup, fs_neuron_with_count, fs_pieces, fs_spikes, si_norm_fast
from spikevit.nn.spike_coding import SpikeCode

SQUEEZES = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}
# the elementwise functions a few-spike neuron is fitted to (the fitter's targets)
EXACT_FUNCTIONS = {"exp": torch.exp, "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu}


def _squeeze_fn(squeeze: str | None):
    if squeeze in (None, "none"):
        return None
    if squeeze not in SQUEEZES:
        raise SpikevitError(f"unknown squeeze {squeeze!r}; choose from None, {sorted(SQUEEZES)}")
    return SQUEEZES[squeeze]


def _fs_fast(m: nn.Module, x: torch.Tensor, total: bool = False) -> tuple[torch.Tensor, torch.Tensor | float]:
    """``(out, spike count)`` of module ``m``'s few-spike neuron (buffers ``T, h, d``) on ``x``: by table lookup
    of its pieces (:func:`fs_pieces`, cached per parameter values), else step by step.  ``total``: the
    second value is the spike count of all inputs together (float)."""
    key = (m.T.data_ptr(), m.h.data_ptr(), m.d.data_ptr(), m.T._version, m.h._version, m.d._version)
    if getattr(m, "_pieces_key", None) != key:
        m._pieces, m._pieces_key = fs_pieces(m.T, m.h, m.d), key
    if m._pieces is None:
        out, count = fs_neuron_with_count(x, m.T, m.h, m.d)
        return (out, float(count.sum())) if total else (out, count)
    return fs_lookup(x, m._pieces, total=total)


class SpikingSoftmax(nn.Module):
    """Drop-in replacement of ``softmax(x, dim)`` by the SIT spiking softmax (paper Eq. 1).

    ``exp_i = SI-exp(s(x_i))`` (K-step few-spike neuron fitted to exp on [-1, 1]),
    ``Vth = sum_j exp_j``, ``out_i = SI-norm(exp_i, Vth)``.

    Args:
        steps: K, time steps of the SI-exp neurons (shipped fits: 4..16).
        dim: softmax dimension.
        squeeze: optional range restriction ``s`` of the inputs, ``None``, ``"sigmoid"`` (the paper's,
            into (0, 1)) or ``"tanh"`` (into (-1, 1)); the SI-exp neuron is only fitted on [-1, 1].
        norm_steps: ``None`` for the real-valued SI-norm output (paper Eq. 10), or the number of
            SI-norm time steps (output quantised to multiples of ``1/norm_steps``).
        params: ``{"T", "h", "d"}`` to use instead of the shipped fit.

    Entries equal to ``-inf`` (masked attention) get 0.  Shapes: ``[*]`` -> ``[*]``.
    """

    def __init__(self, steps: int = 12, dim: int = -1, squeeze: str | None = None,
                 norm_steps: int | None = None, params: dict | None = None):
        super().__init__()
        if params is None:
            from spikevit.nn.fewspike_params import si_exp_parameters

            params = si_exp_parameters(steps)
        require(params["T"].numel() == steps, f"params have {params['T'].numel()} steps, expected {steps}")
        require(norm_steps is None or norm_steps >= 1, f"norm_steps must be >= 1 or None, got {norm_steps}")
        self.steps, self.dim, self.squeeze, self.norm_steps = steps, dim, squeeze, norm_steps
        self._squeeze = _squeeze_fn(squeeze)
        for name in ("T", "h", "d"):
            self.register_buffer(name, torch.as_tensor(params[name], dtype=torch.float32).clone())
        self.last_spikes = 0.0
        self.last_neurons = 0
        self.last_norm_spikes = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        masked = torch.isneginf(xf)
        s = self._squeeze(xf) if self._squeeze is not None else xf
        if masked.any():                 # masked entries (-inf) emit nothing
            e, count = _fs_fast(self, s)
            e = e.masked_fill(masked, 0.0)
            spikes = float(count.masked_fill(masked, 0.0).sum())
        else:
            e, spikes = _fs_fast(self, s, total=True)
        vth = e.sum(self.dim, keepdim=True)
        ok = vth > 0
        out = si_norm_fast(e, torch.where(ok, vth, torch.ones_like(vth)), self.norm_steps)
        out = torch.where(ok, out, torch.zeros_like(out))
        self.last_spikes = spikes
        self.last_neurons = x.numel()
        self.last_norm_spikes = None if self.norm_steps is None else float((out * self.norm_steps).round().sum())
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f"steps={self.steps}, dim={self.dim}, squeeze={self.squeeze}, norm_steps={self.norm_steps}"


class FewSpikeActivation(nn.Module):
    """Elementwise activation (GELU, SiLU, sigmoid, exp) computed by a fitted K-step few-spike neuron.

    Inputs outside the neuron's domain saturate (its output is bounded).  ``[*]`` -> ``[*]``.
    With ``hand_over_spikes = True`` the output tensor carries its spike train (``out._spike_code``, a
    :class:`~spikevit.nn.spike_coding.SpikeCode` of ``[K, *]`` binary spikes with weights ``d``) so that
    the next linear layer or convolution computes on the spikes themselves.

    Calibration (as :class:`~spikevit.nn.spike_coding.SpikeEncoder`): with ``calibrating = True`` the
    inputs are recorded (their extremes and a seeded random sample of up to ``SAMPLE_SIZE`` values) and the
    exact function is passed on (with ``hand_over_spikes`` the neuron's spikes, which the next layer needs);
    :func:`spikevit.conversion.fitting.fit_activations` then fits the neuron to the recorded inputs and
    installs it with :meth:`set_neuron` (``calibration`` holds what it measured).
    """

    SAMPLE_SIZE = 1 << 16

    def __init__(self, function: str, steps: int = 12, params: dict | None = None):
        super().__init__()
        require(function in EXACT_FUNCTIONS, f"unknown function {function!r} for a few-spike activation; "
                f"choose from {sorted(EXACT_FUNCTIONS)}")
        if params is None:
            from spikevit.nn.fewspike_params import few_spike_parameters

            params = few_spike_parameters(function, steps)
        self.function, self.steps = function, steps
        self.domain = tuple(params.get("domain", (float("nan"), float("nan"))))
        for name in ("T", "h", "d"):
            self.register_buffer(name, torch.as_tensor(params[name], dtype=torch.float32).clone())
        self.last_spikes = 0.0
        self.last_neurons = 0
        self.hand_over_spikes = False
        self.calibrating = False
        self.calibration: dict | None = None      # set by set_neuron: what the fit to the recorded inputs measured
        self._sample: list[torch.Tensor] = []
        self._sample_size = 0
        self._sample_gen: torch.Generator | None = None

    # -- calibration -------------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        """Record ``x``'s minimum and maximum and a seeded random subset of its values (``SAMPLE_SIZE`` in all)."""
        flat = x.detach().reshape(-1)
        if flat.numel() == 0:
            return
        if self._sample_gen is None:
            self._sample_gen = torch.Generator().manual_seed(0)
        self._sample.append(torch.stack([flat.min(), flat.max()]).float().cpu())
        room = self.SAMPLE_SIZE - self._sample_size
        if room > 0:
            n = min(room, self.SAMPLE_SIZE // 4, flat.numel())
            idx = torch.randint(flat.numel(), (n,), generator=self._sample_gen).to(flat.device)
            self._sample.append(flat.index_select(0, idx).float().cpu())
            self._sample_size += n

    def take_sample(self) -> torch.Tensor | None:
        """The recorded inputs ``[N]`` (None if nothing was recorded); clears the record."""
        out = torch.cat(self._sample) if self._sample else None
        self._sample, self._sample_size, self._sample_gen = [], 0, None
        return out

    def set_neuron(self, T: torch.Tensor, h: torch.Tensor, d: torch.Tensor, domain: tuple[float, float],
                   calibration: dict | None = None) -> None:
        """Install new neuron parameters (``[K]`` each, same K)."""
        require(T.numel() == h.numel() == d.numel() == self.steps,
                f"few-spike activation: new parameters must have {self.steps} steps, got {T.numel()}")
        for name, v in (("T", T), ("h", h), ("d", d)):
            getattr(self, name).copy_(v.detach().flatten().to(getattr(self, name)))
        self.domain = tuple(float(v) for v in domain)
        self.calibration = calibration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
            if not self.hand_over_spikes:      # like the encoders: values pass through while calibrating
                self.last_spikes, self.last_neurons = 0.0, 0
                return EXACT_FUNCTIONS[self.function](x)
        if self.hand_over_spikes:
            z = fs_spikes(x.float(), self.T, self.h)                       # [K, *] binary
            code = SpikeCode(z, self.d, None, -1)
            out = code.decode().to(x.dtype)
            out._spike_code = code           # a following SpikingLinear / SpikingConv consumes the spikes
            self.last_spikes = float(z.sum())
        else:
            out, spikes = _fs_fast(self, x.float(), total=True)
            out = out.to(x.dtype)
            self.last_spikes = spikes
        self.last_neurons = x.numel()
        return out

    def extra_repr(self) -> str:
        dom = ", ".join(f"{v:.4g}" for v in self.domain)
        return f"function={self.function}, steps={self.steps}, domain=({dom})"
