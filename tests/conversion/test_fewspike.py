"""Few-spike neuron, SI-norm and spiking softmax maths against hand-written references."""
import math

import torch

from spikevit.functional.fewspike import (fs_neuron, fs_neuron_with_count, fs_spikes, fs_spikes_batched,
                                          si_norm_fast, si_norm_if, spiking_softmax)


def reference_neuron(x: float, T, h, d) -> tuple[float, list[int]]:
    """The SIT equations, literally, in Python floats (spike when v >= T)."""
    v, out, z = x, 0.0, []
    for t in range(len(T)):
        s = 1 if v >= T[t] else 0
        z.append(s)
        out += d[t] * s
        v = v - h[t] * s
    return out, z


def test_pinned_trajectory_and_heaviside_at_zero():
    T = torch.tensor([0.5, 0.25]); h = torch.tensor([0.5, 0.25]); d = torch.tensor([1.0, 2.0])
    x = torch.tensor([0.8, 0.5, 0.49, 0.2])
    # 0.8: v=0.8>=0.5 spike, v=0.3>=0.25 spike -> 3; 0.5: tie spikes (H(0)=1), v=0 -> 1;
    # 0.49: no spike, v=0.49>=0.25 -> 2; 0.2: nothing -> 0
    assert fs_neuron(x, T, h, d).tolist() == [3.0, 1.0, 2.0, 0.0]
    assert fs_spikes(x, T, h).T.tolist() == [[1, 1], [1, 0], [0, 1], [0, 0]]


def test_neuron_matches_python_reference():
    g = torch.Generator().manual_seed(0)
    K = 7
    T = torch.randn(K, generator=g, dtype=torch.float64)
    h = torch.rand(K, generator=g, dtype=torch.float64)
    d = torch.randn(K, generator=g, dtype=torch.float64)
    x = 2 * torch.rand(300, generator=g, dtype=torch.float64) - 1
    out, count = fs_neuron_with_count(x, T, h, d)
    z = fs_spikes(x, T, h)
    for i in range(len(x)):
        ref, zr = reference_neuron(float(x[i]), T.tolist(), h.tolist(), d.tolist())
        assert math.isclose(float(out[i]), ref, abs_tol=1e-12)
        assert z[:, i].tolist() == zr and int(count[i]) == sum(zr)
    Tb = torch.stack([T, T + 0.1]); hb = torch.stack([h, h * 2])
    Zb = fs_spikes_batched(x, Tb, hb)
    assert torch.equal(Zb[0], z.T) and torch.equal(Zb[1], fs_spikes(x, T + 0.1, h * 2).T)


def test_si_norm_if_equals_fast_form():
    g = torch.Generator().manual_seed(1)
    e = torch.rand(50, 9, generator=g, dtype=torch.float64) * 3      # SI-exp outputs (>= 0)
    vth = e.sum(-1, keepdim=True)
    for steps in (1, 7, 12, 64):
        rate_if, z = si_norm_if(e, vth, steps)
        fast = si_norm_fast(e, vth, steps)
        assert torch.equal(rate_if, fast)
        assert z.shape == (steps, 50, 9) and set(z.unique().tolist()) <= {0.0, 1.0}
        # the spike count is floor(T w / Vth): within 1/T of the real-valued softmax
        assert float((fast - e / vth).abs().max()) <= 1.0 / steps + 1e-12
    assert torch.allclose(si_norm_fast(e, vth, None), e / vth)


def test_spiking_softmax_normalises_and_masks():
    g = torch.Generator().manual_seed(2)
    T = torch.tensor([-1.0, -0.5, 0.0]); h = torch.tensor([0.5, 0.5, 0.5]); d = torch.tensor([0.4, 0.6, 0.9])
    x = 2 * torch.rand(4, 6, generator=g) - 1
    x[0, 2] = float("-inf")
    y = spiking_softmax(x, T, h, d, dim=-1)
    assert torch.allclose(y.sum(-1), torch.ones(4))
    assert float(y[0, 2]) == 0.0 and bool((y >= 0).all())
    e = fs_neuron(x.clamp_min(-10), T, h, d)
    e[0, 2] = 0
    assert torch.allclose(y, e / e.sum(-1, keepdim=True))
