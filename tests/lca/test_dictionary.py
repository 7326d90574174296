"""Dictionary: selection, normalisation, storage round trip, incremental growth, bad files."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import spikevit.lca.dictionary as dictionary_module
from spikevit.errors import SpikevitError
from spikevit.lca import Dictionary, encode, extend_gramian, normalize_atoms, select_exemplars
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
    before = d.atoms.clone()
    seen = []
    real = dictionary_module._unit_rows
    monkeypatch.setattr(dictionary_module, "_unit_rows", lambda f: seen.append(f.shape[0]) or real(f))
    new_x = torch.randn(7, 5)
    e = d.add(new_x, torch.full((7,), 3))
    assert e is d                           # grown in place
    assert seen == [7]                      # only the 7 new rows were processed
    assert d.size == 47 and d.num_classes == 4
    assert torch.equal(d.atoms[:, :40], before)
    torch.testing.assert_close(d.atoms[:, 40:], (new_x / new_x.norm(dim=1, keepdim=True)).T)
    # a new class is immediately decodable: an input equal to a new atom is coded by it
    codes = encode(d.atoms, 10 * d.atoms[:, 45][None])
    assert d.labels[codes.argmax(1)].item() == 3


def test_growth_is_amortised_and_writes_only_new_rows():
    x, y = _features(p=600, n=8)
    d = Dictionary.from_features(x[:1], y[:1])
    buffers = {d._rows.data_ptr()}
    for i in range(1, 600):
        ptr = d._rows.data_ptr()
        d.add(x[i:i + 1], y[i:i + 1], torch.tensor([i]))
        if d._rows.data_ptr() != ptr:
            buffers.add(d._rows.data_ptr())
            assert d.capacity >= 2 * (d.size - 1)        # a reallocation at least doubles the capacity
    # 599 single-atom additions reallocated the buffer only ceil(log2(600)) = 10 times
    assert len(buffers) - 1 == 10 and d.capacity == 1024
    # same atoms, labels, sources and codes as a dictionary built from scratch in one go
    ref = Dictionary.from_features(x, y)
    assert torch.equal(d.atoms, ref.atoms) and torch.equal(d.labels, ref.labels)
    assert torch.equal(d.source, ref.source)
    s = torch.randn(5, 8, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.equal(encode(d.atoms, s, backend="factored"), encode(ref.atoms, s, backend="factored"))


def test_cached_gramian_is_extended_not_rebuilt():
    x, y = _features(p=50, n=16)
    d = Dictionary.from_features(x[:40], y[:40])
    d.gramian()
    with FlopCounterMode(display=False) as fc:
        d.add(x[40:], y[40:])
    m_old, m_new, n = 40, 10, 16
    assert fc.get_total_flops() == 2 * n * m_new * (m_old + m_new)      # only phi^T phi_new
    torch.testing.assert_close(d.gramian(), d.atoms.T @ d.atoms)
    # the dense-Gramian backend gives the same codes with the extended Gramian as with its own
    s = 2 * torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    from spikevit.lca.encode import encode_trace
    torch.testing.assert_close(encode_trace(d.atoms, s, backend="gramian", gram=d.gramian()).codes,
                               encode(d.atoms, s, backend="gramian"), atol=1e-5, rtol=1e-5)


def test_provenance_survives_growth_and_storage(tmp_path):
    x, y = _features()
    d = Dictionary.from_features(x[:30], y[:30], dataset="toy", index=torch.arange(100, 130))
    d.add(x[30:35], y[30:35], torch.arange(5), dataset="toy", split="test")
    d.add(x[35:37], y[35:37], torch.arange(7, 9), dataset="toy", split="train")
    d.save(tmp_path / "d.safetensors")
    e = Dictionary.load(tmp_path / "d.safetensors")
    assert torch.equal(e.origin, d.origin) and torch.equal(e.source, d.source)
    assert e.provenance() == [{"dataset": "toy", "split": "train", "atoms": 32, "index_min": 7, "index_max": 129},
                              {"dataset": "toy", "split": "test", "atoms": 5, "index_min": 0, "index_max": 4}]
    assert e.atoms_from("toy", "test") == 5 and e.atoms_from("other", "test") == 0
    with pytest.raises(SpikevitError, match="5 atom\\(s\\) taken from the toy test split.*--allow-test-atoms"):
        e.check_disjoint("toy", "test")
    assert e.check_disjoint("toy", "test", allow=True) == 5
    assert e.check_disjoint("toy", "valid") == 0


def test_file_without_provenance_marks_added_atoms_unknown(tmp_path):
    x, y = _features()
    save_tensors(tmp_path / "old.safetensors", {"atoms": normalize_atoms(x[:12]), "labels": y[:12],
                                                "source": torch.arange(12)},
                 "lca-dictionary", {"dataset": "toy", "num_classes": 3, "added": 2})
    d = Dictionary.load(tmp_path / "old.safetensors")
    assert d.atoms_from("toy", "train") == 12       # 10 fitted train atoms + 2 of unknown split
    assert d.atoms_from("toy", "test") == 2
    with pytest.raises(SpikevitError, match="does not record"):
        d.check_disjoint("toy", "test")


@pytest.mark.parametrize("edit, message", [
    (lambda t, m: t["labels"].__setitem__(3, 12), "atom 3 has label 12, outside its 3 classes"),
    (lambda t, m: t["labels"].__setitem__(0, -1), "atom 0 has label -1"),
    (lambda t, m: t["atoms"][:, 4].zero_(), "1 all-zero atom"),
    (lambda t, m: t["atoms"].mul_(1000), "unit L2 norm; 20 do not \\(atom 0 has norm 1000"),
    (lambda t, m: m.__setitem__("class_names", ["a"]), "3 classes but only 1 class names"),
])
def test_edited_files_are_refused_at_load(tmp_path, edit, message):
    x, y = _features()
    d = Dictionary.from_features(x[:20], y[:20], dataset="toy")
    tensors = {"atoms": d.atoms.contiguous().clone(), "labels": d.labels.clone(), "source": d.source.clone(),
               "origin": d.origin.clone()}
    meta = dict(d.meta)
    edit(tensors, meta)
    save_tensors(tmp_path / "bad.safetensors", tensors, "lca-dictionary", meta)
    with pytest.raises(SpikevitError, match=message):
        Dictionary.load(tmp_path / "bad.safetensors")


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


def test_evaluate_hands_the_cached_gramian_to_the_dense_backend():
    from spikevit.data.features import FeatureSet
    from spikevit.lca.pipeline import evaluate

    x, y = _features(p=40, n=16)
    d = Dictionary.from_features(x[:10], y[:10], dataset="toy")
    d.add(x[10:12], y[10:12], dataset="toy", split="train")
    g = torch.Generator().manual_seed(3)
    test = FeatureSet(3 * torch.randn(20, 16, generator=g, dtype=torch.float64), torch.arange(20) % 3,
                      torch.arange(20), {"backbone": None, "dataset": "toy", "split": "test"})
    dense = evaluate(d, test, None, lam=0.5, steps=30, backend="gramian", shallow_train_size=0, device="cpu")
    assert d._gram is not None and d._gram_m == d.size          # built once, kept for later additions
    ref = evaluate(d, test, None, lam=0.5, steps=30, backend="factored", shallow_train_size=0, device="cpu")
    assert dense.accuracy == ref.accuracy
    torch.testing.assert_close(dense.active_mean, ref.active_mean)
