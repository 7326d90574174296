"""Feature cache: sharding, resume after a kill without recomputation, refusal of bad caches."""
import json

import pytest
import torch

import spikevit.data.features as features_module
from spikevit.backbones.registry import _Pixels
from spikevit.data import extract_features, load_dataset, load_features
from spikevit.errors import SpikevitError


class Killed(Exception):
    pass


def test_resume_after_kill_recomputes_nothing(tmp_path, monkeypatch):
    calls = []
    real_forward = _Pixels.forward

    def counting_forward(self, x):
        calls.append(x.shape[0])
        if kill_after[0] is not None and len(calls) > kill_after[0]:
            raise Killed()
        return real_forward(self, x)

    kill_after = [5]
    monkeypatch.setattr(_Pixels, "forward", counting_forward)
    kw = dict(batch_size=50, shard_size=200, show_progress=False)
    with pytest.raises(Killed):
        extract_features("digits", None, "test", "pixels", tmp_path, **kw)
    done = sorted(p.name for p in tmp_path.rglob("shard-*.safetensors"))
    assert done == ["shard-00000.safetensors"]          # 4 batches of 50 = shard 0 written, shard 1 lost
    calls.clear(); kill_after[0] = None
    folder = extract_features("digits", None, "test", "pixels", tmp_path, **kw)
    assert sum(calls) == 540 - 200                      # shard 0 was not recomputed
    calls.clear()
    extract_features("digits", None, "test", "pixels", tmp_path, **kw)
    assert calls == []                                   # complete cache: no work at all
    fs = load_features(folder)
    ref = torch.stack([load_dataset("digits", None, "test", transform=_transform())[i][0] for i in range(540)])
    torch.testing.assert_close(fs.features, ref)
    assert fs.features.shape == (540, 64) and fs.labels.shape == (540,)
    assert torch.equal(fs.index, torch.arange(540))
    assert fs.meta["backbone"] == "pixels"


def _transform():
    from spikevit.backbones import create_backbone
    from spikevit.data import dataset_spec
    spec = dataset_spec("digits")
    return create_backbone("pixels", pixel_stats=(spec.mean, spec.std)).transform


def test_incomplete_or_changed_cache_is_refused(tmp_path):
    folder = extract_features("digits", None, "train", "pixels", tmp_path, shard_size=300, show_progress=False)
    (folder / "shard-00001.safetensors").unlink()
    with pytest.raises(SpikevitError, match="incomplete"):
        load_features(folder)
    with pytest.raises(SpikevitError, match="different settings"):
        extract_features("digits", None, "train", "pixels", tmp_path, shard_size=100, show_progress=False)
    (folder / "shard-00000.safetensors").write_bytes(b"not a safetensors file")
    # a corrupt shard is recomputed on resume, never read as data
    extract_features("digits", None, "train", "pixels", tmp_path, shard_size=300, show_progress=False)
    assert load_features(folder).features.shape[0] == 1257
    with pytest.raises(SpikevitError, match="missing manifest"):
        load_features(tmp_path / "nothing")


def test_limit_takes_a_seeded_mix_of_classes(tmp_path):
    folder = extract_features("digits", None, "train", "pixels", tmp_path, limit=100, show_progress=False)
    fs = load_features(folder)
    assert fs.features.shape == (100, 64)
    assert len(fs.labels.unique()) == 10
    assert json.loads((folder / "manifest.json").read_text())["rows"] == 100


def test_imagefolder_slice_of_shared_data(data_slices, tmp_path):
    folder = extract_features("mnist", data_slices, "test", "pixels", tmp_path, show_progress=False)
    fs = load_features(folder)
    assert fs.features.shape == (200, 784)
    # MNIST normalisation (0.1307, 0.3081): background pixels map to -0.4242
    assert fs.features.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-4)
    assert torch.bincount(fs.labels).tolist() == [20] * 10


def test_missing_root_and_unknown_dataset(tmp_path):
    with pytest.raises(SpikevitError, match="data root not found"):
        load_dataset("cifar10", tmp_path / "nope", "train")
    with pytest.raises(SpikevitError, match="not found under"):
        load_dataset("cifar10", tmp_path, "train")
    with pytest.raises(SpikevitError, match="unknown dataset"):
        load_dataset("svhn", tmp_path, "train")
    with pytest.raises(SpikevitError, match="needs --data-root"):
        load_dataset("mnist", None, "train")


def test_cache_made_with_other_preprocessing_is_refused(tmp_path):
    folder = extract_features("digits", None, "test", "pixels", tmp_path, show_progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "ConvertMode('L')" in manifest["transform"]       # greyscale digits: 64 features, not 3 x 64
    manifest["transform"] = manifest["transform"].replace("'L'", "'RGB'")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpikevitError, match="different settings \\(transform\\)"):
        extract_features("digits", None, "test", "pixels", tmp_path, show_progress=False)
