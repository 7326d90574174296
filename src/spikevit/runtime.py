"""Device choice, seeding and progress bars shared by every method."""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from tqdm.auto import tqdm

from spikevit.errors import SpikevitError


def pick_device(requested: str | None = None) -> torch.device:
    """Return the requested device, or the best available one (cuda > mps > cpu)."""
    if requested not in (None, "", "auto"):
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SpikevitError(f"device {requested!r} requested but CUDA is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable=None, **kwargs):
    """tqdm progress bar; silenced when SPIKEVIT_QUIET=1 (tests, CI logs)."""
    kwargs.setdefault("disable", os.environ.get("SPIKEVIT_QUIET", "0") == "1")
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
