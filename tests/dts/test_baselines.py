"""The DTS paper's Table II baselines on the same Spikformer: the TET loss and the Hoyer regulariser,
each against a hand computation; the trainer hook optimises exactly those; study and CLI options."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from spikevit.dts import DTSSpec, study_runs
from spikevit.dts.loss import hoyer_terms, tet_loss, track_hoyer
from spikevit.dts.study import parse_baselines
from spikevit.dts.train import build_dts_model, dts_hooks, train_dts
from spikevit.errors import SpikevitError
from spikevit.functional.dts import hoyer_square
from spikevit.nn import DTSSLIF
from spikevit.train import TrainConfig


def _ce(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def test_tet_loss_by_hand():
    # T = 2 steps, B = 2 samples, K = 3 classes
    o = [[[2.0, 0.0, -1.0], [0.5, 0.5, 1.5]],
         [[1.0, 1.0, 0.0], [-1.0, 2.0, 0.0]]]
    y = [0, 1]
    ce = (_ce(o[0][0], 0) + _ce(o[0][1], 1) + _ce(o[1][0], 0) + _ce(o[1][1], 1)) / 4   # mean over t and b
    mse = sum((v - 1.0) ** 2 for step in o for row in step for v in row) / 12           # phi = 1, all entries
    lam = 0.25
    got = tet_loss(torch.tensor(o), torch.tensor(y), lam=lam, phi=1.0)
    assert float(got) == pytest.approx((1 - lam) * ce + lam * mse, rel=1e-6)
    assert float(tet_loss(torch.tensor(o), torch.tensor(y), lam=0.0)) == pytest.approx(ce, rel=1e-6)
    # phi moves only the MSE term: (O - phi)^2 with phi = -0.5
    mse2 = sum((v + 0.5) ** 2 for step in o for row in step for v in row) / 12
    got2 = tet_loss(torch.tensor(o), torch.tensor(y), lam=lam, phi=-0.5)
    assert float(got2) == pytest.approx((1 - lam) * ce + lam * mse2, rel=1e-6)


def test_hoyer_square_by_hand_and_its_gradient_by_finite_differences():
    z = torch.tensor([0.5, 1.0, 0.0, 0.5])
    assert float(hoyer_square(z)) == pytest.approx(2.0 ** 2 / 1.5)           # (0.5+1+0.5)^2 / (0.25+1+0.25)
    assert float(hoyer_square(torch.ones(7))) == pytest.approx(7.0)            # all equal: H = numel
    assert float(hoyer_square(torch.tensor([0.0, 3.0, 0.0]))) == pytest.approx(1.0)  # one non-zero: H = 1
    assert float(hoyer_square(torch.zeros(5))) == 0.0
    x = torch.tensor([0.3, 0.9, 0.2, 0.6], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(hoyer_square(x), x)
    eps = 1e-6
    for i in range(4):
        d = torch.zeros(4, dtype=torch.float64)
        d[i] = eps
        fd = (hoyer_square(x.detach() + d) - hoyer_square(x.detach() - d)) / (2 * eps)
        assert float(g[i]) == pytest.approx(float(fd), rel=1e-6)


def test_lif_layer_records_the_hoyer_term_of_its_clipped_membrane_potential():
    # LIF leak 0.5, Vth 1: H[0] = x[0] = (0.6, 1.5, -0.3) -> spikes (0, 1, 0), U[0] = (0.6, 0.5, -0.3);
    # H[1] = 0.5 U[0] + x[1] = (0.3 + 0.8, 0.25 + 0.2, -0.15 + 2.5) = (1.1, 0.45, 2.35)
    # z = clip(H, 0, 1) = (0.6, 1, 0, 1, 0.45, 1): H(z) = 4.05^2 / 3.5625
    x = torch.tensor([[0.6, 1.5, -0.3], [0.8, 0.2, 2.5]])
    lif = DTSSLIF(2, dts=False, leak=0.5, vth=1.0).train()
    plain = lif(x)
    assert lif.hoyer is None
    lif.track_hoyer = True
    out = lif(x)
    assert torch.equal(out, plain)                                           # spikes unchanged
    assert float(lif.hoyer) == pytest.approx(4.05 ** 2 / 3.5625, rel=1e-6)
    # with Vth = 2 the potentials are halved before clipping
    lif2 = DTSSLIF(2, dts=False, leak=0.5, vth=2.0).train()
    lif2.track_hoyer = True
    lif2(x)
    # Vth 2: no spike at t = 0, U[0] = x[0]; H[1] = (1.1, 0.95, 2.35); z = (0.3, 0.75, 0, 0.55, 0.475, 1)
    z = [0.3, 0.75, 0.0, 0.55, 0.475, 1.0]
    assert float(lif2.hoyer) == pytest.approx(sum(z) ** 2 / sum(v * v for v in z), rel=1e-6)
    # a gated layer counts its kept steps only
    gated = DTSSLIF(2, init_steps=1).train()
    gated.track_hoyer = True
    gated(x)
    assert float(gated.hoyer) == pytest.approx(hoyer_square(torch.tensor([0.6, 1.0, 0.0])).item(), rel=1e-6)
    lif.eval()
    lif(x)
    assert lif.hoyer is None                                                 # inference records nothing


def _spec(**kw) -> DTSSpec:
    return DTSSpec("spikformer-1-64", tmax=2, dts=False, model_args={"dim": 16, "heads": 2}, **kw)


def test_the_hooks_optimise_exactly_tet_and_ce_plus_hoyer():
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 0, 2])
    smooth = 0.1
    for spec in (_spec(loss="tet", tet_lambda=0.3, tet_phi=0.5), _spec(hoyer_lambda=1e-3)):
        torch.manual_seed(0)
        model, _ = build_dts_model(spec, "cifar10", 16)
        track_hoyer(model, spec.hoyer_lambda > 0)
        model.train()
        logits = model(x)
        steps = model.last_step_logits
        assert steps.shape == (2, 3, 10) and torch.allclose(steps.mean(0), logits)
        ce = torch.nn.functional.cross_entropy(logits, y, label_smoothing=smooth)   # what the trainer adds
        extra, logs = dts_hooks(spec, smooth).extra_loss(model, logits, y)
        total = ce + extra
        if spec.loss == "tet":
            o = steps.detach()
            by_hand = 0.7 * torch.stack([torch.nn.functional.cross_entropy(o[t], y, label_smoothing=smooth)
                                         for t in range(2)]).mean() + 0.3 * ((o - 0.5) ** 2).mean()
            assert float(total.detach()) == pytest.approx(float(by_hand), rel=1e-5)
            assert float(logs["tet"]) == pytest.approx(float(by_hand), rel=1e-5)
            # its gradient is TET's: d total / d O_t = (0.7 / 2) dCE(O_t) + 0.3 * 2 (O_t - 0.5) / numel
            (g,) = torch.autograd.grad(total, steps)
            o_ = o.clone().requires_grad_(True)
            ref = 0.7 * torch.stack([torch.nn.functional.cross_entropy(o_[t], y, label_smoothing=smooth)
                                     for t in range(2)]).mean() + 0.3 * ((o_ - 0.5) ** 2).mean()
            (g_ref,) = torch.autograd.grad(ref, o_)
            assert torch.allclose(g, g_ref, atol=1e-6)
        else:
            layers = [m for m in model.modules() if isinstance(m, DTSSLIF)]
            assert len(layers) == 12 and all(m.hoyer is not None for m in layers)
            assert float(logs["hoyer"]) == pytest.approx(sum(float(m.hoyer.detach()) for m in layers), rel=1e-6)
            assert float(total.detach()) == pytest.approx(float(ce.detach()) + 1e-3 * float(logs["hoyer"]), rel=1e-6)
            assert float(hoyer_terms(model).detach()) == pytest.approx(float(logs["hoyer"]))


def test_train_dts_with_each_baseline_logs_its_term(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g))
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0)
    for spec, key in ((_spec(loss="tet"), "tet"), (_spec(hoyer_lambda=1e-6), "hoyer")):
        res = train_dts(spec, data, data, config, tmp_path / key, dataset="cifar10", img_size=16)
        log = json.loads((tmp_path / key / "log.json").read_text())["epochs"][0]["train"]
        assert key in log and math.isfinite(log[key])
        if key == "tet":    # the logged total is the TET loss, not CE + TET
            assert log["loss"] == pytest.approx(log["tet"], rel=1e-5)
        assert res.model.tmax == 2


def test_spec_and_study_options():
    with pytest.raises(SpikevitError, match="loss"):
        _spec(loss="mse")
    with pytest.raises(SpikevitError, match="tet_lambda"):
        _spec(loss="tet", tet_lambda=1.5)
    with pytest.raises(SpikevitError, match="hoyer_lambda"):
        _spec(hoyer_lambda=-1)
    with pytest.raises(SpikevitError, match="grouping"):
        _spec(grouping="mine")
    assert parse_baselines("tet:2, hoyer:1") == (("tet", 2), ("hoyer", 1))
    assert parse_baselines("") == ()
    for bad in ("tet", "tet:0", "dsr:2", "hoyer:x"):
        with pytest.raises(SpikevitError, match="METHOD:T"):
            parse_baselines(bad)
    runs = {r.name: r.spec for r in study_runs("spikformer-1-64", tmax=4, init_steps=2, fixed_ts=(1, 2),
                                               lambdas=(1e-2,), groupings=("qkv+mlp",), no_mask=False,
                                               baselines="tet:2,hoyer:2", hoyer_lambda=1e-8, grouping="feeds")}
    assert list(runs) == ["fixed-T1", "fixed-T2", "tet-T2", "hoyer-T2", "dts-qkv+mlp-lam1e-2"]
    assert runs["tet-T2"].loss == "tet" and not runs["tet-T2"].dts and runs["tet-T2"].tmax == 2
    assert runs["hoyer-T2"].hoyer_lambda == 1e-8 and runs["hoyer-T2"].loss == "ce"
    assert all(s.grouping == "feeds" for s in runs.values())
    with pytest.raises(SpikevitError, match="hoyer"):
        study_runs("spikformer-1-64", baselines="hoyer:2", hoyer_lambda=0.0)


def test_cli_train_with_a_baseline_loss_and_a_study_with_baselines(data_slices, tmp_path, capsys):
    from spikevit.cli.main import main as cli_main

    common = ["--dataset", "mnist", "--data-root", str(data_slices), "--arch", "spikformer-1-64", "--epochs", "1",
              "--batch-size", "20", "--model-arg", "dim=16", "--model-arg", "heads=2", "--img-size", "16",
              "--train-subset", "40", "--test-subset", "20"]
    run = tmp_path / "tet"
    assert cli_main(["dts", "train", *common, "--tmax", "2", "--fixed", "--loss", "tet", "--tet-lambda", "0.05",
                     "--grouping", "feeds", "--out", str(run)]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["config"]["spec"]["loss"] == "tet" and rep["config"]["spec"]["tet_lambda"] == 0.05
    assert rep["config"]["spec"]["grouping"] == "feeds"
    assert {r["group"] for r in rep["tables"]["layers"]} == {"sps", "qkv", "attn", "mlp", "head"}
    assert "tet" in json.loads((run / "log.json").read_text())["epochs"][0]["train"]
    for bad, msg in ((["--loss", "mse"], "--loss"), (["--tet-lambda", "2"], "--tet-lambda"),
                     (["--hoyer-lambda", "-1"], "--hoyer-lambda"), (["--tmax", "4.7"], "--tmax"),
                     (["--grouping", "x"], "--grouping")):
        assert cli_main(["dts", "train", *common, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert msg in capsys.readouterr().err
    study = tmp_path / "study"
    assert cli_main(["dts", "study", *common, "--fixed-t", "1", "--lambdas", "1e-2", "--groupings", "qkv+mlp",
                     "--no-nomask", "--tmax", "2", "--baselines", "tet:1,hoyer:1", "--out", str(study),
                     "--json", str(study / "s.json")]) == 0
    rows = {r["run"]: r for r in json.loads((study / "s.json").read_text())["tables"]["runs"]}
    assert list(rows) == ["fixed-T1", "tet-T1", "hoyer-T1", "dts-qkv+mlp-lam1e-2"]
    assert [rows[n]["type"] for n in rows] == ["fixed-T", "TET", "Hoyer", "DTS"]
    assert all(r["layers"] == "paper" for r in rows.values())
    assert cli_main(["dts", "study", *common, "--baselines", "dsr:2", "--out", str(study)]) == 2
    assert "METHOD:T" in capsys.readouterr().err


def test_hoyer_term_of_a_bf16_layer_is_summed_in_fp32():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 64, 512, generator=g) * 2).to(torch.bfloat16)
    lif = DTSSLIF(2, dts=False).train()
    lif.track_hoyer = True
    lif(x)
    ref = DTSSLIF(2, dts=False).train()
    ref.track_hoyer = True
    ref(x.double())                                     # the same bf16 inputs, potentials in float64
    assert lif.hoyer.dtype == torch.float32
    assert float(lif.hoyer) == pytest.approx(float(ref.hoyer), rel=1e-2)
