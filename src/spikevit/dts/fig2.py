"""Fig. 2 of the DTS paper: per-layer distribution of LIF inputs at the first step vs the later steps, and
their cosine similarity (each histogram read as a density vector) as the layer's time-step sensitivity.

A similarity near 1 means later steps add little new information: the layer can run fewer steps.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spikevit.errors import require
from spikevit.nn.dtss import DTSSLIF
from spikevit.runtime import progress


def cosine_similarity(p: torch.Tensor, q: torch.Tensor) -> float:
    """cos(p, q) = p.q / (|p| |q|) of two histogram vectors (0 if either is empty)."""
    p, q = p.double().flatten(), q.double().flatten()
    den = p.norm() * q.norm()
    return float(p @ q / den) if den > 0 else 0.0


@torch.no_grad()
def input_histograms(model: nn.Module, loader, device="cpu", bins: int = 60, max_batches: int | None = 4,
                     quantile: float = 0.995) -> dict[str, dict]:
    """For every LIF layer: histograms (densities over common bins) of its input currents at step 1 and at
    steps 2..T (pooled), and their cosine similarity.  The model runs all steps (masks not applied to the
    recorded inputs); needs T >= 2.

    Returns {layer: {"group", "edges" [bins+1], "first" [bins], "later" [bins], "cosine"}}.
    """
    require(getattr(model, "tmax", 2) >= 2, "Fig. 2 compares step 1 with later steps: the model needs T >= 2")
    model.eval().to(device)
    names = {m: n for n, m in model.named_modules() if isinstance(m, DTSSLIF)}
    samples: dict[str, list[torch.Tensor]] = {n: [] for n in names.values()}
    handles = [m.register_forward_hook(lambda m, a, o: samples[names[m]].append(a[0].detach().float().cpu()))
               for m in names]
    prev = {m: m.skip_masked for m in names}
    for m in names:
        m.skip_masked = False
    try:
        for i, (x, _) in enumerate(progress(loader, desc="fig2", leave=False)):
            if max_batches is not None and i >= max_batches:
                break
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        for m, v in prev.items():
            m.skip_masked = v
    out = {}
    for m, name in names.items():
        x = torch.cat(samples[name], 1)  # [T, B_total, ...]
        first, later = x[0].flatten(), x[1:].flatten()
        both = torch.cat([first, later])
        sub = both[torch.randperm(both.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
        lo = float(torch.quantile(sub, 1 - quantile))
        hi = float(torch.quantile(sub, quantile))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, bins + 1)
        h1 = torch.histc(first.clamp(lo, hi), bins, lo, hi)
        h2 = torch.histc(later.clamp(lo, hi), bins, lo, hi)
        h1, h2 = h1 / h1.sum(), h2 / h2.sum()
        out[name] = {"group": m.group, "edges": edges, "first": h1, "later": h2, "cosine": cosine_similarity(h1, h2)}
    return out


def plot_histograms(hists: dict[str, dict], path: str | Path, max_layers: int = 16, title: str | None = None) -> Path:
    """Grid of per-layer histograms (step 1 vs later steps), the cosine similarity in each title."""
    from spikevit.reports import pyplot, save_figure

    plt = pyplot()

    names = list(hists)[:max_layers]
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        h = hists[name]
        edges = h["edges"].numpy()
        centers, width = 0.5 * (edges[1:] + edges[:-1]), float(edges[1] - edges[0])
        ax.bar(centers, h["first"].numpy(), width=width, alpha=0.6, color="tab:orange", label="step 1")
        ax.bar(centers, h["later"].numpy(), width=width, alpha=0.5, color="tab:blue", label="steps 2..T")
        ax.set_title(f"{name}\n[{h['group']}] cos={h['cosine']:.3f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
