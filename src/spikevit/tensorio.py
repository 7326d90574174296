"""Safe tensor files: safetensors with a JSON metadata header, validated on load.

Every file spikevit writes carries ``metadata["spikevit_kind"]`` so that a
foreign or corrupt file is refused with a clear message instead of being
misread.  Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from spikevit.errors import SpikevitError

KIND_KEY = "spikevit_kind"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str,
                 metadata: dict | None = None) -> Path:
    """Atomically write ``tensors`` plus JSON-encoded ``metadata`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {KIND_KEY: kind, "json": json.dumps(metadata or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)       # never leave a half-written file behind
        raise
    return path


def read_metadata(path: str | os.PathLike, kind: str) -> dict:
    """Return the metadata of a spikevit file of the given ``kind`` (header only)."""
    path = _check_exists(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SpikevitError(f"{path}: not a readable safetensors file (corrupt or foreign): {exc}") from None
    return _check_kind(path, meta, kind)


def load_tensors(path: str | os.PathLike, kind: str, required: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Load a spikevit safetensors file; check its kind and required tensor names."""
    meta = read_metadata(path, kind)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SpikevitError(f"{path}: corrupt safetensors file: {exc}") from None
    missing = [k for k in required if k not in tensors]
    if missing:
        raise SpikevitError(f"{path}: {kind} file is missing tensors {missing}")
    return tensors, meta


def _check_exists(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise SpikevitError(f"file not found: {path}")
    return path


def _check_kind(path, meta: dict, kind: str) -> dict:
    found = meta.get(KIND_KEY)
    if found is None:
        raise SpikevitError(f"{path}: foreign safetensors file (no spikevit header); expected a {kind} file")
    if found != kind:
        raise SpikevitError(f"{path}: this is a {found} file, expected a {kind} file")
    try:
        return json.loads(meta.get("json", "{}"))
    except json.JSONDecodeError:
        raise SpikevitError(f"{path}: corrupt metadata header") from None
