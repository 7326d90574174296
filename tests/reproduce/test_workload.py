"""ViT-LCA Table I / D-SELD Table 4 arithmetic and the measured-M_hat rows."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
import torch

from spikevit.lca import Dictionary, encode_trace
from spikevit.reproduce import run_reproduction
from spikevit.reproduce.common import Context, features
from spikevit.reproduce.workload import paper_table, reductions, round_like


def test_vit_lca_table1_exactly():
    row = next(r for r in paper_table(50000, 200.0) if r["backbone"] == "ViT-B/16" and r["K"] == 100)
    # closed forms: 50000 * 50001 * 1535 / 2 and 100 * (1535 * 50000 / 100 + 2 * 50000 * 200 + 50000)
    assert row["training_TFLOPs"] * 1e12 == pytest.approx(1_918_788_375_000, rel=1e-12)
    assert row["inference_GFLOPs"] * 1e9 == pytest.approx(2_081_750_000, rel=1e-12)
    assert row["inference_energy_mJ"] == pytest.approx(2_081_750_000 * 9.09e-14 * 1e3, rel=1e-12)
    assert (round_like(row["training_TFLOPs"], "1.92"), round_like(row["inference_GFLOPs"], "2.08"),
            round_like(row["inference_energy_mJ"], "0.19")) == ("1.92", "2.08", "0.19")
    assert row["match"] is True


def test_dseld_table4_rows():
    rows = paper_table(50000, 200.0)
    checked = [r for r in rows if r["match"] is not None]
    assert len(checked) == 13
    wrong = [(r["backbone"], r["K"]) for r in checked if not r["match"]]
    # 10 * (1919 * 5000 + 2 * 50000 * 200 + 50000) = 296,450,000 FLOPs -> 0.30 GFLOPs; the paper prints 0.29
    assert wrong == [("MobileNet", 10)]
    mob = next(r for r in rows if r["backbone"] == "MobileNet" and r["K"] == 10)
    assert mob["inference_GFLOPs"] * 1e9 == pytest.approx(296_450_000, rel=1e-12)
    _, mean = reductions(rows)
    assert int(mean) == 84          # the paper: "an average reduction of 84%" (ours 84.5)


def test_round_like_is_half_up_on_the_decimal_value():
    assert round_like(0.185, "0.19") == "0.19"          # Python's round(0.185, 2) gives 0.18
    assert round_like(3.19881, "3.2") == "3.2" and round_like(2.4, "2") == "2"
    assert Decimal(round_like(1.2345, "1.234")) == Decimal("1.235")


def test_measured_m_hat_matches_direct_encoding(run_kwargs):
    path = run_reproduction("workload", overrides={"measure": "digits:pixels", "M": "400", "test_images": "30",
                                                   "batch": "16"}, **run_kwargs)
    doc = json.loads(path.read_text())
    measured = doc["results"]["measured"]
    assert [r["K"] for r in measured] == [100, 10]
    # independent check: same dictionary and test rows, gramian backend, mean of the active trace
    ctx = Context("x", cache=run_kwargs["cache"], extract=False)
    train = features(ctx, "digits", "pixels", "train")
    test = features(ctx, "digits", "pixels", "test", limit=30)
    d = Dictionary.from_features(train.features, train.labels, 400, seed=0)
    for row in measured:
        out = encode_trace(d.atoms, test.features, lam=2.0, tau=100.0, steps=row["K"], backend="gramian",
                           trace="active")
        assert row["M_hat_measured"] == pytest.approx(float(out.active.double().mean()), rel=1e-6)
    assert measured[0]["M_hat_measured"] > 0        # K = 10 with lam = 2 may stay silent (the paper lowers lam)
    assert path.with_suffix(".md").is_file() and (path.parent / "workload-gflops.png").is_file()
    assert "paper_inference_GFLOPs" in path.with_suffix(".md").read_text()


def test_missing_features_are_reported_not_faked(run_kwargs):
    path = run_reproduction("workload", overrides={"measure": "cifar10:efficientnet_lite0", "test_images": "5"},
                            extract=False, **run_kwargs)
    doc = json.loads(path.read_text())
    assert doc["results"]["measured"] == []
    assert "spikevit lca extract --dataset cifar10" in doc["results"]["measurement_skipped"][0]


def test_features_subset_equals_limited_extraction(digits_cache, tmp_path):
    """A subset of a full cached split picks the rows `extract --limit` would extract."""
    from spikevit.data.features import extract_features, load_features

    ctx = Context("x", cache=digits_cache, extract=False)
    sub = features(ctx, "digits", "pixels", "test", limit=25)
    direct = load_features(extract_features("digits", None, "test", "pixels", tmp_path, limit=25,
                                            show_progress=False))
    assert torch.equal(sub.index, direct.index) and torch.equal(sub.features, direct.features)
