"""Spike coding neurons (rate-coded IF, few-spike identity, few-spike activations) against step-by-step
reference simulations written out here, and the spike products against the dense layer on the decoded value."""
import math

import pytest
import torch
from torch import nn

from spikevit.errors import SpikevitError
from spikevit.functional.coding import (
    binary_identity_parameters,
    fewspike_identity,
    fewspike_identity_bits,
    fewspike_identity_closed_form,
    fewspike_identity_spikes,
    if_rate_counts,
    if_rate_simulate,
)
from spikevit.nn import FewSpikeActivation
from spikevit.nn.spike_coding import (
    SpikeEncoder,
    SpikingConv,
    SpikingLinear,
    spike_matmul_left,
    spike_matmul_right,
)


def _if_reference(x: float, theta: float, steps: int) -> tuple[int, list[int]]:
    """Scalar integrate-and-fire, reset by subtraction, v(0) = theta / 2, constant input x."""
    v, train = theta / 2, []
    for _ in range(steps):
        v += x
        z = 1 if v >= theta else 0
        v -= theta * z
        train.append(z)
    return sum(train), train


def _fs_reference(x: float, T: list[float], h: list[float], d: list[float]) -> tuple[float, list[int]]:
    """Scalar few-spike neuron: v(1) = x, z(t) = [v(t) >= T(t)], v(t+1) = v(t) - h(t) z(t), out = sum d z."""
    v, out, train = x, 0.0, []
    for Tt, ht, dt in zip(T, h, d):
        z = 1 if v >= Tt else 0
        out += dt * z
        v -= ht * z
        train.append(z)
    return out, train


@pytest.mark.parametrize("steps", [4, 12, 16])
def test_if_rate_neuron_matches_reference_simulation(steps):
    g = torch.Generator().manual_seed(steps)
    x = (torch.rand(300, generator=g, dtype=torch.float64) * 3 - 1)          # below 0, inside, above theta
    theta = torch.rand(300, generator=g, dtype=torch.float64) + 0.5
    counts, z = if_rate_simulate(x, theta, steps)
    closed = if_rate_counts(x, theta, steps)
    for i in range(0, 300, 7):
        ref_count, ref_train = _if_reference(float(x[i]), float(theta[i]), steps)
        assert int(counts[i]) == ref_count and z[:, i].tolist() == ref_train
    torch.testing.assert_close(closed, counts)
    # the decoded value is x rounded to the grid theta / T and clipped to [0, theta]
    grid = theta / steps
    expect = (torch.round(x / grid) * grid).clamp(torch.zeros_like(theta), theta)
    inside = (x / grid - torch.floor(x / grid) - 0.5).abs() > 1e-9               # away from exact ties
    torch.testing.assert_close((closed * grid)[inside], expect[inside])


@pytest.mark.parametrize("steps", [4, 8, 12])
def test_fewspike_identity_neuron_matches_reference_and_rounds(steps):
    g = torch.Generator().manual_seed(steps)
    x = torch.rand(400, generator=g, dtype=torch.float64) * 1.4 - 0.2
    theta = torch.tensor(1.0, dtype=torch.float64)
    p = binary_identity_parameters(steps, torch.float64)
    z = fewspike_identity_spikes(x, theta, steps)
    out = fewspike_identity(x, theta, steps)
    for i in range(0, 400, 9):
        ref, train = _fs_reference(float(x[i]), p["T"].tolist(), p["h"].tolist(), p["d"].tolist())
        assert z[:, i].tolist() == train
        assert math.isclose(float(out[i]), ref, abs_tol=1e-12)
    torch.testing.assert_close(out, fewspike_identity_closed_form(x, theta, steps))
    # error <= half a step inside the range; the spikes are the bits of the rounded value
    inside = (x >= 0) & (x < 1 - 2.0 ** -(steps + 1))
    assert float((out - x)[inside].abs().max()) <= 2.0 ** -(steps + 1) + 1e-12
    bits = torch.round(out * 2 ** steps).long()
    for t in range(steps):
        assert torch.equal(z[t].long(), (bits >> (steps - 1 - t)) & 1)
    assert torch.equal(fewspike_identity_bits(x, theta, steps), z)          # the closed form the encoder uses


def test_fewspike_activation_hands_over_its_spike_train():
    torch.manual_seed(0)
    act = FewSpikeActivation("gelu", 12)
    x = torch.randn(5, 7) * 2
    plain = act(x)
    act.hand_over_spikes = True
    out = act(x)
    torch.testing.assert_close(out, plain)
    code = out._spike_code
    assert code.spikes.shape == (12, 5, 7) and set(code.spikes.unique().tolist()) <= {0.0, 1.0}
    T, h, d = act.T.tolist(), act.h.tolist(), act.d.tolist()
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        ref, train = _fs_reference(float(x[i, j]), T, h, d)
        assert code.spikes[:, i, j].tolist() == train
        assert math.isclose(float(out[i, j]), ref, rel_tol=1e-5, abs_tol=1e-6)
    assert act.last_spikes == float(code.spikes.sum())


def _calibrated(coding, steps, channel_dim, x):
    enc = SpikeEncoder(coding, steps, channel_dim)
    enc.calibrating = True
    assert enc(x) is x
    enc.finish_calibration()
    return enc


