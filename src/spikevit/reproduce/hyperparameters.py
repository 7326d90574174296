"""Top-1 and M_hat as functions of lambda, tau and K (D-SELD Sec. 4.3 and 4.5).

The paper: the defaults lam = 2, tau = 100, K = 100 (Table 2); with fewer
steps the threshold must be lowered ("lam = 0.3, tau = 100 reaches 74.26% on
CIFAR-100 with ResNet-152"), and K = 10 cuts the inference FLOPs by 84%.
Here every (lam, tau, K) of a grid is evaluated on the same exemplar
dictionary and test subset (max-activation and max-sum decoders, measured
M_hat and the inference GFLOPs it implies); heat maps of accuracy and M_hat
over (lam, tau) for each K.  Resumable (``hyperparameters-partial.json``).
"""
from __future__ import annotations

import numpy as np
import torch

from spikevit.energy import lca_workload
from spikevit.errors import require
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, Partial, exemplar_dictionary, features, pyplot, report, save_figure

PARAMS = {
    "dataset": "mnist",
    "backbone": "pixels",
    "M": 10000,
    "test_images": 2000,
    "lams": "0.1,0.3,0.5,1,2,4",
    "taus": "10,30,100,300",
    "steps": "10,30,100",
    "batch": 250,
    "backend": LCA_DEFAULTS.backend,
    "seed": 0,
}
# PARAMS settings that differ from spikevit.lca.LCA_DEFAULTS on purpose (the tests hold every other one to them)
DIFFERS_FROM_LCA_DEFAULTS = {"steps": "a grid of K values (with lams and taus), not one setting"}
QUICK = {"test_images": 300, "M": 3000, "lams": "0.1,0.3,1,2,4", "taus": "10,30,100", "steps": "10,100"}

PAPER = {"defaults": {"lam": 2, "tau": 100, "K": 100},
         "CIFAR-100 ResNet-152 lam=0.3 tau=100 max-sum %": 74.26,
         "CIFAR-100 ResNet-152 lam=2 tau=100 K=100 max-sum %": 79.32,
         "K=100 -> K=10 inference FLOPs": "-84%"}


def floats(text: str) -> list[float]:
    values = [float(v) for v in str(text).split(",") if v.strip()]
    require(values, f"empty grid {text!r}")
    return values


