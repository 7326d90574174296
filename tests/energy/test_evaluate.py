"""The shared evaluation loop: accuracy / loss against a direct computation, and its summed profile
against per-batch profiles."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikevit.energy import profile
from spikevit.train.evaluate import evaluate


def test_evaluate_accuracy_loss_and_summed_profile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(11, 6, generator=g), torch.randint(0, 4, (11,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    res = evaluate(model, loader, "cpu", profile=True)
    with torch.no_grad():
        logits = model(x)
    assert res["samples"] == 11
    assert res["acc1"] == pytest.approx(100.0 * float((logits.argmax(1) == y).float().mean()))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert res["acc5"] == 100.0                                   # 4 classes: the true one is always in the top 4
    per_batch = [profile(model, xb) for xb, _ in loader]
    prof = res["profile"]
    assert prof.samples == 11 and prof.macs == sum(p.macs for p in per_batch) == 11 * (6 * 8 + 8 * 4)
    assert prof.nonzero_macs == sum(p.nonzero_macs for p in per_batch)
    # max_batches: the first two batches only
    assert evaluate(model, loader, "cpu", max_batches=2)["samples"] == 8
