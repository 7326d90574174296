"""ViT-LCA Table I and D-SELD Table 4: workload (FLOPs) and energy of the exemplar LCA network.

Training FLOPs (Gramian) M (M + 1) (2N - 1) / 2 and inference FLOPs
K ((2N - 1) M / K + 2 M M_hat + M) (ViT-LCA Eq. 8-10, D-SELD Eq. 11) from
:mod:`spikevit.energy`, energy at 9.09e-14 J per FLOP (the "crossbar" model).
Every backbone's N comes from the backbone registry; M = 50K; K in {100, 10};
M_hat = 200 as both papers assume, and M_hat measured (mean active neurons
per step over test images) for the features available here.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from spikevit.backbones import BACKBONES
from spikevit.energy import get_energy_model, lca_workload
from spikevit.errors import SpikevitError
from spikevit.lca import Dictionary
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, features, pyplot, report, save_figure

PARAMS = {
    "M": 50000,
    "M_hat": 200.0,              # the papers' assumption (0.4% of 50K)
    "measure": "mnist:pixels,cifar10:efficientnet_lite0",   # dataset:backbone pairs measured ("" for none)
    "test_images": 1000,         # test images for the measured M_hat
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau,   # K: both of the papers' 100 and 10
    "batch": 100,
    "backend": LCA_DEFAULTS.backend,
    "seed": 0,
}
QUICK = {"test_images": 100}

# (paper, row label, registry backbone for N, {K: (training TFLOPs, inference GFLOPs, energy mJ or None)})
PAPER_ROWS = [
    ("ViT-LCA Table I", "ViT-B/16", "vit_b_16", {100: ("1.92", "2.08", "0.19")}),
    ("D-SELD Table 4", "Inception", "inception_v3", {100: ("5.12", "2.21", None), 10: ("5.12", "0.41", None)}),
    ("D-SELD Table 4", "ResNet-50 & ResNet-152", "resnet152", {100: ("5.12", "2.21", None),
                                                               10: ("5.12", "0.41", None)}),
    ("D-SELD Table 4", "EfficientNet", "efficientnet_v2_s", {100: ("3.2", "2.13", None), 10: ("3.2", "0.33", None)}),
    ("D-SELD Table 4", "DenseNet", "densenet121", {100: ("2.56", "2.11", None), 10: ("2.56", "0.3", None)}),
    ("D-SELD Table 4", "MobileNet", "mobilenet_v3_large", {100: ("2.4", "2.1", None), 10: ("2.4", "0.29", None)}),
    ("D-SELD Table 4", "VGG-16", "vgg16", {100: ("1.28", "2.06", None), 10: ("1.28", "0.25", None)}),
]
PAPER_MEAN_REDUCTION = 84.0   # D-SELD Sec. 4.5: K 100 -> 10 cuts inference GFLOPs by 84% on average
PIXEL_DIMS = {"mnist": 784, "cifar10": 3072, "digits": 64}


def round_like(value: float, paper: str) -> str:
    """``value`` rounded half-up to as many decimals as the paper's figure ``paper`` has."""
    decimals = len(paper.split(".")[1]) if "." in paper else 0
    q = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(value)).quantize(q, rounding=ROUND_HALF_UP))


def feature_dim(backbone: str, dataset: str | None = None) -> int:
    if backbone == "pixels":
        if dataset not in PIXEL_DIMS:
            raise SpikevitError(f"pixel feature size of {dataset!r} unknown")
        return PIXEL_DIMS[dataset]
    spec = BACKBONES.get(backbone)
    if spec is None or spec.feature_dim is None:
        raise SpikevitError(f"unknown backbone {backbone!r}")
    return spec.feature_dim