def heatmaps(rows: list[dict], lams: list[float], taus: list[float], ks: list[int], path, title: str):
    plt = pyplot()
    fig, axes = plt.subplots(2, len(ks), figsize=(3.6 * len(ks) + 1, 6.4), squeeze=False)
    for j, k in enumerate(ks):
        for i, (key, label, cmap) in enumerate((("max_sum", "max-sum top-1 (%)", "viridis"),
                                                ("M_hat", "M_hat (active / step)", "magma"))):
            grid = np.full((len(lams), len(taus)), np.nan)
            for r in rows:
                if r["K"] == k:
                    grid[lams.index(r["lam"]), taus.index(r["tau"])] = r[key]
            ax = axes[i, j]
            im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
            for (a, b), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(b, a, f"{v:.1f}" if key == "max_sum" else f"{v:.3g}", ha="center", va="center",
                            fontsize=7, color="w" if v < np.nanmean(grid) else "k")
            ax.set_xticks(range(len(taus)), [f"{t:g}" for t in taus])
            ax.set_yticks(range(len(lams)), [f"{v:g}" for v in lams])
            ax.set_xlabel("tau"); ax.set_ylabel("lambda")
            ax.set_title(f"{label}, K = {k}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    if (p["dataset"], p["backbone"]) != (PARAMS["dataset"], PARAMS["backbone"]):
        ctx.variant = f"{p['dataset']}-{p['backbone']}"
    lams, taus = floats(p["lams"]), floats(p["taus"])
    ks = sorted({int(k) for k in floats(p["steps"])})
    train = features(ctx, p["dataset"], p["backbone"], "train")
    test = features(ctx, p["dataset"], p["backbone"], "test", limit=p["test_images"])
    d = exemplar_dictionary(train, p["M"], p["seed"], p["dataset"], shrink=True)
    del train
    atoms = d.atoms.double()
    lmax_g = float(torch.linalg.eigvalsh(atoms @ atoms.T)[-1])        # lambda_max(G) = ||phi||_2^2 (N x N form)
    partial = Partial(ctx, p)
    rows = []
    for k in ks:
        for lam in lams:
            for tau in taus:
                key = f"{lam}/{tau}/{k}"
                row = partial.get(key)
                if row is None:
                    ev = evaluate(d, test, None, LCAParams(lam=lam, tau=tau, steps=k, backend=p["backend"]),
                                  batch_size=p["batch"], device=ctx.device, shallow_train_size=0, seed=p["seed"])
                    w = lca_workload(d.size, d.feature_dim, k, ev.m_hat)
                    row = {"lam": lam, "tau": tau, "K": k, **ev.accuracy, "M_hat": ev.m_hat,
                           "M_hat_%": 100 * ev.m_hat / d.size, "silent_%": 100 * ev.silent_fraction,
                           "inference_GFLOPs": w["inference_GFLOPs"], "inference_energy_mJ": w["inference_energy_mJ"]}
                    partial.put(key, row)
                rows.append(row)
    best = {k: max((r for r in rows if r["K"] == k), key=lambda r: r["max_sum"]) for k in ks}
    defaults = (LCA_DEFAULTS.lam, LCA_DEFAULTS.tau, LCA_DEFAULTS.steps)
    default = next((r for r in rows if (r["lam"], r["tau"], r["K"]) == defaults), None)
    k_lo, k_hi = ks[0], ks[-1]
    saving = None
    if k_lo != k_hi:
        saving = 100 * (1 - best[k_lo]["inference_GFLOPs"] / best[k_hi]["inference_GFLOPs"])
    summary = [{"what": f"best max-sum at K = {k}", **best[k]} for k in ks]
    if default:
        summary.append({"what": "paper defaults (lam 2, tau 100, K 100)", **default})
    title = (f"{p['dataset']} {p['backbone']}: M = {d.size}, {test.features.shape[0]} test images")
    figure = heatmaps(rows, lams, taus, ks, ctx.path("-heatmap.png"), title)
    notes = (f"One dictionary of {d.size} random unit-norm training exemplars ({p['dataset']}, {p['backbone']} "
             f"features, N = {d.feature_dim}); {test.features.shape[0]} test images; rectified soft threshold. "
             "M_hat = mean active neurons per step over the test images and the K steps; inference GFLOPs from "
             "D-SELD Eq. 11 with that M_hat. The paper's lam = 0.3 / 74.26% point is CIFAR-100 with ResNet-152-V2 "
             "features (needs downloads); on this grid the same effect shows as the best lam moving down when K "
             f"drops. Small tau: the LCA step is explicit Euler with step 1/tau, stable on an active set A only if "
             f"lambda_max(G_AA) < 2 tau; this exemplar dictionary has lambda_max(G) = {lmax_g:.0f} (correlated "
             "training images), so at small tau many co-active atoms overshoot, the potentials swing negative and "
             "the codes end silent (silent_% near 100, accuracy near chance) -- a property of the discretisation, "
             "not of the threshold.")
    results = {"rows": rows, "best_per_K": best, "paper_defaults_row": default,
               "inference_saving_best_K_lo_vs_best_K_hi_%": saving, "paper": PAPER,
               "M": d.size, "N": d.feature_dim, "test_images": int(test.features.shape[0]),
               "lambda_max_G": lmax_g, "euler_stability": "stable on active set A iff lambda_max(G_AA) < 2 tau"}
    path = report(ctx, p, results, {"summary": summary, "grid": rows},
                  title="Hyperparameters: accuracy and M_hat vs lambda, tau, K", notes=notes, figures=[figure])
    partial.finish()
    return path
