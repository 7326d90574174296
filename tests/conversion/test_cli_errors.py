"""`spikevit convert` refuses bad input up front: exit code 2, one line naming the problem, no traceback."""
import pickle

import pytest
import torch

from spikevit.cli.main import main
from spikevit.models import create_model


class Payload:
    """Not a tensor: a pickle holding it must never be unpickled."""


def _err(capsys, args) -> str:
    assert main(args) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in cap.err and "\n" not in err, cap.err
    assert "ANN:" not in cap.out                                  # refused before any work
    return err


def test_sweep_rows_zero(capsys):
    err = _err(capsys, ["convert", "sweep", "--rows", "0"])
    assert "--rows" in err and ">= 1" in err


@pytest.mark.parametrize("name,msg", [("timm:not_a_model", "timm has no model 'not_a_model'"),
                                      ("torchvision:get_model", "torchvision has no model 'get_model'"),
                                      ("no-such-model", "not a registry model")])
def test_unknown_models(capsys, tmp_path, name, msg):
    pytest.importorskip("timm")
    ckpt = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(ckpt))
    err = _err(capsys, ["convert", "run", "--model", name, "--checkpoint", str(ckpt)])
    assert err.startswith("spikevit: error:") and msg in err


def _tv_state(tmp_path, num_classes=10):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    return m.state_dict()


def test_bad_checkpoints(capsys, tmp_path):
    from safetensors.torch import save_file

    state = _tv_state(tmp_path)
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(good))
    run = ["convert", "run", "--model", "torchvision:mobilenet_v3_small", "--dataset", "cifar10", "--checkpoint"]

    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    assert "not a readable state dict" in _err(capsys, run + [str(noise)])
    noise_pth = tmp_path / "noise.pth"
    noise_pth.write_bytes(noise.read_bytes())
    assert "not a readable state dict" in _err(capsys, run + [str(noise_pth)])
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable state dict" in _err(capsys, run + [str(truncated)])
    assert "file not found" in _err(capsys, run + [str(tmp_path / "missing.pth")])

    wrong = tmp_path / "wrong.pth"
    torch.save(_tv_state(tmp_path, num_classes=5), wrong)
    err = _err(capsys, run + [str(wrong)])
    assert "does not fit torchvision:mobilenet_v3_small" in err and "size mismatch" in err

    pkl = tmp_path / "object.pth"
    with open(pkl, "wb") as fh:              # a pickle of an arbitrary object: weights_only refuses it
        pickle.dump({"model": Payload()}, fh)
    assert "not a readable state dict" in _err(capsys, run + [str(pkl)])

    nan_state = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in nan_state.items() if v.is_floating_point() and v.dim() > 1)
    nan_state[key][0] = float("nan")
    nan = tmp_path / "nan.pth"
    torch.save(nan_state, nan)
    err = _err(capsys, run + [str(nan)])
    assert f"weight {key!r} holds NaN" in err


def test_registry_model_file_problems(capsys, tmp_path, data_slices):
    from spikevit.train import save_model

    torch.manual_seed(0)
    m = create_model("vit-cifar-micro")
    with torch.no_grad():
        m.head.weight[0, 0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_model(nan, m, {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    base = ["convert", "run", "--model", "vit-cifar-micro", "--dataset", "cifar10", "--data-root", str(data_slices)]
    assert "weight 'head.weight' holds NaN" in _err(capsys, base + ["--checkpoint", str(nan)])

    gray = create_model("vit-cifar-micro", in_chans=1)
    one = tmp_path / "gray.safetensors"
    save_model(one, gray, {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10, "in_chans": 1},
                           "dataset": "mnist"})
    err = _err(capsys, base + ["--checkpoint", str(one)])
    assert "cannot take inputs of shape (1, 3, 32, 32)" in err

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    assert "--checkpoint" in _err(capsys, base + ["--checkpoint", str(junk)])

    good = tmp_path / "good.safetensors"
    save_model(good, create_model("vit-cifar-micro"),
               {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    folder = tmp_path / "out"
    folder.mkdir()
    assert "--json" in _err(capsys, base + ["--checkpoint", str(good), "--json", str(folder)])
    assert "refusing to overwrite" in _err(capsys, base + ["--checkpoint", str(good), "--json", str(good)])


def test_run_all_level_reports_spiking_products(tmp_path, data_slices):
    import json

    from spikevit.train import save_model

    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_model(ckpt, create_model("vit-cifar-micro"),
               {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    j = tmp_path / "all.json"
    assert main(["convert", "run", "--model", "vit-cifar-micro", "--checkpoint", str(ckpt), "--dataset", "cifar10",
                 "--data-root", str(data_slices), "--spiking", "all", "--test-subset", "10", "--batch-size", "10",
                 "--calibration-samples", "10", "--energy-batches", "1", "--no-layer-by-layer", "--sweep-steps", "",
                 "--json", str(j)]) == 0
    doc = json.loads(j.read_text())
    rows = [r for r in doc["tables"]["purity"] if r["block"].startswith("blocks")]
    assert rows and all(r["event_driven"] for r in rows)
    assert doc["results"]["spiking"] == "all" and doc["results"]["energy"]["snn_acs"] > 0
