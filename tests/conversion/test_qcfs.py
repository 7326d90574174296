"""Quantisation-aware fine-tuning for rate-coded conversion (QCFS / MST): the training-time activation is the
decoded rate code, its gradients are the straight-through / QCFS-LSQ ones, and a fine-tuned model converts
without loss."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from spikevit.conversion import convert
from spikevit.conversion.qcfs import (
    ann_state_dict,
    finetune,
    load_neurons,
    neuron_state,
    quantisation_aware,
    save_neurons,
    spiking_model,
    thresholds_of,
)
from spikevit.errors import SpikevitError
from spikevit.functional.coding import if_rate_simulate, qcfs_counts, qcfs_quantise
from spikevit.models import create_model
from spikevit.nn.qcfs import StraightThrough
from spikevit.nn.spike_coding import SpikeEncoder
from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax


def _values(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1.5) * theta      # below -theta .. above theta
    return x, theta


@pytest.mark.parametrize("steps", [1, 4, 12])
def test_quantiser_is_the_decoded_rate_code_of_the_if_reference(steps):
    x, theta = _values(500, steps)
    pos, _ = if_rate_simulate(x, theta, steps)                  # step-by-step IF neurons of the pair
    neg, _ = if_rate_simulate(-x, theta, steps)
    torch.testing.assert_close(qcfs_counts(x, theta, steps), pos - neg, rtol=0, atol=0)
    q = qcfs_quantise(x, theta, steps)
    torch.testing.assert_close(q, (pos - neg) * (theta / steps), rtol=0, atol=0)
    # x rounded to the grid theta / T, clipped to [-theta, theta] (away from exact ties)
    grid = theta / steps
    frac = (x / grid).abs() - torch.floor((x / grid).abs())
    away = (frac - 0.5).abs() > 1e-9
    expect = torch.minimum(torch.maximum(torch.sign(x) * torch.floor((x / grid).abs() + 0.5) * grid, -theta), theta)
    torch.testing.assert_close(q[away], expect[away])


def test_quantiser_gradients_closed_form_and_finite_differences():
    steps = 4
    x, theta = _values(400, 7)
    x = x.reshape(40, 10).requires_grad_()
    th = theta[:10].clone().requires_grad_()                 # one threshold per channel (last dim)
    x.data = (x.data / theta.reshape(40, 10)) * th.data        # x spans [-1.5 theta, 1.5 theta] of its channel
    w = torch.randn(40, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (w * qcfs_quantise(x, th, steps)).sum().backward()
    u = x.detach() * steps / th.detach()
    inside = u.abs() <= steps
    n = torch.floor(u + 0.5).clamp(0, steps) - torch.floor(0.5 - u).clamp(0, steps)
    torch.testing.assert_close(x.grad, w * inside)                                    # straight-through
    dtheta = torch.where(inside, (n - u) / steps, torch.sign(x.detach()))               # QCFS / LSQ
    torch.testing.assert_close(th.grad, (w * dtheta).sum(0))
    # where the value is clipped, q = sign(x) theta is smooth in theta: the gradient is its true derivative
    i, c = torch.nonzero(~inside)[0].tolist()
    eps = 1e-6
    q = lambda t: float(qcfs_quantise(x.detach()[i, c], t, steps))
    fd = (q(th.detach()[c] + eps) - q(th.detach()[c] - eps)) / (2 * eps)
    assert fd == pytest.approx(float(torch.sign(x.detach()[i, c])), abs=1e-6)


def test_encoder_quantisation_aware_equals_frozen_neurons_and_learns_theta():
    g = torch.Generator().manual_seed(0)
    enc = SpikeEncoder("rate", 4, -1, "e")
    enc.calibrating = True
    enc(torch.randn(64, 6, generator=g))
    enc.finish_calibration()
    x = torch.randn(5, 7, 6, generator=g, dtype=torch.float32) * 1.5
    ref = enc.encode(x).decode()
    enc.make_quantisation_aware()
    assert isinstance(enc.theta, torch.nn.Parameter) and "theta" in dict(enc.named_parameters())
    xg = x.clone().requires_grad_()
    code = enc.encode(xg)
    torch.testing.assert_close(code.decode(), ref, rtol=0, atol=1e-6)
    assert torch.equal(code.spikes, code.spikes.round()) and enc.last_spikes == float(code.spikes.detach().abs().sum())
    code.decode().sum().backward()
    assert enc.theta.grad is not None and xg.grad is not None
    torch.testing.assert_close(xg.grad, (x.abs() <= enc.theta.detach()).float())
    with torch.no_grad():                       # evaluation: the two IF neurons' counts themselves
        assert torch.equal(enc.encode(x).decode(), ref) and enc(x).shape == (2, *x.shape)
    enc.freeze()
    assert "theta" in dict(enc.named_buffers()) and not list(enc.parameters())
    torch.testing.assert_close(enc.encode(x).decode(), ref)


def test_straight_through_keeps_the_spiking_value_and_takes_the_exact_gradient():
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 5, 9, generator=g) * 2 - 1).requires_grad_()
    sm = SpikingSoftmax(8, squeeze="tanh")
    st = StraightThrough(sm)
    out = st(x)
    torch.testing.assert_close(out, sm(x.detach()), rtol=0, atol=0)
    w = torch.randn(3, 5, 9, generator=g)
    (out * w).sum().backward()
    xr = x.detach().clone().requires_grad_()
    (torch.softmax(torch.tanh(xr), -1) * w).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    act = FewSpikeActivation("gelu", 8)
    y = torch.linspace(-3, 3, 50).requires_grad_()
    out = StraightThrough(act)(y)
    torch.testing.assert_close(out, act(y.detach()), rtol=0, atol=0)
    out.sum().backward()
    yr = y.detach().clone().requires_grad_()
    F.gelu(yr).sum().backward()
    torch.testing.assert_close(y.grad, yr.grad)


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _cosine(a, b):
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


@pytest.mark.parametrize("spiking", ["attention", "all"])
def test_finetuned_quantisation_aware_model_converts_without_loss(spiking):
    torch.manual_seed(0)
    ann = create_model("vit-cifar-micro").eval()
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    x, y = _data()
    qat = quantisation_aware(ann, 4, spiking=spiking, calibration=x[:16])
    init = thresholds_of(neuron_state(qat))
    opt = torch.optim.AdamW(qat.parameters(), lr=1e-2)
    qat.train()
    for _ in range(3):
        loss = F.cross_entropy(qat(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    qat.eval()
    state = neuron_state(qat)
    learned = thresholds_of(state)
    assert set(learned) == set(init) and any(not torch.equal(learned[k], init[k]) for k in init)
    snn = convert(qat, 4, spiking=spiking, coding="rate")
    assert not any(isinstance(m, StraightThrough) for m in snn.modules())
    assert all(not e.quantisation_aware for e in snn.modules() if isinstance(e, SpikeEncoder))
    xt, _ = _data(16, seed=5)
    with torch.no_grad():
        ref, got = qat(xt), snn(xt)
        plain = convert(ann, 4, spiking=spiking, coding="rate", calibration=x[:16])(xt)
    assert torch.equal(ref, got)             # evaluation runs the same neurons: bit for bit
    with torch.enable_grad():               # the training path (one signed-count slice): float rounding only
        train_path = qat(xt)
    assert _cosine(train_path.detach(), got) > 0.9999 and float((train_path.detach() - got).abs().max()) < 1e-3
    assert float((ref - plain).abs().max()) > 1e-3          # the fine-tuning changed the model
    # the same spiking model from the plain architecture + fine-tuned weights + the neurons' parameters
    ann2 = create_model("vit-cifar-micro")
    ann2.load_state_dict(ann_state_dict(qat))
    snn2 = convert(ann2.eval(), 4, spiking=spiking, coding="rate", neurons=state)
    with torch.no_grad():
        got2 = snn2(xt)
    assert torch.equal(got2, got)
    # the original model is untouched
    assert all(torch.equal(v, before[k]) for k, v in ann.state_dict().items())


def test_thresholds_file_round_trip_and_partial_blocks(tmp_path):
    torch.manual_seed(1)
    ann = create_model("vit-cifar-micro").eval()
    x, _ = _data(16)
    qat = quantisation_aware(ann, 4, spiking="all", calibration=x)
    path = save_neurons(tmp_path / "t.safetensors", neuron_state(qat), {"steps": 4})
    state, info = load_neurons(path)
    assert info == {"steps": 4} and set(state) == set(neuron_state(qat))
    assert any(k.endswith(".domain") for k in state) and any(k.endswith(".theta") for k in state)
    # converting only block 0 ignores block 1's neurons, and needs no calibration
    one = convert(ann, 4, spiking="all", coding="rate", blocks=1, neurons=state)
    assert one.sit_conversion["blocks"] == [0]
    seen = 0
    for name, m in one.named_modules():
        if isinstance(m, SpikeEncoder):
            torch.testing.assert_close(m.theta, state[f"{name}.theta"])
            seen += 1
        elif isinstance(m, FewSpikeActivation):
            torch.testing.assert_close(m.d, state[f"{name}.d"])
            seen += 1
    assert seen == 8               # block 0: encoders q, k, v, qkv, proj, fc1, fc2 and its GELU



def test_finetune_with_the_trainer_learns_thresholds_faster():
    from spikevit.train import TrainConfig

    torch.manual_seed(2)
    ann = create_model("vit-cifar-micro").eval()
    x, y = _data(32)
    ds = torch.utils.data.TensorDataset(x, y)
    qat = quantisation_aware(ann, 4, spiking="all", calibration=x[:16])
    init = thresholds_of(neuron_state(qat))
    res = finetune(qat, ds, ds, TrainConfig(epochs=1, batch_size=16, lr=1e-3, min_lr=1e-3, device="cpu"),
                   theta_lr_scale=10.0)
    assert res.history and 0.0 <= res.final["acc1"] <= 100.0
    moved = max(float((thresholds_of(neuron_state(qat))[k] - init[k]).abs().max()) for k in init)
    assert 5e-3 < moved < 0.05       # Adam moves each theta by at most ~lr x 10 per step (2 steps)


def test_bad_input_is_a_clear_error(tmp_path):
    ann = create_model("vit-cifar-micro").eval()
    x, _ = _data(8)
    with pytest.raises(SpikevitError, match="steps"):
        quantisation_aware(ann, 0, spiking="all", calibration=x)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(SpikevitError, match="NaN"):
        quantisation_aware(ann, 4, spiking="all", calibration=bad)
    with pytest.raises(SpikevitError, match="calibration"):
        quantisation_aware(ann, 4, spiking="all")
    with pytest.raises(SpikevitError, match="rate-coded levels"):
        quantisation_aware(ann, 4, spiking="softmax", calibration=x)
    qat = quantisation_aware(ann, 4, spiking="all", calibration=x)
    with pytest.raises(SpikevitError, match="fine-tuned quantisation-aware"):
        convert(qat, 8, spiking="all")
    with pytest.raises(SpikevitError, match="fine-tuned quantisation-aware"):
        convert(qat, 4, spiking="attention")
    with pytest.raises(SpikevitError, match="not a quantisation-aware model"):
        spiking_model(ann)
    state = neuron_state(qat)
    key = min(k for k in state if k.endswith(".theta"))
    with pytest.raises(SpikevitError, match="NaN"):
        convert(ann, 4, spiking="all", neurons={**state, key: torch.full_like(state[key], float("nan"))})
    with pytest.raises(SpikevitError, match="> 0"):
        convert(ann, 4, spiking="all", neurons={**state, key: -state[key]})
    with pytest.raises(SpikevitError, match="no such spiking neuron"):
        convert(ann, 4, spiking="all", neurons={**state, "blocks.0.nowhere.encoder.theta": state[key]})
    with pytest.raises(SpikevitError, match="no thresholds for"):
        convert(ann, 4, spiking="all", neurons={key: state[key]})
    act = next(k for k in state if k.endswith(".domain"))[: -len(".domain")]
    with pytest.raises(SpikevitError, match="needs all of"):
        convert(ann, 4, spiking="all", neurons={k: v for k, v in state.items() if k != f"{act}.h"})
    (tmp_path / "x.safetensors").write_bytes(b"not a file")
    with pytest.raises(SpikevitError):
        load_neurons(tmp_path / "x.safetensors")


def test_cli_finetune_then_run_with_the_learned_neurons(tmp_path, data_slices, capsys):
    from spikevit.cli.main import main
    from spikevit.data import load_dataset
    from spikevit.train import build_transforms, load_trained_model, save_model, seeded_subset
    from spikevit.train.evaluate import evaluate

    torch.manual_seed(0)
    ckpt = tmp_path / "model.safetensors"
    save_model(ckpt, create_model("vit-cifar-micro"),
               {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    out = tmp_path / "ft"
    common = ["--model", "vit-cifar-micro", "--dataset", "cifar10", "--data-root", str(data_slices), "--steps", "4",
              "--spiking", "all"]
    assert main(["convert", "finetune", *common, "--checkpoint", str(ckpt), "--train-images", "32", "--batch-size",
                 "16", "--calibration-samples", "8", "--device", "cpu", "--out", str(out),
                 "--json", str(tmp_path / "ft.json")]) == 0
    doc = json.loads((tmp_path / "ft.json").read_text())
    assert doc["results"]["optimizer_steps"] == 2 and doc["results"]["lossless_check"]["max_abs_diff"] < 1e-4
    assert main(["convert", "run", *common, "--checkpoint", str(out / "model.safetensors"), "--neurons",
                 str(out / "neurons.safetensors"), "--test-subset", "20", "--batch-size", "10", "--no-layer-by-layer",
                 "--energy-batches", "1", "--sweep-steps", "", "--json", str(tmp_path / "run.json")]) == 0
    run_doc = json.loads((tmp_path / "run.json").read_text())
    # the pipeline's spiking model is the one rebuilt from the two files
    ann, _ = load_trained_model(out / "model.safetensors")
    snn = convert(ann.eval(), 4, spiking="all", coding="rate", neurons=load_neurons(out / "neurons.safetensors")[0])
    test = seeded_subset(load_dataset("cifar10", str(data_slices), "test", build_transforms("cifar10", False, False)),
                         20, 1)
    res = evaluate(snn, torch.utils.data.DataLoader(test, batch_size=10), "cpu")
    assert run_doc["results"]["snn"]["acc1"] == res["acc1"] and run_doc["results"]["snn"]["samples"] == 20
    assert run_doc["config"]["neurons"] == str(out / "neurons.safetensors")
    capsys.readouterr()
    assert main(["convert", "run", *common, "--checkpoint", str(ckpt), "--neurons", str(tmp_path / "none.st")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikevit: error:") and "--neurons" in err and "\n" not in err


def test_cli_finetune_refuses_bad_input_before_any_work(tmp_path, capsys):
    from spikevit.cli.main import main
    from spikevit.conversion.qcfs import FinetuneParams

    for argv, what in ((["--steps", "0"], "--steps"), (["--steps", "3"], "steps=3"),
                       (["--lr", "nan"], "--lr"), (["--spiking", "softmax"], "--spiking")):
        assert main(["convert", "finetune", "--model", "vit-cifar-micro", "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(("spikevit: error:", "spikevit convert finetune: error:")) and what in err, err
    with pytest.raises(SpikevitError, match="theta_lr_scale"):
        FinetuneParams("vit-cifar-micro", theta_lr_scale=0.0)
    assert not (tmp_path / "o").exists()
