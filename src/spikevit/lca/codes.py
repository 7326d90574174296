"""LCA code files: sparse (B, M) codes, their labels and the settings that made them, as safetensors.

``save_codes`` is the one writer (``spikevit lca encode``, ``spikevit lca shard --codes-out``); ``load_codes``
reads a file back as a dense tensor.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from spikevit.tensorio import load_tensors, save_tensors

KIND = "lca-codes"


def save_codes(path: str | os.PathLike, codes: torch.Tensor, labels: torch.Tensor, meta: dict) -> Path:
    """Write ``codes`` (B, M), dense or sparse COO, with ``labels`` (B,) and ``meta`` (dictionary, LCA settings)."""
    codes = (codes if codes.is_sparse else codes.to_sparse()).coalesce()
    return save_tensors(path, {"indices": codes.indices(), "values": codes.values(), "labels": labels.cpu()},
                        KIND, {"shape": list(codes.shape)} | meta)


def load_codes(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(codes (B, M) dense, labels (B,), metadata) of a file written by :func:`save_codes`."""
    tensors, meta = load_tensors(path, KIND, required=("indices", "values", "labels"))
    codes = torch.sparse_coo_tensor(tensors["indices"], tensors["values"], tuple(meta["shape"])).to_dense()
    return codes, tensors["labels"], meta