def paper_table(m: int, m_hat: float) -> list[dict]:
    """Our arithmetic beside every paper row (papers' M_hat)."""
    model = get_energy_model("crossbar")
    rows = []
    for paper, label, backbone, entries in PAPER_ROWS:
        n = feature_dim(backbone)
        for k in (100, 10):
            w = lca_workload(m, n, k, m_hat, model)
            t_paper, g_paper, e_paper = entries.get(k, (None, None, None))
            row = {"source": paper, "backbone": label, "registry_backbone": backbone, "N": n, "M": m, "K": k,
                   "M_hat": m_hat, "training_TFLOPs": w["training_TFLOPs"], "inference_GFLOPs": w["inference_GFLOPs"],
                   "inference_energy_mJ": w["inference_energy_mJ"], "training_energy_J": w["training_energy_J"],
                   "paper_training_TFLOPs": t_paper, "paper_inference_GFLOPs": g_paper,
                   "paper_inference_energy_mJ": e_paper}
            if t_paper is not None:
                row["match"] = (round_like(w["training_TFLOPs"], t_paper) == t_paper
                                and round_like(w["inference_GFLOPs"], g_paper) == g_paper
                                and (e_paper is None or round_like(w["inference_energy_mJ"], e_paper) == e_paper))
            else:
                row["match"] = None
            rows.append(row)
    return rows


def reductions(rows: list[dict]) -> tuple[list[dict], float]:
    """Per-backbone inference FLOPs saved by K = 10 instead of 100, and their mean over D-SELD Table 4's rows."""
    out = []
    for label in dict.fromkeys(r["backbone"] for r in rows):
        by_k = {r["K"]: r for r in rows if r["backbone"] == label}
        if 100 in by_k and 10 in by_k:
            red = 100 * (1 - by_k[10]["inference_GFLOPs"] / by_k[100]["inference_GFLOPs"])
            out.append({"backbone": label, "source": by_k[100]["source"], "reduction_%": red})
    table4 = [r["reduction_%"] for r in out if r["source"] == "D-SELD Table 4"]
    return out, float(np.mean(table4)) if table4 else float("nan")


def measured_rows(ctx: Context, p: dict) -> tuple[list[dict], list[str]]:
    """M_hat measured on the test split of every available dataset:backbone pair, K in {100, 10}."""
    rows, skipped = [], []
    pairs = [s.split(":") for s in str(p["measure"]).split(",") if s.strip()]
    for dataset, backbone in pairs:
        try:
            train = features(ctx, dataset, backbone, "train")
            test = features(ctx, dataset, backbone, "test", limit=p["test_images"])
        except SpikevitError as exc:
            skipped.append(f"{dataset}/{backbone}: {exc}")
            continue
        m = min(p["M"], train.features.shape[0])
        d = Dictionary.from_features(train.features, train.labels, m, seed=p["seed"], backbone=train.backbone,
                                     dataset=dataset, index=train.index)
        del train
        for k in (100, 10):
            ev = evaluate(d, test, None, LCAParams.from_mapping(p, steps=k), batch_size=p["batch"], device=ctx.device, shallow_train_size=0, seed=p["seed"])
            w = lca_workload(d.size, d.feature_dim, k, ev.m_hat)
            assumed = lca_workload(d.size, d.feature_dim, k, p["M_hat"])
            dense = lca_workload(d.size, d.feature_dim, k, None)
            rows.append({"dataset": dataset, "backbone": backbone, "N": d.feature_dim, "M": d.size, "K": k,
                         "test_images": test.features.shape[0], "M_hat_measured": ev.m_hat,
                         "M_hat_percent": 100 * ev.m_hat / d.size,
                         "peak_active_mean": float(ev.active_mean.max()),
                         "training_TFLOPs": w["training_TFLOPs"], "inference_GFLOPs": w["inference_GFLOPs"],
                         "inference_energy_mJ": w["inference_energy_mJ"],
                         "inference_GFLOPs_at_M_hat_200": assumed["inference_GFLOPs"],
                         "inference_GFLOPs_dense": dense["inference_GFLOPs"],
                         "top1_max_sum_%": ev.accuracy["max_sum"],
                         "top1_max_activation_%": ev.accuracy["max_activation"]})
    return rows, skipped


