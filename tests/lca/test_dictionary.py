"""Dictionary: selection, normalisation, storage round trip, incremental growth, bad files."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import spikevit.lca.dictionary as dictionary_module
from spikevit.errors import SpikevitError
from spikevit.lca import Dictionary, encode, extend_gramian, select_exemplars
from spikevit.tensorio import save_tensors


def _features(p=60, n=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(p, n, generator=g), torch.arange(p) % c


def test_from_features_normalises_atoms_and_keeps_inputs():
    x, y = _features()
    d = Dictionary.from_features(x, y, 20, seed=1, backbone="pixels")
    assert d.atoms.shape == (5, 20)
    torch.testing.assert_close(d.atoms.norm(dim=0), torch.ones(20))
    torch.testing.assert_close(d.atoms.T * x[d.source].norm(dim=1, keepdim=True), x[d.source])
    assert torch.equal(d.labels, y[d.source])


def test_selection_is_seeded_and_balanced():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    a = select_exemplars(y, 30, "random", seed=3)
    assert torch.equal(a, select_exemplars(y, 30, "random", seed=3))
    assert not torch.equal(a, select_exemplars(y, 30, "random", seed=4))
    b = select_exemplars(y, 30, "balanced", seed=0)
    assert torch.bincount(y[b]).tolist() == [10, 10, 10]
    assert len(set(b.tolist())) == 30
    with pytest.raises(SpikevitError, match="exceeds"):
        select_exemplars(y, 101)


def test_save_load_round_trip(tmp_path):
    x, y = _features()
    d = Dictionary.from_features(x, y, 25, backbone="resnet50", dataset="toy", class_names=["a", "b", "c"])
    d.save(tmp_path / "d.safetensors")
    e = Dictionary.load(tmp_path / "d.safetensors")
    assert torch.equal(d.atoms, e.atoms) and torch.equal(d.labels, e.labels) and torch.equal(d.source, e.source)
    assert e.meta["backbone"] == "resnet50" and e.meta["class_names"] == ["a", "b", "c"]


def test_load_refuses_foreign_corrupt_and_missing(tmp_path):
    with pytest.raises(SpikevitError, match="not found"):
        Dictionary.load(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SpikevitError, match="corrupt or foreign"):
        Dictionary.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(SpikevitError, match="foreign"):
        Dictionary.load(tmp_path / "foreign.safetensors")
    save_tensors(tmp_path / "codes.safetensors", {"x": torch.zeros(1)}, "lca-codes")
    with pytest.raises(SpikevitError, match="lca-codes file, expected a lca-dictionary"):
        Dictionary.load(tmp_path / "codes.safetensors")


def test_mismatched_features_are_refused():
    x, y = _features()
    d = Dictionary.from_features(x, y, 10, backbone="vit_b_16")
    with pytest.raises(SpikevitError, match="expects"):
        d.check_features(torch.zeros(3, 7))
    with pytest.raises(SpikevitError, match="backbone 'resnet50'"):
        d.check_features(torch.zeros(3, 5), "resnet50")
    with pytest.raises(SpikevitError, match="empty dictionary"):
        Dictionary.from_features(x[:0], y[:0])
    with pytest.raises(SpikevitError, match="NaN"):
        Dictionary.from_features(x.index_fill(0, torch.tensor([2]), float("nan")), y)


def test_add_only_normalises_new_exemplars_and_adds_classes(monkeypatch):
    x, y = _features()
    d = Dictionary.from_features(x[:40], y[:40])
    seen = []
    real = dictionary_module.normalize_atoms
    monkeypatch.setattr(dictionary_module, "normalize_atoms", lambda f: seen.append(f.shape[0]) or real(f))
    new_x = torch.randn(7, 5)
    e = d.add(new_x, torch.full((7,), 3))
    assert seen == [7]                      # only the 7 new rows were processed
    assert e.size == 47 and e.num_classes == 4
    assert e.atoms[:, :40].data_ptr() != 0 and torch.equal(e.atoms[:, :40], d.atoms)
    # a new class is immediately decodable: an input equal to a new atom is coded by it
    codes = encode(e.atoms, 10 * e.atoms[:, 45][None])
    assert e.labels[codes.argmax(1)].item() == 3


def test_extend_gramian_costs_only_the_new_columns():
    g = torch.Generator().manual_seed(0)
    old, new = torch.randn(16, 50, generator=g), torch.randn(16, 6, generator=g)
    gram = old.T @ old
    with FlopCounterMode(display=False) as fc:
        full = extend_gramian(gram, old, new)
    torch.testing.assert_close(full, torch.cat([old, new], 1).T @ torch.cat([old, new], 1))
    n, m_old, m_new = 16, 50, 6
    assert fc.get_total_flops() == 2 * n * m_new * (m_old + m_new)   # not 2 n (m_old + m_new)^2


def test_shallow_training_rows_prefer_non_exemplars_and_map_atoms():
    from spikevit.data.features import FeatureSet
    from spikevit.lca.pipeline import _shallow_rows

    x, y = _features(p=60)
    train = FeatureSet(x, y, torch.arange(100, 160), {})   # split indices 100..159
    d = Dictionary.from_features(x, y, 40, seed=0)
    d.source = train.index[d.source]                        # atoms remember split indices
    rows, excl = _shallow_rows(d, train, 30, seed=0)
    assert len(set(rows.tolist())) == 30
    assert (excl[:20] == -1).all()                          # the 20 non-exemplars come first
    # the 10 exemplar rows carry their own atom to silence
    assert torch.equal(d.source[excl[20:]], train.index[rows[20:]])
