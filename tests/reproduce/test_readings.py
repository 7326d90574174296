"""dseld-mnist-readings: each reading changes one thing; checked against independent computations (MNIST slices)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from spikevit.data.datasets import load_dataset
from spikevit.reproduce import run_reproduction
from spikevit.reproduce.common import Context, features, pixel_images
from spikevit.reproduce.readings import BASE, file_order, on_off, reading_dictionary, unit_range


def _ctx(tmp_path, root):
    return dict(data_root=root, cache=tmp_path / "cache", out=tmp_path / "out", device="cpu")


def test_first_m_takes_the_lowest_file_indices(data_slices, tmp_path):
    ctx = Context("dseld-mnist-readings", **_ctx(tmp_path, data_slices))
    train = features(ctx, "mnist", "pixels", "train")
    order = file_order("mnist", data_slices, "train")
    samples = load_dataset("mnist", data_slices, "train").samples
    assert order.tolist() == [int(Path(p).stem) for p, _ in samples]
    d = reading_dictionary(train, BASE | {"selection": "first"}, 30, 0, order)
    lowest = sorted(order.tolist())[:30]
    assert sorted(order[d.source].tolist()) == lowest
    # atoms are the unit-normalised pixel vectors of exactly those images
    rows = torch.isin(train.index, d.source)
    x = train.features[rows]
    torch.testing.assert_close(d.atoms.T, x / x.norm(dim=1, keepdim=True))


def test_pixel_transforms_match_their_definitions(data_slices, tmp_path):
    ctx = Context("dseld-mnist-readings", **_ctx(tmp_path, data_slices))
    test = features(ctx, "mnist", "pixels", "test")
    raw, _ = pixel_images("mnist", data_slices, "test", test.index[:16])        # ToTensor only: [0, 1]
    torch.testing.assert_close(unit_range(test).features[:16], raw.flatten(1), atol=1e-6, rtol=0)
    oo = on_off(test).features
    assert oo.shape[1] == 2 * test.features.shape[1] and (oo >= 0).all()
    torch.testing.assert_close(oo[:, :784] - oo[:, 784:], test.features)


def test_readings_run_and_report_each_change(data_slices, tmp_path):
    over = {"readings": "baseline,first-M,on-off,raw-atoms", "M": "60", "shallow_train": "0", "batch": "64"}
    doc = json.loads(run_reproduction("dseld-mnist-readings", overrides=over,
                                      **_ctx(tmp_path, data_slices)).read_text())
    rows = {r["reading"]: r for r in doc["results"]["rows"]}
    assert set(rows) == {"baseline", "first-M", "on-off", "raw-atoms"}
    assert rows["on-off"]["N"] == 1568 and rows["baseline"]["N"] == 784
    assert all(r["M"] == 60 and "shallow" not in r for r in rows.values())
    assert rows["baseline"]["diff_max_sum"] == rows["baseline"]["max_sum"] - 97.48
    # the partial file survives a subset of the readings, so a later run adds the rest
    assert (tmp_path / "out" / "dseld-mnist-readings" / "dseld-mnist-readings-partial.json").is_file()