def plot(rows: list[dict], measured: list[dict], path):
    plt = pyplot()
    labels = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(labels))
    for j, k in enumerate((100, 10)):
        ours = [next(r["inference_GFLOPs"] for r in rows if r["backbone"] == b and r["K"] == k) for b in labels]
        paper = [next((float(r["paper_inference_GFLOPs"]) for r in rows if r["backbone"] == b and r["K"] == k
                       and r["paper_inference_GFLOPs"] is not None), np.nan) for b in labels]
        ax.bar(x + (j - 0.5) * 0.38, ours, 0.36, label=f"ours, K={k} (M_hat=200)", alpha=0.8)
        ax.scatter(x + (j - 0.5) * 0.38, paper, color="k", marker="_", s=200, zorder=3,
                   label="paper" if j == 0 else None)
    for r in measured:
        ax.axhline(r["inference_GFLOPs"], ls=":", lw=1,
                   color="tab:green" if r["K"] == 100 else "tab:red")
        ax.text(len(labels) - 0.5, r["inference_GFLOPs"], f"{r['dataset']}/{r['backbone']} K={r['K']} measured "
                f"M_hat={r['M_hat_measured']:.0f}", fontsize=6, va="bottom", ha="right")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("inference GFLOPs per image")
    ax.set_title("LCA inference workload, M = 50K (bars: ours; ticks: paper)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    rows = paper_table(p["M"], p["M_hat"])
    red_rows, mean_red = reductions(rows)
    measured, skipped = measured_rows(ctx, p)
    for r in measured:
        red = next((100 * (1 - r["inference_GFLOPs"] / q["inference_GFLOPs"]) for q in measured
                    if q["dataset"] == r["dataset"] and q["backbone"] == r["backbone"] and q["K"] == 100), None)
        if r["K"] == 10 and red is not None:
            red_rows.append({"backbone": f"{r['dataset']}/{r['backbone']} (measured M_hat)", "source": "measured",
                             "reduction_%": red})
    vit = next(r for r in rows if r["backbone"] == "ViT-B/16" and r["K"] == 100)
    results = {
        "vit_lca_table1": {"training_TFLOPs": vit["training_TFLOPs"], "inference_GFLOPs": vit["inference_GFLOPs"],
                           "inference_energy_mJ": vit["inference_energy_mJ"],
                           "paper": {"training_TFLOPs": 1.92, "inference_GFLOPs": 2.08, "inference_energy_mJ": 0.19},
                           "match": vit["match"]},
        "rows_matching_paper": sum(1 for r in rows if r["match"]),
        "rows_with_paper_numbers": sum(1 for r in rows if r["match"] is not None),
        "mismatches": [f"{r['backbone']} K={r['K']}: ours {r['training_TFLOPs']:.4f} TFLOPs / "
                       f"{r['inference_GFLOPs']:.5f} GFLOPs vs paper {r['paper_training_TFLOPs']} / "
                       f"{r['paper_inference_GFLOPs']}" for r in rows if r["match"] is False],
        "mean_reduction_K100_to_K10_%": mean_red, "paper_mean_reduction_%": PAPER_MEAN_REDUCTION,
        "measured": measured, "measurement_skipped": skipped,
    }
    notes = ("Energy model: memristive crossbar, 9.09e-14 J per FLOP (ViT-LCA Sec. V-A). Feature sizes N from the "
             "backbone registry (Inception -> inception_v3, ResNet -> resnet152, EfficientNet -> efficientnet_v2_s, "
             "DenseNet -> densenet121, MobileNet -> mobilenet_v3_large, VGG-16 -> vgg16 pooled). 'match' compares our "
             "numbers rounded half-up to the paper's printed precision. Measured rows: M_hat is the mean number of "
             f"active neurons per step over {p['test_images']} test images (lam={p['lam']}, tau={p['tau']}), with the "
             "dictionary of M random training exemplars."
             + ("" if not skipped else " Skipped measurements: " + " | ".join(skipped)))
    return report(ctx, p, results, {"workload, papers' M_hat (ViT-LCA Table I, D-SELD Table 4)": rows,
                                     "workload, measured M_hat": measured,
                                     "inference FLOPs saved by K=10": red_rows},
                  title="Workload and energy: ViT-LCA Table I, D-SELD Table 4", notes=notes,
                  figures=[plot(rows, measured, ctx.path("-gflops.png"))])
