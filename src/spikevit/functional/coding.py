"""Spike coding of analog values for fully spiking conversion: rate-coded IF neurons and few-spike
(binary-weighted) identity neurons, as pure torch functions.

Both codes turn a value ``x`` (one neuron per element) into spikes over ``T`` (rate) or ``K``
(few-spike) time steps, with a per-neuron threshold ``theta`` > 0 (calibrated range):

* **Rate-coded IF neuron** (integrate-and-fire, reset by subtraction, ``v[0] = theta / 2``, constant
  input current ``x`` every step, as MST / QCFS conversions)::

      v[t] = v[t-1] + x;   z[t] = H(v[t] - theta);   v[t] = v[t] - theta * z[t]
      count = sum_t z[t] = clamp(floor(T * x / theta + 1/2), 0, T)                   (closed form)

  decoded as ``count * theta / T``: ``x`` rounded to the grid ``theta / T`` and clipped to [0, theta].
* **Few-spike identity neuron** (the SI-exp / FS-neuron dynamics of :mod:`spikevit.functional.fewspike`
  with the closed-form optimal parameters for the identity on [0, theta): binary weights)::

      T[t] = theta * (2^-t - 2^-(K+1)),  h[t] = d[t] = theta * 2^-t   (t = 1..K)
      out = sum_t d[t] z[t] = theta * clamp(round(x / theta * 2^K), 0, 2^K - 1) * 2^-K

  one spike per set bit of the rounded binary expansion of ``x / theta``.

Signed values use a pair of neurons (``x`` and ``-x``): a positive and a negative spike train.
Shapes: ``x: [*]``, ``theta`` broadcastable to ``x``; spike trains are time-first ``[T, *]``.

* **Training-time activation of the rate code** (signed QCFS quantiser, Bu et al. 2022 / MST, with
  ``L = T`` levels and shift 1/2): :func:`qcfs_quantise` is the decoded value of a signed IF pair,
  ``theta / T * (n+ - n-)`` with ``n+ - n- = clamp(floor(u + 1/2), 0, T) - clamp(floor(1/2 - u), 0, T)``,
  ``u = x T / theta``, i.e. ``x`` rounded to the grid ``theta / T`` and clipped to [-theta, theta].  Its
  gradient is straight-through for ``x`` inside [-theta, theta] and the QCFS / LSQ gradient for the
  threshold: ``dq/dx = 1{|x| <= theta}``, ``dq/dtheta = (n - u) / T`` inside, ``sign(x)`` outside.
"""
from __future__ import annotations

import torch

from spikevit.errors import require
from spikevit.functional.fewspike import fs_neuron, fs_spikes


