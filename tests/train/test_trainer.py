"""Generic trainer: schedule closed form, sampler sharding, exact resume after a kill, checkpoint refusal,
learning on a separable problem, and the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spikevit.cli.main import main as cli_main
from spikevit.errors import SpikevitError
from spikevit.models import register_model
from spikevit.tensorio import save_tensors
from spikevit.train import (EpochSampler, TrainConfig, TrainHooks, build_model, cosine_warmup_lr, fit,
                            load_trained_model)
from spikevit.train.checkpoint import load_checkpoint
from spikevit.train.trainer import _SimulatedKill


class TinyNet(nn.Module):
    """conv -> BN -> ReLU -> dropout -> linear: has buffers (BN) and uses the RNG (dropout)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 8, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * img_size * img_size, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@register_model(name="test-tinynet")
def _tinynet(num_classes: int = 10, in_chans: int = 1, img_size: int = 8, dropout: float = 0.2):
    return TinyNet(num_classes, in_chans, img_size, dropout)


def toy_data(n=96, seed=0, img=8):
    """Separable 2-class problem: the sign of the mean of the left half minus the right half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, img, img, generator=g)
    y = (x[..., : img // 2].mean((1, 2, 3)) > x[..., img // 2:].mean((1, 2, 3))).long()
    return TensorDataset(x, y)


def cfg(**kw):
    base = dict(epochs=3, batch_size=16, lr=3e-3, min_lr=1e-4, warmup_epochs=1, weight_decay=0.01, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_cosine_warmup_closed_form():
    total, warm, base, lo = 100, 10, 1.0, 0.1
    assert cosine_warmup_lr(0, total, warm, base, lo) == pytest.approx(0.1)
    assert cosine_warmup_lr(9, total, warm, base, lo) == pytest.approx(1.0)
    assert cosine_warmup_lr(10, total, warm, base, lo) == pytest.approx(1.0)
    assert cosine_warmup_lr(55, total, warm, base, lo) == pytest.approx(lo + (base - lo) * 0.5)
    assert cosine_warmup_lr(100, total, warm, base, lo) == pytest.approx(lo)
    s = 30
    assert cosine_warmup_lr(s, total, warm, base, lo) == pytest.approx(
        lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))


def test_epoch_sampler_shards_union_equals_single_process_batches():
    n, gb = 50, 8
    single = EpochSampler(n, gb, 0, 1, True, seed=5)
    ranks = [EpochSampler(n, gb, r, 2, True, seed=5) for r in range(2)]
    for s in [single, *ranks]:
        s.set_epoch(3)
    full = single.indices().view(-1, gb)
    parts = [r.indices().view(-1, gb // 2) for r in ranks]
    assert full.shape[0] == n // gb
    for b in range(full.shape[0]):
        assert torch.equal(torch.cat([parts[0][b], parts[1][b]]), full[b])
    single.set_epoch(4)
    assert not torch.equal(single.indices().view(-1, gb), full)  # reshuffled each epoch
    ev = [EpochSampler(n, gb, r, 3, False) for r in range(3)]
    assert sorted(torch.cat([e.indices() for e in ev]).tolist()) == list(range(n))


def test_training_learns_a_separable_problem(tmp_path):
    model = TinyNet(num_classes=2, dropout=0.0)
    res = fit(model, toy_data(1024), toy_data(256, seed=1), cfg(epochs=8, lr=1e-2, batch_size=32), out_dir=tmp_path,
              run={"model": "test-tinynet"})
    assert res.final["acc1"] > 90.0
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == list(range(1, 9))
    assert log["epochs"][-1]["test"]["acc1"] == res.final["acc1"]
    assert log["epochs"][-1]["lr"] == pytest.approx(1e-4)  # cosine reached min_lr at the end


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    train, test = toy_data(96), toy_data(32, seed=1)
    run = {"model": "test-tinynet", "model_kwargs": {"num_classes": 2}}
    torch.manual_seed(0)
    ref = fit(TinyNet(num_classes=2), train, test, cfg(), out_dir=tmp_path / "ref", run=run)
    # kill in the middle of epoch 2 (6 steps per epoch): only epoch 1's checkpoint survives
    torch.manual_seed(0)
    with pytest.raises(_SimulatedKill):
        fit(TinyNet(num_classes=2), train, test, cfg(), out_dir=tmp_path / "killed", run=run, stop_after_steps=9)
    _, meta = load_checkpoint(tmp_path / "killed" / "last.safetensors")
    assert meta["epoch"] == 1
    torch.manual_seed(123)  # a fresh process: different init, different global RNG
    resumed = fit(TinyNet(num_classes=2), train, test, cfg(), out_dir=tmp_path / "killed", run=run)
    assert resumed.resumed_from == 1
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [e["train"] for e in ref.history] == [e["train"] for e in resumed.history]
    assert resumed.final == ref.final
    # a finished run resumes to "nothing left to do" and keeps its results
    again = fit(TinyNet(num_classes=2), train, test, cfg(), out_dir=tmp_path / "killed", run=run)
    assert again.resumed_from == 3 and again.final == ref.final


def test_checkpoints_refuse_foreign_corrupt_and_mismatched(tmp_path):
    train, test = toy_data(48), toy_data(16, seed=1)
    run = {"model": "test-tinynet", "model_kwargs": {"num_classes": 2}}
    fit(TinyNet(num_classes=2), train, test, cfg(epochs=1), out_dir=tmp_path / "a", run=run)
    with pytest.raises(SpikevitError, match="lr"):
        fit(TinyNet(num_classes=2), train, test, cfg(epochs=1, lr=1e-2), out_dir=tmp_path / "a", run=run)
    with pytest.raises(SpikevitError, match="another model"):
        fit(TinyNet(num_classes=2), train, test, cfg(epochs=1), out_dir=tmp_path / "a",
            run={"model": "test-tinynet", "model_kwargs": {"num_classes": 3}})
    corrupt = tmp_path / "b" / "last.safetensors"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(SpikevitError, match="corrupt or foreign"):
        fit(TinyNet(num_classes=2), train, test, cfg(epochs=1), out_dir=tmp_path / "b", run=run)
    foreign = tmp_path / "c" / "last.safetensors"
    save_tensors(foreign, {"w": torch.zeros(2)}, "lca-dictionary")
    with pytest.raises(SpikevitError, match="expected a spikevit-train-checkpoint"):
        fit(TinyNet(num_classes=2), train, test, cfg(epochs=1), out_dir=tmp_path / "c", run=run)
    # truncated file (a kill while copying it elsewhere)
    good = (tmp_path / "a" / "last.safetensors").read_bytes()
    trunc = tmp_path / "d" / "last.safetensors"
    trunc.parent.mkdir()
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(SpikevitError):
        fit(TinyNet(num_classes=2), train, test, cfg(epochs=1), out_dir=tmp_path / "d", run=run)


def test_extra_loss_and_epoch_metric_hooks(tmp_path):
    """The extra loss joins the CE: a pull of fc.bias towards 5 moves it up; per-epoch metrics are logged."""
    train, test = toy_data(64), toy_data(16, seed=1)
    c = cfg(epochs=2, lr=5e-2, min_lr=5e-2, warmup_epochs=0)
    torch.manual_seed(0)
    plain = fit(TinyNet(num_classes=2, dropout=0.0), train, test, c)
    torch.manual_seed(0)
    hooks = TrainHooks(extra_loss=lambda m, logits, y: (100.0 * (m.fc.bias - 5.0).square().sum(),
                                                       {"bias_mean": m.fc.bias.mean()}),
                       epoch_metrics=lambda m: {"bias_mean": float(m.fc.bias.detach().mean())})
    pulled = fit(TinyNet(num_classes=2, dropout=0.0), train, test, c, hooks=hooks)
    # Adam moves a parameter with a dominant constant-sign gradient by ~lr per step (8 steps here)
    rise = pulled.model.fc.bias.detach() - plain.model.fc.bias.detach()
    assert (rise > 0.3).all(), rise
    e = pulled.history[-1]
    assert e["metrics"]["bias_mean"] == pytest.approx(float(pulled.model.fc.bias.detach().mean()))
    assert e["train"]["loss"] == pytest.approx(e["train"]["ce"] + e["train"]["extra_loss"], rel=1e-6)
    assert "bias_mean" in e["train"]


def test_bf16_autocast_runs_and_learns():
    res = fit(TinyNet(num_classes=2, dropout=0.0), toy_data(256), toy_data(64, seed=1),
              cfg(epochs=5, lr=1e-2, bf16=True))
    assert res.final["acc1"] > 80.0


def test_cli_train_on_real_mnist_slice(data_slices, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "--model", "test-tinynet", "--model-arg", "dropout=0.0", "--dataset", "mnist",
                   "--data-root", str(data_slices), "--img-size", "8", "--epochs", "2", "--batch-size", "20",
                   "--lr", "3e-3", "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["results"]["test"]["samples"] == 200  # 20 images per class in the test slice
    model, run = load_trained_model(out / "model.safetensors")
    assert run["model_kwargs"] == {"num_classes": 10, "in_chans": 1, "img_size": 8, "dropout": 0.0}
    assert model.fc.out_features == 10
    rc = cli_main(["train", "--model", "no-such-model", "--dataset", "mnist", "--data-root", str(data_slices),
                   "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown model 'no-such-model'" in err and len(err.strip().splitlines()) == 1


def test_build_model_passes_only_accepted_geometry():
    model, run = build_model("test-tinynet", "cifar10")
    assert run["model_kwargs"] == {"num_classes": 10, "in_chans": 3, "img_size": 32}
    assert model.conv.in_channels == 3
