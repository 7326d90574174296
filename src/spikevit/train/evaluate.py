"""One evaluation loop for every method: accuracy, loss and (optionally) the operator-level profile.

``evaluate(model, loader, device)`` -> ``{"loss", "acc1", "acc5", "samples"}``; with ``profile=True`` the
dict also holds ``"profile"``: the :class:`spikevit.energy.Profile` of every evaluated batch summed (ops,
spikes, energy of the same forward passes that gave the accuracy).  Under DDP the accuracy sums are
reduced over ranks; a profile stays rank-local.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.energy.profile import profiling
from spikevit.runtime import progress
from spikevit.train.distributed import DistInfo, all_reduce_sum


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | str | None = None, *, bf16: bool = False,
             info=None, max_batches: int | None = None, profile: bool = False, profile_options: dict | None = None,
             desc: str = "eval") -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (``(x [B, ...],
    y [B])`` batches, the first ``max_batches`` of them if given).

    device: where the batches go (default: the model's parameters' device).
    info: a :class:`spikevit.train.distributed.DistInfo` to sum the counts over DDP ranks.
    profile: also run every batch under :func:`spikevit.energy.profile` (``profile_options`` are passed
        on) and return the summed profile as ``"profile"``.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    info = info or DistInfo(device=device)
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, correct1, correct5, n
    quiet = {} if info.is_main else {"disable": True}
    session = profiling(model, **(profile_options or {})) if profile else nullcontext()
    with session as prof:
        for i, (x, y) in enumerate(progress(loader, desc=desc, leave=False, **quiet)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, bf16):
                logits = model(x)
            logits = logits.float()
            k = min(5, logits.shape[1])
            hit = logits.topk(k, dim=1).indices == y[:, None]
            sums += torch.tensor([float(F.cross_entropy(logits, y, reduction="sum")), float(hit[:, 0].sum()),
                                  float(hit.any(1).sum()), len(y)], dtype=torch.float64)
    sums = all_reduce_sum(sums, info)
    n = max(1.0, float(sums[3]))
    out = {"loss": float(sums[0]) / n, "acc1": 100.0 * float(sums[1]) / n, "acc5": 100.0 * float(sums[2]) / n,
           "samples": int(sums[3])}
    if profile:
        out["profile"] = prof
    return out