def if_rate_counts(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """Spike counts of rate-coded IF neurons over ``steps`` steps (closed form). ``x: [*]`` -> ``[*]``.

    ``count = clamp(floor(steps * x / theta + 1/2), 0, steps)`` (equal to :func:`if_rate_simulate`).
    """
    require(steps >= 1, f"rate coding needs steps >= 1, got {steps}")
    return torch.floor(x * (steps / theta) + 0.5).clamp_(0, steps)


def if_rate_simulate(x: torch.Tensor, theta: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step IF neuron (reference): ``(count [*], spike train z [steps, *])``.

    ``v[0] = theta/2``; each step ``v += x``, spike if ``v >= theta``, then ``v -= theta * z``.
    """
    require(steps >= 1, f"rate coding needs steps >= 1, got {steps}")
    theta = torch.as_tensor(theta, dtype=x.dtype).expand_as(x)
    v = theta / 2
    zs = []
    for _ in range(steps):                       # a loop over time steps, not over neurons
        v = v + x
        z = (v >= theta).to(x.dtype)
        v = v - theta * z
        zs.append(z)
    z = torch.stack(zs)
    return z.sum(0), z


def qcfs_counts(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """Signed spike count ``n+ - n-`` (in ``-T..T``) of the rate-coded IF pair of each value, with the
    straight-through gradient of ``u = x T / theta`` where ``|u| <= T`` (zero outside).

    ``x: [*]``, ``theta`` broadcastable to ``x`` (> 0) -> ``[*]``.  The forward value is exactly the integer
    count difference of :func:`if_rate_counts` on ``x`` and ``-x`` (equal to :func:`if_rate_simulate`).
    """
    require(isinstance(steps, int) and steps >= 1, f"rate coding needs steps >= 1, got {steps!r}")
    u = x * (steps / theta)
    ud = u.detach()
    n = torch.floor(ud + 0.5).clamp(0, steps) - torch.floor(0.5 - ud).clamp(0, steps)
    return n + torch.where(ud.abs() <= steps, u - ud, torch.zeros_like(u))


def qcfs_quantise(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """The training-time activation equal to a signed rate-coded IF pair (signed QCFS, ``L = T``, shift 1/2).

    ``theta / T * (n+ - n-)``: ``x`` rounded to the grid ``theta / T``, clipped to [-theta, theta].
    Gradients: ``1{|x| <= theta}`` for ``x``; ``(n - u) / T`` inside and ``sign(x)`` outside for ``theta``
    (``u = x T / theta``, ``n`` the count difference).  ``x: [*]``, ``theta`` broadcastable -> ``[*]``.
    """
    return qcfs_counts(x, theta, steps) * (theta / steps)


def binary_identity_parameters(steps: int, dtype: torch.dtype = torch.float32) -> dict:
    """Few-spike parameters (``T, h, d: [K]``) of the identity on [0, 1) with rounding (binary weights).

    ``T[t] = 2^-t - 2^-(K+1)``, ``h[t] = d[t] = 2^-t``: the neuron emits the bits of
    ``round(x 2^K) 2^-K`` (clipped to [0, 1 - 2^-K]); scale by ``theta`` for the range [0, theta).
    """
    require(steps >= 1, f"few-spike coding needs steps >= 1, got {steps}")
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    w = torch.pow(2.0, -t)
    return {"T": (w - 2.0 ** -(steps + 1)).to(dtype), "h": w.to(dtype), "d": w.to(dtype)}


def fewspike_identity_spikes(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """Binary spike train of the few-spike identity neuron on [0, theta): ``x: [*]`` -> ``z: [K, *]``."""
    p = binary_identity_parameters(steps, x.dtype)
    return fs_spikes(x / theta, p["T"], p["h"])


def fewspike_identity_bits(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """The same spike train in closed form: the bits of ``n = clamp(round(x / theta * 2^K), 0, 2^K - 1)``,
    most significant first (``z[t] = (n >> (K - t)) & 1``).  ``x: [*]`` -> ``z: [K, *]`` (dtype of x)."""
    q = 2 ** steps
    n = torch.floor(x / theta * q + 0.5).clamp_(0, q - 1).to(torch.int64)
    shifts = torch.arange(steps - 1, -1, -1, device=x.device).reshape(-1, *([1] * x.dim()))
    return ((n.unsqueeze(0) >> shifts) & 1).to(x.dtype)


def fewspike_identity(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """Decoded output ``theta * sum_t d[t] z[t]`` of the few-spike identity neuron. ``[*]`` -> ``[*]``."""
    p = binary_identity_parameters(steps, x.dtype)
    return theta * fs_neuron(x / theta, p["T"], p["h"], p["d"])


def fewspike_identity_closed_form(x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    """``theta * clamp(round(x / theta * 2^K), 0, 2^K - 1) / 2^K`` (what the neuron computes)."""
    q = 2.0 ** steps
    return theta * torch.floor(x / theta * q + 0.5).clamp(0, q - 1) / q


def signed_pair(x: torch.Tensor) -> torch.Tensor:
    """``[2, *]``: the inputs of the positive and the negative neuron of each signed pair (``x``, ``-x``)."""
    return torch.stack((x, -x))
