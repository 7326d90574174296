"""Few-spike activations fitted to the inputs a layer receives (convert's calibration): the exact move of a
neuron onto an interval, output weights by least squares, the sample-weighted leaf objective, the fitted
neuron against the step-by-step equations, and convert's use of it."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikevit.conversion import convert
from spikevit.conversion.fitting import (LeafGrid, _objective, fit_activations, fit_to_sample, least_squares_d,
                                         map_to_interval)
from spikevit.conversion.params import few_spike_parameters
from spikevit.errors import SpikevitError
from spikevit.functional.fewspike import fs_spikes
from spikevit.nn import FewSpikeActivation

DT = torch.float64


def reference_neuron(x: float, T, h, d) -> float:
    """The SIT equations, literally, in Python floats (spike when v >= T)."""
    v, out = x, 0.0
    for t in range(len(T)):
        if v >= T[t]:
            out += d[t]
            v -= h[t]
    return out


def test_moving_a_neuron_onto_an_interval_is_exact():
    g = torch.Generator().manual_seed(0)
    K = 7
    T = torch.randint(-384, 384, (K,), generator=g).to(DT) / 64       # dyadic: every product below is exact
    h = torch.randint(1, 256, (K,), generator=g).to(DT) / 64
    Tm, hm = map_to_interval(T, h, (-6.0, 6.0), -1.5, 1.5)            # s = 1/4
    assert Tm.shape == (1, K) and torch.equal(hm[0], h / 4)
    x = torch.randint(-2048, 2048, (3000,), generator=g).to(DT) / 1024    # inputs in [-2, 2)
    x_orig = -6.0 + (x + 1.5) * 4                                         # the point of [-6, 6] x stands for
    assert torch.equal(fs_spikes(x, Tm[0], hm[0]), fs_spikes(x_orig, T, h))
    # a batch of intervals at once
    Tb, hb = map_to_interval(T, h, (-6.0, 6.0), torch.tensor([-1.5, 0.0], dtype=DT), torch.tensor([1.5, 3.0], dtype=DT))
    assert torch.equal(Tb[0], Tm[0]) and torch.equal(Tb[1], 0.0 + (T + 6) / 4) and torch.equal(hb[1], h / 4)


def test_least_squares_d_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    K = 6
    T = torch.sort(torch.rand(K, generator=g, dtype=DT) * 2 - 1, descending=True).values
    h = torch.rand(K, generator=g, dtype=DT) * 0.5
    x = torch.randn(4000, generator=g, dtype=DT) * 0.6
    y = F.gelu(x)
    d = least_squares_d(x, y, T, h, ridge=0.0)
    Z = fs_spikes(x, T, h).T
    ref = torch.linalg.lstsq(Z, y[:, None], driver="gelsd").solution.flatten()
    fired = Z.sum(0) > 0
    assert torch.allclose((Z @ d), (Z @ ref), atol=1e-9) and bool(fired.all())


def test_sample_weighted_objective_equals_weighted_least_squares():
    # split points half-way between grid points: the relaxed counts are exact, so the objective must equal the
    # sample-weighted least-squares error over the grid points computed by brute force
    n = 201
    g = torch.Generator().manual_seed(3)
    sample = (torch.randn(5000, generator=g, dtype=DT) * 0.4).clamp(-1, 1)
    grid = LeafGrid(torch.exp, -1.0, 1.0, n, sample=sample)
    w = torch.bincount(((sample + 1) / grid.delta).round().long(), minlength=n).to(DT) * (n / sample.numel())
    assert torch.allclose(grid.w, w) and math.isclose(float(w.sum()), n)
    for _ in range(4):
        K = 5
        T = -1.0 + (torch.randint(0, n, (K,), generator=g).to(DT) + 0.5) * grid.delta
        h = torch.randint(0, 60, (K,), generator=g).to(DT) * grid.delta
        mse, _ = _objective(T[None], h[None], grid, ridge=1e-14)
        Z = fs_spikes(grid.x, T, h).T
        sw = w.sqrt()[:, None]
        d = torch.linalg.lstsq(Z * sw, grid.y[:, None] * sw, driver="gelsd").solution.flatten()
        ref = float((w * (Z @ d - grid.y) ** 2).sum() / n)
        assert math.isclose(float(mse), ref, rel_tol=1e-6, abs_tol=1e-12)


def test_fit_to_sample_where_the_inputs_live():
    p = few_spike_parameters("gelu", 12, DT)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20000, generator=g, dtype=DT) * 0.28        # small pre-activations of a random-init ViT
    r = fit_to_sample("gelu", x, p["T"], p["h"], p["d"], p["domain"])
    assert r["changed"] and r["rmse"] < 0.5 * r["rmse_before"]
    # the reported errors are the simulated neuron's, checked here step by step on part of the sample
    err = [reference_neuron(v, r["T"].tolist(), r["h"].tolist(), r["d"].tolist()) - float(F.gelu(torch.tensor(v, dtype=DT)))
           for v in x.tolist()]
    assert math.isclose(math.sqrt(sum(e * e for e in err) / len(err)), r["rmse"], rel_tol=1e-9)
    assert math.isclose(max(abs(e) for e in err), r["max_abs_error"], rel_tol=1e-9)
    before = [reference_neuron(v, p["T"].tolist(), p["h"].tolist(), p["d"].tolist()) - float(F.gelu(torch.tensor(v, dtype=DT)))
              for v in x.tolist()]
    assert math.isclose(math.sqrt(sum(e * e for e in before) / len(before)), r["rmse_before"], rel_tol=1e-9)
    # inputs spread over the shipped domain: the shipped neuron is kept unless a moved one beats it
    u = torch.linspace(-6, 6, 10000, dtype=DT)
    r2 = fit_to_sample("gelu", u, p["T"], p["h"], p["d"], p["domain"])
    assert r2["rmse"] <= r2["rmse_before"]
    assert r2["changed"] or (torch.equal(r2["T"], p["T"]) and torch.equal(r2["d"], p["d"]))
    assert r2["rmse_before"] == pytest.approx(p["rmse"], rel=1e-6)      # the shipped fit's recorded RMSE


def test_polish_improves_on_the_moved_neuron():
    p = few_spike_parameters("gelu", 8, DT)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20000, generator=g, dtype=DT) * 0.8
    r = fit_to_sample("gelu", x, p["T"], p["h"], p["d"], p["domain"])
    with torch.no_grad():                                    # as inside convert's calibration
        q = fit_to_sample("gelu", x, p["T"], p["h"], p["d"], p["domain"], polish_iters=60)
    assert q["polished"] and q["rmse"] <= r["rmse"] * 1.001


def test_fewspike_activation_records_and_installs_a_fit():
    torch.manual_seed(0)
    act = FewSpikeActivation("gelu", 12)
    shipped = act.T.clone(), act.d.clone()
    x = 0.3 * torch.randn(4, 50, 64)
    act.calibrating = True
    y = act(x)
    assert torch.equal(y, F.gelu(x))                    # values pass through while calibrating
    act.calibrating = False
    net = nn.Sequential(nn.Linear(64, 64), act)
    fitted = fit_activations(net)
    info = fitted["1"]
    assert act.calibration is info and not torch.equal(act.T, shipped[0]) and not torch.equal(act.d, shipped[1])
    assert info["samples"] == 2 + x.numel()          # the call's extremes + a seeded subset (all 12,800 here)
    # the module computes the step-by-step neuron with its new parameters
    xs = 0.3 * torch.randn(500)
    T, h, d = act.T.tolist(), act.h.tolist(), act.d.tolist()
    ref = torch.tensor([reference_neuron(float(v), T, h, d) for v in xs.tolist()])
    assert torch.allclose(act(xs), ref, atol=1e-5)
    # its error on fresh inputs of the same distribution is the recorded one (float32 module vs float64 fit)
    xt = 0.3 * torch.randn(200000)
    rmse = float((act(xt).double() - F.gelu(xt.double())).pow(2).mean().sqrt())
    assert rmse == pytest.approx(info["rmse"], rel=0.1) and rmse < 0.5 * info["rmse_before"]
    # a second fit without new records changes nothing
    assert fit_activations(net) == {}


def _timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10).eval()


def test_convert_fits_activations_to_calibration():
    model = _timm_vit()
    g = torch.Generator().manual_seed(1)
    x, cal = torch.randn(6, 3, 32, 32, generator=g), torch.randn(24, 3, 32, 32, generator=g)
    with torch.no_grad():
        ref = model(x)
        shipped = convert(model, 12, activations="gelu")                 # no calibration: the shipped neuron
        fitted = convert(model, 12, activations="gelu", calibration=cal)
        kept = convert(model, 12, activations="gelu", calibration=cal, activation_fit="shipped")
        cos = {k: float(F.cosine_similarity(m(x).flatten().double(), ref.flatten().double(), 0))
               for k, m in (("shipped", shipped), ("fitted", fitted), ("kept", kept))}
    p = few_spike_parameters("gelu", 12)
    acts = [m for m in kept.modules() if isinstance(m, FewSpikeActivation)]
    assert len(acts) == 2 and all(torch.equal(m.T, p["T"]) and torch.equal(m.d, p["d"]) for m in acts)
    layers = fitted.sit_conversion["activation_fit"]["layers"]
    assert sorted(layers) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert all(v["changed"] and v["rmse"] < 0.5 * v["rmse_before"] for v in layers.values())
    assert cos["kept"] == cos["shipped"] < 0.95 < 0.99 < cos["fitted"]
    with pytest.raises(SpikevitError, match="activation_fit='exact': choose from"):
        convert(model, 12, activations="gelu", calibration=cal, activation_fit="exact")
