"""DTS training: the mask loss over the chosen groups against a brute-force sum, the time-step parameters
kept out of weight decay, and a DTS Spikformer run killed mid-epoch that resumes to exactly the
uninterrupted run (weights, TP, masks, optimiser-driven T_l trajectory), with every mask still a prefix."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from spikevit.dts import DTSSpec, mask_loss
from spikevit.dts.loss import DEFAULT_MASK_GROUPS, MASK_GROUPS, mask_steps
from spikevit.dts.train import build_dts_model, dts_hooks
from spikevit.models import create_model
from spikevit.train import TrainConfig, fit
from spikevit.train.checkpoint import load_checkpoint
from spikevit.train.trainer import _SimulatedKill, default_param_groups


def randomised_tiny(seed: int):
    torch.manual_seed(seed)
    model = create_model("spikformer-1-64", num_classes=10, img_size=16, in_chans=3, tmax=5, dts=True,
                         init_steps=2, min_steps=0)
    g = torch.Generator().manual_seed(seed)
    for m in model.spiking_layers().values():
        m.dtss.tp.data.copy_(torch.randn(5, generator=g) * 0.6)
    return model


@pytest.mark.parametrize("groups", [("qkv", "mlp"), ("sps",), ("attn", "mlp"), MASK_GROUPS, ("head",), ()])
def test_mask_loss_is_lambda_times_the_kept_steps_of_the_chosen_groups(groups):
    model = randomised_tiny(len(groups))
    lam = 0.37
    # brute force: count the kept steps by scanning each layer's scores TS against the threshold 1
    expect = 0
    for m in model.spiking_layers().values():
        if m.group in groups:
            ts = torch.cumsum(m.dtss.tp.detach().abs().flip(0), 0).flip(0)   # TS[t] = sum_{j>=t} |TP[j]|
            expect += int((ts >= 1).sum())
    assert float(mask_steps(model, groups).detach()) == expect
    assert float(mask_loss(model, lam, groups).detach()) == pytest.approx(lam * expect)
    if not groups:
        assert float(mask_loss(model, lam, groups)) == 0.0


def test_default_mask_groups_are_the_papers_best():
    assert DEFAULT_MASK_GROUPS == ("qkv", "mlp")
    assert DTSSpec("spikformer-1-64").mask_groups == ("qkv", "mlp")
    model = randomised_tiny(7)
    steps = model.time_steps()
    layers = model.spiking_layers()
    manual = sum(steps[n] for n, m in layers.items() if m.group in ("qkv", "mlp"))
    assert float(mask_loss(model, 1.0).detach()) == manual


def test_time_step_parameters_get_no_weight_decay():
    """AdamW's decay on TP would shrink every score and remove steps on its own, a hidden mask loss."""
    model = randomised_tiny(0)
    groups = default_param_groups(model, TrainConfig(weight_decay=0.05))
    tps = {id(m.dtss.tp) for m in model.spiking_layers().values()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        if g["weight_decay"] > 0:
            assert not ids & tps
        else:
            assert tps <= ids
    # and in practice: zero task gradient, zero mask loss -> TP does not move under AdamW
    tp0 = {n: m.dtss.tp.detach().clone() for n, m in model.spiking_layers().items()}
    opt = torch.optim.AdamW(groups, lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        (sum(p.sum() for p in model.parameters() if p.ndim >= 2) * 0.0).backward()
        for m in model.spiking_layers().values():
            m.dtss.tp.grad = torch.zeros_like(m.dtss.tp)
        opt.step()
    for n, m in model.spiking_layers().items():
        assert torch.equal(m.dtss.tp.detach(), tp0[n]), n


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g)
    y = (x[:, :, :8].mean((1, 2, 3)) > x[:, :, 8:].mean((1, 2, 3))).long()
    return TensorDataset(x, y)


def test_dts_run_killed_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    spec = DTSSpec("spikformer-1-64", tmax=4, init_steps=2, min_steps=1, lambda_m=0.05, mask_groups="all",
                   model_args={"dim": 16, "heads": 2})
    config = TrainConfig(epochs=2, batch_size=8, lr=2e-2, min_lr=1e-3, warmup_epochs=0.5, seed=5)
    train, test = _data(32, 0), _data(16, 1)  # 4 steps per epoch

    def run(out, stop=None, seed=0):
        torch.manual_seed(seed)
        model, meta = build_dts_model(spec, "mnist", 16)
        return fit(model, train, test, config, out_dir=out, hooks=dts_hooks(spec), run=meta,
                   stop_after_steps=stop)

    ref = run(tmp_path / "ref")
    with pytest.raises(_SimulatedKill):
        run(tmp_path / "killed", stop=6)                     # dies in epoch 2, after epoch 1's checkpoint
    _, meta = load_checkpoint(tmp_path / "killed" / "last.safetensors")
    assert meta["epoch"] == 1
    resumed = run(tmp_path / "killed", seed=99)              # a fresh process with another initialisation
    assert resumed.resumed_from == 1
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    # the mask loss took part (its step count was logged) and the masks are still prefixes
    log = json.loads((tmp_path / "killed" / "log.json").read_text())["epochs"]
    ref_log = json.loads((tmp_path / "ref" / "log.json").read_text())["epochs"]
    assert [e["metrics"]["T_l"] for e in log] == [e["metrics"]["T_l"] for e in ref_log]
    assert all("mask_steps" in e["train"] for e in log)
    moved = False
    for m in resumed.model.spiking_layers().values():
        tm = m.mask().detach()
        assert set(tm.tolist()) <= {0.0, 1.0} and (tm[1:] <= tm[:-1]).all() and tm[0] == 1
        moved |= not torch.allclose(m.dtss.tp.detach().abs(), torch.full((4,), 5 / 12))
    assert moved                                             # the optimiser did change the time parameters


@pytest.mark.parametrize("dataset,chans,size,flips", [("cifar10", 3, 32, True), ("mnist", 1, 28, False)])
def test_training_augmentation_is_a_padded_random_crop_and_flip(dataset, chans, size, flips):
    """Each augmented image must be the normalised original shifted by at most size/8 pixels (zero fill),
    mirrored or not (never for digits); the test transform is the plain normalisation."""
    import numpy as np
    from PIL import Image

    from spikevit.data import dataset_spec
    from spikevit.train.data import build_transforms

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size, size, chans), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if chans == 1 else arr)
    spec = dataset_spec(dataset)
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    raw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
    test_t = build_transforms(dataset, train=False)
    torch.testing.assert_close(test_t(img), (raw - mean) / std)
    pad = size // 8
    padded = torch.nn.functional.pad(raw, (pad, pad, pad, pad))
    candidates = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + size, dx:dx + size]
            candidates[(dy - pad, dx - pad, False)] = (crop - mean) / std
            candidates[(dy - pad, dx - pad, True)] = (crop.flip(-1) - mean) / std
    train_t = build_transforms(dataset, train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        out = train_t(img)
        match = [k for k, v in candidates.items() if torch.allclose(out, v, atol=1e-5)]
        assert match, "augmented image is not a padded crop (+ flip) of the original"
        seen.add(match[0])
    assert len({(dy, dx) for dy, dx, _ in seen}) > 5           # the shifts vary
    assert any(f for *_, f in seen) == flips                   # mirrored only where the dataset allows it
