"""Multi-step LIF: pinned hand trajectory, surrogate formula, finite differences of the smoothed neuron,
and SpikingJelly's multi-step LIF with the parameters that match Eq. 1-2."""
from __future__ import annotations

import pytest
import torch

from spikevit.functional.neurons import (heaviside, lif_multistep, triangle_grad, triangle_primitive,
                                         triangle_smooth, triangle_spike)
from spikevit.nn import LIF


def test_hand_computed_trajectory():
    # leak 0.5, Vth 1: H = 0.5 U + x; fire if H > 1; U = H - O
    x = torch.tensor([0.6, 0.6, 0.6, 0.0, 1.5, 3.2, 0.0])[:, None]
    o, u = lif_multistep(x, leak=0.5, vth=1.0, return_potential=True)
    # H: .6, .9, 1.05, .025, 1.5125, 3.45625, 1.228125 ; U after reset:
    assert o[:, 0].tolist() == [0, 0, 1, 0, 1, 1, 1]
    torch.testing.assert_close(u[:, 0], torch.tensor([0.6, 0.9, 0.05, 0.025, 0.5125, 2.45625, 0.228125]))


def test_threshold_scales_the_spike_amplitude_and_reset():
    x = torch.tensor([1.5, 1.5, 0.0])[:, None]
    o, u = lif_multistep(x, leak=0.25, vth=2.0, return_potential=True)
    # H: 1.5 (no), 0.375+1.5=1.875 (no), 0.46875 (no)
    assert o[:, 0].tolist() == [0, 0, 0]
    o, u = lif_multistep(torch.tensor([2.5, 0.0])[:, None], leak=0.25, vth=2.0, return_potential=True)
    assert o[:, 0].tolist() == [2.0, 0.0]                     # O = Vth when H > Vth
    torch.testing.assert_close(u[:, 0], torch.tensor([0.5, 0.125]))


def test_strict_threshold():
    assert heaviside(torch.tensor([0.0, 1e-7, -1e-7])).tolist() == [0, 1, 0]
    assert lif_multistep(torch.tensor([[1.0]]), vth=1.0)[0, 0] == 0  # H = Vth does not fire (H > Vth)


def test_surrogate_gradient_formula():
    h = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -1.0], requires_grad=True)
    triangle_spike(h, 1.0, 2.0).sum().backward()
    # gamma / Vth * max(0, 1 - |h/Vth - 1|) with gamma 2, Vth 1
    assert h.grad.tolist() == [0.0, 1.0, 2.0, 1.0, 0.0, 0.0, 0.0]
    h = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    triangle_spike(h, 2.0, 1.0).sum().backward()
    assert h.grad.tolist() == [0.25, 0.5, 0.25]              # Vth 2: peak gamma/Vth at H = Vth


def test_hand_written_backward_is_the_derivative_of_the_primitive():
    h = torch.linspace(-1.0, 4.0, 1001, dtype=torch.float64, requires_grad=True)
    for vth, gamma in [(1.0, 1.0), (2.0, 0.7), (0.5, 3.0)]:
        (auto,) = torch.autograd.grad(triangle_primitive(h, vth, gamma).sum(), h)
        (hand,) = torch.autograd.grad(triangle_smooth(h, vth, gamma).sum(), h)
        torch.testing.assert_close(hand, auto)
        torch.testing.assert_close(hand, triangle_grad(h, vth, gamma))


@pytest.mark.parametrize("detach_reset", [False, True])
def test_bptt_gradient_matches_finite_differences_of_the_smoothed_lif(detach_reset):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 3, 4, generator=g, dtype=torch.float64) * 1.6).requires_grad_()
    w = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)

    def f(inp):  # smoothed neuron, hand-written backward through leak and (optionally) reset
        return (lif_multistep(inp, leak=0.6, vth=0.9, gamma=1.3, spike_fn=triangle_smooth,
                              detach_reset=detach_reset) * w).sum()

    if not detach_reset:
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)
    else:  # detaching the reset makes the backward deliberately differ from the forward's derivative
        (analytic,) = torch.autograd.grad(f(x), x)
        fd = torch.zeros_like(x)
        flat = x.detach().flatten()
        for i in range(flat.numel()):
            e = torch.zeros_like(flat)
            e[i] = 1e-6
            fd.view(-1)[i] = (f((flat + e).view_as(x)) - f((flat - e).view_as(x))) / 2e-6
        assert not torch.allclose(analytic, fd, atol=1e-4)


@pytest.mark.parametrize("leak,vth,detach", [(0.5, 1.0, False), (0.75, 1.0, False), (0.5, 1.0, True),
                                             (0.5, 0.5, False)])
def test_matches_spikingjelly_multistep_lif(leak, vth, detach):
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    # Eq. 1-2 in SpikingJelly's terms: H = V + X - V/tau (decay_input=False, tau = 1/(1-leak)), soft reset
    # (v_reset=None: V = H - spike * Vth), triangle surrogate = PiecewiseQuadratic(alpha=1) when gamma = Vth.
    node = sj.LIFNode(tau=1.0 / (1.0 - leak), decay_input=False, v_threshold=vth, v_reset=None,
                      surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0), detach_reset=detach,
                      step_mode="m")
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(8, 4, 16, generator=g, dtype=torch.float64) * 2.0 * vth).requires_grad_()
    w = torch.randn(8, 4, 16, generator=g, dtype=torch.float64)
    ref = node(x) * vth                             # SpikingJelly spikes are 1; Eq. 1 fires Vth
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), x)
    ours = LIF(leak=leak, vth=vth, gamma=vth, detach_reset=detach)(x)
    (our_grad,) = torch.autograd.grad((ours * w).sum(), x)
    assert torch.equal(ours, ref)
    assert ours.sum() > 0 and (ours == 0).any()
    # SJ's surrogate is in units of (H - Vth): d spike/dH = max(0, 1 - |H - Vth|); ours with gamma = Vth is
    # dO/dH = max(0, 1 - |H/Vth - 1|): the same function only for Vth = 1, so compare there
    if vth == 1.0:
        torch.testing.assert_close(our_grad, ref_grad)


def test_lif_module_and_empty_time_axis():
    x = torch.rand(0, 2, 3)
    assert LIF()(x).shape == (0, 2, 3)
    assert "leak=0.5" in repr(LIF())
