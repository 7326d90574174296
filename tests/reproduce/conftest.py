"""Fixtures for the reproduction tests: a tiny feature cache of scikit-learn's digits (8x8 pixels)."""
from __future__ import annotations

import pytest

from spikevit.data.features import extract_features


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """Feature cache holding digits pixel features (train 1257 x 64, test 540 x 64)."""
    cache = tmp_path_factory.mktemp("features")
    for split in ("train", "test"):
        extract_features("digits", None, split, "pixels", cache, show_progress=False)
    return cache


@pytest.fixture
def run_kwargs(digits_cache, tmp_path):
    """Context arguments of run_reproduction for offline tiny runs."""
    return {"cache": digits_cache, "out": tmp_path / "results", "device": "auto"}     # as the CLI default