@pytest.mark.parametrize("coding", ["rate", "fewspike"])
def test_encoder_decode_is_per_channel_quantisation(coding):
    torch.manual_seed(0)
    x = torch.randn(4, 9, 6, dtype=torch.float64) * torch.tensor([0.1, 1, 3, 10, 0.5, 2], dtype=torch.float64)
    enc = _calibrated(coding, 8, -1, x)
    theta = enc.theta
    assert theta.shape == (6,) and bool((theta > 0).all())
    spikes = enc(x)
    code = spikes._spike_code
    if coding == "rate":
        assert spikes.shape == (2, 4, 9, 6) and torch.equal(spikes, spikes.round()) and spikes.max() <= 8
        ref = torch.stack([if_rate_simulate(s, theta, 8)[0] for s in (x, -x)])
        torch.testing.assert_close(spikes, ref)
        expect = (ref[0] - ref[1]) * theta / 8
    else:
        assert spikes.shape == (16, 4, 9, 6) and set(spikes.unique().tolist()) <= {0.0, 1.0}
        expect = fewspike_identity_closed_form(x, theta, 8) - fewspike_identity_closed_form(-x, theta, 8)
    torch.testing.assert_close(code.decode(), expect)
    assert enc.last_spikes == float(spikes.sum()) and enc.last_neurons == x.numel()
    # a clipped value never exceeds theta
    assert bool((code.decode().abs() <= theta + 1e-12).all())


@pytest.mark.parametrize("coding", ["rate", "fewspike"])
def test_spike_products_equal_dense_products_of_decoded_values(coding):
    torch.manual_seed(1)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    lin = nn.Linear(8, 4).double()
    layer = SpikingLinear(lin, _calibrated(coding, 6, -1, x))
    x_hat = layer.encoder.encode(x).decode()
    torch.testing.assert_close(layer(x), lin(x_hat))

    img = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    for conv in (nn.Conv2d(6, 4, 3, padding=1).double(), nn.Conv2d(6, 12, 3, padding=1, groups=6).double(),
                 nn.Conv2d(6, 4, 3, padding=1, groups=2).double()):
        layer = SpikingConv(conv, _calibrated(coding, 6, 1, img))
        img_hat = layer.encoder.encode(img).decode()
        torch.testing.assert_close(layer(img), conv(img_hat))

    q = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    k = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    code = _calibrated(coding, 6, -1, q).encode(q)
    torch.testing.assert_close(spike_matmul_left(code, k.transpose(-2, -1)), code.decode() @ k.transpose(-2, -1))
    a = torch.softmax(torch.randn(2, 3, 5, 6, dtype=torch.float64), -1)
    v = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    code = _calibrated(coding, 6, -1, v).encode(v)
    torch.testing.assert_close(spike_matmul_right(a, code), a @ code.decode())


def test_encoder_errors():
    with pytest.raises(SpikevitError, match="unknown spike coding"):
        SpikeEncoder("burst", 8)
    enc = SpikeEncoder("rate", 8, name="blocks.0.fc1")
    with pytest.raises(SpikevitError, match="blocks.0.fc1: neurons have no thresholds"):
        enc(torch.randn(2, 3))
    enc = _calibrated("rate", 8, -1, torch.randn(4, 3))
    with pytest.raises(SpikevitError, match="input has 5 channels"):
        enc(torch.randn(2, 5))


@pytest.mark.parametrize("fn,K", [("exp", 12), ("exp", 16), ("gelu", 12)])
def test_fewspike_lookup_equals_simulation(fn, K):
    """The piecewise-constant table of a few-spike neuron gives the step-by-step outputs and spike counts."""
    from spikevit.conversion.params import few_spike_parameters
    from spikevit.functional.fewspike import fs_lookup, fs_neuron_with_count, fs_pieces

    p = few_spike_parameters(fn, K, dtype=torch.float64)
    pieces = fs_pieces(p["T"], p["h"], p["d"])
    x = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    out, count = fs_neuron_with_count(x, p["T"], p["h"], p["d"])
    lo, cnt = fs_lookup(x, pieces)
    near = (x[:, None] - pieces["edges"][None]).abs().min(1).values < 1e-9     # ties at a piece edge
    torch.testing.assert_close(lo[~near], out[~near], atol=1e-12, rtol=0)
    assert torch.equal(cnt[~near], count[~near]) and int(near.sum()) < 5
    out_t, total = fs_lookup(x, pieces, total=True)                          # spike total by piece histogram
    assert torch.equal(out_t, lo) and total == float(cnt.sum())
    no_grid = {k: v for k, v in pieces.items() if not k.startswith("grid_")}  # plain binary search: same
    assert torch.equal(fs_lookup(x, no_grid)[0], lo)
    for i in range(0, 20001, 997):                                            # and the scalar reference
        ref, train = _fs_reference(float(x[i]), p["T"].tolist(), p["h"].tolist(), p["d"].tolist())
        if not near[i]:
            assert math.isclose(float(lo[i]), ref, abs_tol=1e-12) and float(cnt[i]) == sum(train)
