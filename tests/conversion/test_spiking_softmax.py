"""SpikingSoftmax module against torch.softmax, squeeze, masking, SI-norm quantisation, few-spike activations."""
import pytest
import torch

from spikevit.conversion import available, few_spike_parameters, softmax_error
from spikevit.conversion.fitting import FUNCTIONS
from spikevit.nn import FewSpikeActivation, SpikingSoftmax


def test_spiking_softmax_close_to_softmax_at_k12():
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(64, 65, generator=g) - 1
    m = SpikingSoftmax(12, dim=-1)
    y = m(x)
    ref = torch.softmax(x, -1)
    assert torch.allclose(y.sum(-1), torch.ones(64), atol=1e-5)
    # each SI-exp output is within its fit's max error of exp(x) >= exp(-1): relative errors stay small
    err = softmax_error(x, 12)
    assert err["rel_rmse"] < 0.03 and err["mean_row_l1"] < 0.03
    assert float((y - ref).abs().max()) < 0.1 * float(ref.max())
    assert m.last_neurons == x.numel() and 0 < m.last_spikes <= 12 * x.numel()


def test_dim_squeeze_and_mask():
    g = torch.Generator().manual_seed(1)
    x = 4 * torch.randn(3, 5, 7, generator=g)
    m = SpikingSoftmax(12, dim=1, squeeze="sigmoid")
    y = m(x)
    ref = torch.softmax(torch.sigmoid(x), 1)
    assert torch.allclose(y.sum(1), torch.ones(3, 7), atol=1e-5)
    assert float((y - ref).abs().max()) < 0.02
    x2 = x.clone()
    x2[0, 1, :] = float("-inf")
    y2 = SpikingSoftmax(12, dim=1, squeeze="tanh")(x2)
    assert bool((y2[0, 1] == 0).all()) and torch.allclose(y2.sum(1), torch.ones(3, 7), atol=1e-5)


def test_norm_steps_quantise_the_output():
    x = torch.rand(10, 8) * 2 - 1
    y = SpikingSoftmax(12, norm_steps=16)(x)
    assert torch.allclose(y * 16, (y * 16).round(), atol=1e-5)
    assert float((y - SpikingSoftmax(12)(x)).abs().max()) <= 1 / 16 + 1e-6


@pytest.mark.parametrize("fn", ["gelu", "silu", "sigmoid"])
def test_few_spike_activation_matches_its_fit(fn):
    ks = available(fn)
    if not ks:
        pytest.skip(f"no shipped {fn} fit")
    K = ks[-1]
    p = few_spike_parameters(fn, K)
    lo, hi = p["domain"]
    x = torch.linspace(lo, hi, 10000)
    y = FewSpikeActivation(fn, K)(x)
    rmse = float((y.double() - FUNCTIONS[fn](x.double())).pow(2).mean().sqrt())
    assert rmse == pytest.approx(p["rmse"], rel=0.05, abs=1e-4)
