"""Multi-step leaky integrate-and-fire neurons with the triangular surrogate gradient (DTS-SNN Eq. 1-2).

Time is the first axis: inputs ``x`` are ``[T, B, ...]`` currents ``W O_{l-1}[t]``::

    H[t] = leak * U[t-1] + x[t]                 (charge; U[-1] = u0, default 0)
    O[t] = Vth * Heaviside(H[t] - Vth)          (fire: O = Vth if H > Vth else 0)
    U[t] = H[t] - O[t]                          (soft reset)
    dO/dH = gamma / Vth * max(0, 1 - |H/Vth - 1|)   (triangular surrogate, peak gamma / Vth at H = Vth)

``spike_fn`` selects the firing non-linearity: :func:`triangle_spike` (Heaviside forward, surrogate
backward) or :func:`triangle_smooth` (its smooth primitive forward, the same backward), the latter
being the function whose exact derivative the surrogate is, for finite-difference checks.
"""
from __future__ import annotations

from typing import Callable

import torch

from spikevit.errors import require

SpikeFn = Callable[[torch.Tensor, float, float], torch.Tensor]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """1 where ``x > 0`` else 0, in ``x``'s dtype (strict, as Eq. 1's ``H > Vth``)."""
    return (x > 0).to(x.dtype)


def triangle_primitive(h: torch.Tensor, vth: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """gamma * Psi(h / Vth - 1), Psi(z) = 0 (z < -1), (z+1)^2/2 (-1 <= z < 0), 1 - (1-z)^2/2 (0 <= z < 1), 1.

    Its derivative is exactly the triangular surrogate ``gamma / Vth * max(0, 1 - |h/Vth - 1|)``.
    """
    z = (h / vth - 1.0).clamp(-1.0, 1.0)
    return gamma * torch.where(z < 0, 0.5 * (z + 1.0) ** 2, 1.0 - 0.5 * (1.0 - z) ** 2)


def triangle_grad(h: torch.Tensor, vth: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """Surrogate derivative dO/dH = gamma / Vth * max(0, 1 - |h / Vth - 1|)."""
    return (gamma / vth) * (1.0 - (h / vth - 1.0).abs()).clamp_min(0.0)


class TriangleSpike(torch.autograd.Function):
    """Firing with the triangular surrogate gradient; ``smooth=True`` uses the primitive in the forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, vth: float, gamma: float, smooth: bool = False) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.vth, ctx.gamma = vth, gamma
        if smooth:
            return triangle_primitive(h, vth, gamma)
        return vth * heaviside(h - vth)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (h,) = ctx.saved_tensors
        return grad_out * triangle_grad(h, ctx.vth, ctx.gamma), None, None, None


def triangle_spike(h: torch.Tensor, vth: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """O = Vth * H(h - Vth) forward; triangular surrogate backward."""
    return TriangleSpike.apply(h, vth, gamma, False)


def triangle_smooth(h: torch.Tensor, vth: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """The smoothed neuron: primitive forward, the same hand-written backward as :func:`triangle_spike`."""
    return TriangleSpike.apply(h, vth, gamma, True)


def lif_step(x: torch.Tensor, u: torch.Tensor, leak: float = 0.5, vth: float = 1.0, gamma: float = 1.0,
             spike_fn: SpikeFn = triangle_spike, detach_reset: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step. x, u: ``[B, ...]`` -> (O[t], U[t]); see the module docstring."""
    h = leak * u + x
    o = spike_fn(h, vth, gamma)
    return o, h - (o.detach() if detach_reset else o)


def lif_multistep(x: torch.Tensor, leak: float = 0.5, vth: float = 1.0, gamma: float = 1.0,
                  u0: torch.Tensor | None = None, spike_fn: SpikeFn = triangle_spike, detach_reset: bool = False,
                  return_potential: bool = False):
    """Run the LIF over the first axis. x: ``[T, B, ...]`` -> O ``[T, B, ...]``
    (and, with ``return_potential``, the post-reset potentials U ``[T, B, ...]``).

    ``T = 0`` is allowed (a layer whose time steps are all masked off): the result is empty.
    """
    require(x.dim() >= 1, "lif_multistep expects a [T, B, ...] tensor")
    require(vth > 0, f"threshold vth must be > 0, got {vth}")
    u = x.new_zeros(x.shape[1:]) if u0 is None else u0
    outs, pots = [], []
    for xt in x.unbind(0):  # unbind: its backward stacks, where x[t] would scatter into zeros T times
        o, u = lif_step(xt, u, leak, vth, gamma, spike_fn, detach_reset)
        outs.append(o)
        if return_potential:
            pots.append(u)
    o = torch.stack(outs) if outs else torch.empty_like(x)
    if return_potential:
        return o, (torch.stack(pots) if pots else torch.empty_like(x))
    return o
