"""Paper tables (ViT-LCA Table I, D-SELD Tables 3 and 6): the real torchvision path, run offline with weights=none."""
from __future__ import annotations

import json

import pytest

from spikevit.errors import SpikevitError
from spikevit.reproduce import run_reproduction
from spikevit.reproduce.classification import TABLES, run_row, table_rows
from spikevit.reproduce.common import Context


def test_table_rows_and_filters():
    assert [r[0] for r in table_rows("vit-lca-table1")] == ["cifar10", "cifar100", "imagenet"]
    assert [r[1] for r in table_rows("dseld-table3", "imagenet")] == ["resnet152", "efficientnet_v2_s"]
    assert table_rows("dseld-mnist")[0][4] == 28 * 28 * 2
    assert {r[1] for rows in TABLES.values() for r in rows} >= {"vit_b_16", "resnet152", "efficientnet_v2_s"}
    with pytest.raises(SpikevitError, match="no rows for"):
        table_rows("vit-lca-table1", "mnist")


def _ctx(tmp_path, data_root):
    return dict(data_root=data_root, cache=tmp_path / "cache", out=tmp_path / "out", device="cpu")


def test_vit_b_16_table_path_offline(data_slices, tmp_path):
    over = {"datasets": "cifar10", "weights": "none", "train_images": "6", "test_images": "3", "batch": "8", "M": "6"}
    path = run_reproduction("vit-lca-table1", overrides=over, **_ctx(tmp_path, data_slices))
    assert path.name == "vit-lca-table1-weights-none.json"            # never mixed up with real-weight results
    doc = json.loads(path.read_text())
    (row,) = doc["results"]["rows"]
    assert (row["backbone"], row["N"], row["M"], row["test_images"]) == ("vit_b_16", 768, 6, 3)
    assert row["paper_max_sum"] == 95.63 and 0 <= row["max_sum"] <= 100 and "shallow" not in row
    assert "NOT the published weights" in path.with_suffix(".md").read_text()
    assert (tmp_path / "cache" / "cifar10" / "vit_b_16_random" / "train-n6" / "manifest.json").is_file()


def test_resnet152_table_path_offline(data_slices, tmp_path):
    over = {"datasets": "cifar10", "weights": "none", "train_images": "6", "test_images": "3", "image_size": "64",
            "shallow_train": "4", "batch": "8", "M": "6"}
    doc = json.loads(run_reproduction("dseld-table3", overrides=over, **_ctx(tmp_path, data_slices)).read_text())
    (row,) = doc["results"]["rows"]
    assert (row["backbone"], row["N"], row["M"]) == ("resnet152", 2048, 6)
    assert {"max_activation", "max_sum", "shallow", "paper_shallow"} <= set(row)


def test_efficientnet_v2_s_row_offline(data_slices, tmp_path):
    ctx = Context("dseld-table6", **_ctx(tmp_path, data_slices))
    params = {"weights": "none", "image_size": 64, "download": False, "train_images": 6, "test_images": 3,
              "M": 6, "shallow_train": "0", "lam": 2.0, "tau": 100.0, "steps": 100, "batch": 8, "seed": 0,
              "backend": "auto", "workers": 0, "extract_batch": 8}
    out = run_row(ctx, params, "cifar10", "efficientnet_v2_s", {"max_sum": 75.41}, 50000)
    assert out["row"]["N"] == 1280 and out["row"]["paper_max_sum"] == 75.41
    assert out["active_mean"].shape == (100,)


def test_mnist_row_runs_on_pixels(data_slices, tmp_path):
    over = {"test_images": "40", "shallow_train": "60", "M": "150"}
    doc = json.loads(run_reproduction("dseld-mnist", overrides=over, **_ctx(tmp_path, data_slices)).read_text())
    (row,) = doc["results"]["rows"]
    assert row["N"] == 784 and row["M"] == 150 and row["paper_M"] == 1568      # the slice has 200 train images
    assert row["paper_max_sum"] == 97.48 and row["max_sum"] > 50
    assert row["shallow_train_codes"] == 60 and row["shallow_method"] == "lbfgs"


def test_mnist_row_shallow_on_the_whole_training_set(data_slices, tmp_path):
    over = {"test_images": "40", "M": "100", "shallow_epochs": "3", "shallow_batch": "32"}
    doc = json.loads(run_reproduction("dseld-mnist", overrides=over, **_ctx(tmp_path, data_slices)).read_text())
    (row,) = doc["results"]["rows"]
    assert row["shallow_train_codes"] == 200 and row["shallow_method"] == "adam"   # every training image
    assert 0 <= row["shallow"] <= 100 and row["shallow_fit_s"] >= 0


def test_mnist_row_never_shrinks_the_paper_dictionary(data_slices, tmp_path):
    # the slice holds 200 training images, fewer than the paper's M = 1,568: an error, not a silent M = 200
    with pytest.raises(SpikevitError, match="M = 1,568 exceeds the 200 mnist training images.*--set M=200"):
        run_reproduction("dseld-mnist", overrides={"test_images": "10"}, **_ctx(tmp_path, data_slices))
    with pytest.raises(SpikevitError, match="shallow_train must be"):
        run_reproduction("dseld-mnist", overrides={"M": "50", "shallow_train": "-1"}, **_ctx(tmp_path, data_slices))


def test_missing_dataset_is_a_clear_error(data_slices, tmp_path):
    with pytest.raises(SpikevitError, match="imagenet"):
        run_reproduction("dseld-table3", overrides={"datasets": "imagenet", "weights": "none"},
                         **_ctx(tmp_path, data_slices))
