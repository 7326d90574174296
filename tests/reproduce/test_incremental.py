"""Incremental reproduction: class-by-class growth in place equals a from-scratch dictionary (offline, digits)."""
from __future__ import annotations

import json

import torch

from spikevit.data.features import feature_dir, load_features
from spikevit.lca import Dictionary, encode
from spikevit.lca.decoders import class_sums
from spikevit.reproduce import run_reproduction
from spikevit.reproduce.incremental import class_exemplars

OVER = {"datasets": "digits", "train_images": "", "test_images": "", "per_class": "20", "start_classes": "3",
        "lam": "0.5", "steps": "40", "chunk": "50", "growth_max": "600", "gram_max": "300"}


def test_class_by_class_growth_matches_a_dictionary_built_from_scratch(run_kwargs, digits_cache):
    doc = json.loads(run_reproduction("incremental", overrides=OVER, **run_kwargs).read_text())
    steps = doc["results"]["steps"]
    assert [r["classes_seen"] for r in steps] == list(range(3, 11))
    assert [r["M"] for r in steps] == [20 * c for c in range(3, 11)]
    assert all(r["atoms_identical"] and r["codes_identical"] and r["codes_max_abs_diff"] == 0 for r in steps)
    assert [r["provenance_train_atoms"] for r in steps] == [r["M"] for r in steps]

    # independent truth for the last step: a dictionary built in one go from the same rows, encoded directly
    train = load_features(feature_dir(digits_cache, "digits", "pixels", "train"))
    test = load_features(feature_dir(digits_cache, "digits", "pixels", "test"))
    rows = torch.cat(class_exemplars(train.labels, 10, 20, seed=0))
    d = Dictionary.from_features(train.features[rows], train.labels[rows])
    codes = encode(d.atoms, test.features, lam=0.5, steps=40, backend="factored")
    acc = 100.0 * float((class_sums(codes, d.labels, 10).argmax(1) == test.labels).double().mean())
    assert abs(steps[-1]["seen_max_sum"] - acc) < 1e-9
    # old classes at the last step are classes 0..8
    old = test.labels < 9
    acc_old = 100.0 * float((class_sums(codes[old], d.labels, 10).argmax(1) == test.labels[old]).double().mean())
    assert abs(steps[-1]["old_max_sum"] - acc_old) < 1e-9

    timing = doc["results"]["timing"]["digits"]
    assert [r["M_before"] for r in timing] == list(range(50, 551, 50))
    assert timing[-1]["capacity"] >= 600
    assert doc["results"]["gramian"]["digits"][-1]["max_abs_diff"] < 1e-4
    assert doc["results"]["summary"][0]["all_codes_identical"] is True
