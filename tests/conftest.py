"""Shared fixtures: quiet progress bars, small real-data slices unpacked outside the repo."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

os.environ.setdefault("SPIKEVIT_QUIET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _unpack_slice(archive: Path, dest: Path, per_class: int) -> Path:
    """Unpack the first ``per_class`` images of every class of each split (ImageFolder layout)."""
    done = dest / ".complete"
    if done.exists():
        return dest
    counts: dict[str, int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4:
                continue
            key = "/".join(parts[:3])
            if counts.get(key, 0) >= per_class:
                continue
            counts[key] = counts.get(key, 0) + 1
            tar.extract(member, dest, filter="data")
    done.touch()
    return dest


@pytest.fixture(scope="session")
def data_slices(tmp_path_factory) -> Path:
    """Root with mnist/ and cifar10/ ImageFolder trees: 20 images per class and split."""
    root = Path(os.environ.get("SPIKEVIT_TEST_DATA", tmp_path_factory.mktemp("data")))
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    for name in ("mnist", "cifar10"):
        _unpack_slice(SHARED_DATA / f"{name}-imagefolder.tar.gz", root / f".{name}", 20)
        target = root / name
        if not target.exists():
            target.symlink_to(root / f".{name}" / name)
    return root
