"""LCA code files round-trip (dense or sparse codes in, the same dense codes out) and refuse other files."""
import pytest
import torch

from spikevit.errors import SpikevitError
from spikevit.lca.codes import load_codes, save_codes
from spikevit.tensorio import save_tensors


def test_codes_round_trip_dense_and_sparse(tmp_path):
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(7, 30, generator=g) * (torch.rand(7, 30, generator=g) < 0.1)
    labels = torch.arange(7) % 3
    for name, given in (("dense", codes), ("sparse", codes.to_sparse())):
        save_codes(tmp_path / f"{name}.safetensors", given, labels, {"lam": 2.0, "dictionary": "d.safetensors"})
        back, back_labels, meta = load_codes(tmp_path / f"{name}.safetensors")
        assert torch.equal(back, codes) and torch.equal(back_labels, labels)
        assert meta["shape"] == [7, 30] and meta["lam"] == 2.0


def test_a_file_of_another_kind_is_refused(tmp_path):
    save_tensors(tmp_path / "d.safetensors", {"atoms": torch.zeros(2, 2)}, "lca-dictionary")
    with pytest.raises(SpikevitError, match="expected a lca-codes file"):
        load_codes(tmp_path / "d.safetensors")
