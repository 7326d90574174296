"""D-SELD Fig. 5: top-1 of the three decoders vs dictionary size (over-completeness) on MNIST raw pixels.

Dictionaries of M random training exemplars, M from N = 784 (complete) to the
whole training set (60,000, "Complete" in the paper), each evaluated by
:func:`spikevit.lca.pipeline.evaluate` (max-activation, max-sum, shallow NN)
with the papers' lam = 2, tau = 100, K = 100.  Resumable: finished sizes are
kept in ``overcompleteness-partial.json``.
"""
from __future__ import annotations

import numpy as np

from spikevit.errors import require
from spikevit.lca import Dictionary
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, Partial, features, pyplot, report, save_figure

PARAMS = {
    "dataset": "mnist",
    "backbone": "pixels",
    "sizes": "784,1568,3136,6272,12544,25088,60000",
    "test_images": 10000,
    "shallow_train_size": 5000,
    "lam": 2.0, "tau": 100.0, "steps": 100,
    "batch": 250,
    "backend": "auto",            # LCA backend (spikevit.lca.encode)
    "seed": 0,
}
QUICK = {"test_images": 200, "shallow_train_size": 500, "sizes": "784,1568,6272,25088,60000"}

PAPER_AT_1568 = {"max_activation": 93.93, "max_sum": 97.48, "shallow": 98.25}   # D-SELD Table 3, M = 28*28*2


def parse_sizes(text: str, available: int) -> list[int]:
    sizes = sorted({min(int(s), available) for s in str(text).split(",") if s.strip()})
    require(sizes and sizes[0] > 0, f"dictionary sizes must be positive integers, got {text!r}")
    return sizes


def rises(values: list[float]) -> dict:
    """How clearly a sequence rises: last vs first, and the fraction of non-decreasing consecutive pairs."""
    v = np.asarray(values, dtype=float)
    steps = np.diff(v)
    return {"first": float(v[0]), "last": float(v[-1]), "gain": float(v[-1] - v[0]),
            "non_decreasing_pairs": int((steps >= 0).sum()), "pairs": int(steps.size),
            "spearman": float(np.corrcoef(np.arange(v.size), np.argsort(np.argsort(v)))[0, 1]) if v.size > 1 else 1.0}


def plot(rows: list[dict], n: int, path, curve: dict | None):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 6.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    m = [r["M"] for r in rows]
    for key, label in (("max_activation", "max activation"), ("max_sum", "max sum"), ("shallow", "shallow NN")):
        if all(key in r for r in rows):
            ax.plot(m, [r[key] for r in rows], marker="o", label=label)
            ax.scatter([2 * n], [PAPER_AT_1568[key]], marker="*", s=90, zorder=3,
                       label=f"paper, M = 2N ({label})")
    ax.set_xscale("log")
    ax.set_xticks(m, [f"{x}\n({x / n:.3g}N)" for x in m], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("dictionary size M (over-completeness M/N)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Over-completeness vs accuracy (MNIST pixels)")
    ax.legend(fontsize=7)
    if curve:
        ax = axes[0, 1]
        k = np.arange(1, len(curve["mean"]) + 1)
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        ax.plot(k, mean)
        ax.fill_between(k, np.maximum(mean - std, 0), mean + std, alpha=0.3)
        ax.set_xlabel("time step k"); ax.set_ylabel("active neurons")
        ax.set_title(f"Active neurons per step, M = {curve['M']} (mean ± std)")
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    train = features(ctx, p["dataset"], p["backbone"], "train")
    test = features(ctx, p["dataset"], p["backbone"], "test", limit=p["test_images"])
    n, total = train.features.shape[1], train.features.shape[0]
    sizes = parse_sizes(p["sizes"], total)
    partial = Partial(ctx, p)
    rows, curves = [], {}
    for size in sizes:
        done = partial.get(str(size))
        if done is None:
            d = Dictionary.from_features(train.features, train.labels, None if size >= total else size,
                                         seed=p["seed"], backbone=train.backbone, dataset=p["dataset"])
            ev = evaluate(d, test, train, lam=p["lam"], tau=p["tau"], steps=p["steps"], batch_size=p["batch"],
                          backend=p["backend"],
                          device=ctx.device, shallow_train_size=p["shallow_train_size"], seed=p["seed"])
            done = {"row": {"M": d.size, "M_over_N": d.size / n, **ev.accuracy, "M_hat": ev.m_hat,
                            "M_hat_%": 100 * ev.m_hat / d.size, "silent_%": 100 * ev.silent_fraction,
                            "encode_ms_per_image": ev.timing_ms["lca_encoding"]},
                    "curve": {"M": d.size, "mean": ev.active_mean, "std": ev.active_std}}
            partial.put(str(size), done)
        row = dict(done["row"])
        if row["M"] == 2 * n:
            row |= {f"paper_{k}": v for k, v in PAPER_AT_1568.items()}
        rows.append(row)
        curves[row["M"]] = done["curve"]
    trend = {k: rises([r[k] for r in rows]) for k in ("max_activation", "max_sum", "shallow") if k in rows[0]}
    biggest = curves[rows[-1]["M"]]
    figure = plot(rows, n, ctx.path("-accuracy.png"), biggest)
    notes = (f"{p['dataset']} {p['backbone']} features (pixels normalised with mean 0.1307 / std 0.3081), "
             f"{test.features.shape[0]} test images, dictionaries of M random training exemplars (unit-norm), "
             f"lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}; the shallow NN is trained on "
             f"{p['shallow_train_size']} training codes (images outside the dictionary first, then leave-one-out "
             "coded exemplars). Paper values (D-SELD Table 3, M = 28*28*2) are shown at M = 1568; the paper's "
             "Fig. 5 itself gives no numbers.")
    path = report(ctx, p, {"rows": rows, "trend": trend, "paper_at_M_1568": PAPER_AT_1568,
                           "active_per_step_largest_M": biggest},
                  {"accuracy vs dictionary size (Fig. 5)": rows}, title="D-SELD Fig. 5: over-completeness (MNIST)",
                  notes=notes, figures=[figure])
    partial.finish()
    return path
