"""Top-1 tables of ViT-LCA (Table I) and D-SELD (Tables 3 and 6): backbone features -> exemplar LCA -> decoders.

Each row: extract (or reuse cached) backbone features of the train and test
splits with the real torchvision loading path (``spikevit.backbones``:
``torchvision.models.get_model(name, weights=get_weight(...))``, images
resized / centre-cropped / ImageNet-normalised), build a dictionary of M = 50K
random training exemplars (MNIST: 28*28*2), run LCA with lam = 2, tau = 100,
K = 100 and decode (:func:`spikevit.lca.pipeline.evaluate`).  ``weights=none``
runs the same path with random weights (offline tests); ``download=true`` lets
torchvision fetch CIFAR-100 (ImageNet must be on disk).  Resumable per row.
"""
from __future__ import annotations

import numpy as np

from spikevit.errors import SpikevitError
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, Partial, exemplar_dictionary, features, pyplot, report, save_figure

PARAMS = {
    "rows": "dseld-mnist",          # which paper table (fixed per registry entry)
    "datasets": "all",              # restrict to some datasets of the table, e.g. "cifar10,cifar100"
    "M": 0,                         # dictionary size; 0 = the paper's (50K; MNIST 28*28*2)
    "test_images": 0,               # 0 = the whole test split
    "train_images": 0,              # 0 = the whole train split (ImageNet: the paper's 50K + 10K for the shallow NN)
    "weights": "default",           # "default" (published), "none" (random init, offline tests) or a local file
    "image_size": 0,                # 0 = the backbone's own input size
    "shallow_train": "all",         # shallow NN training codes where the paper reports it: "all" = every training
                                    # image, mini-batch Adam (the paper); an integer = that many codes, L-BFGS; "0" skips
    "shallow_epochs": 20, "shallow_batch": 256, "shallow_lr": 1e-3,
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps,
    "batch": 250,
    "backend": LCA_DEFAULTS.backend,
    "download": False,              # let torchvision download CIFAR-10/100 into --data-root
    "workers": 0,                   # data-loader processes for feature extraction (e.g. 8 on a GPU box)
    "extract_batch": 64,            # images per backbone batch
    "seed": 0,
}
QUICK = {"test_images": 1000, "shallow_train": "1000"}

# table -> rows (dataset, backbone, paper label, paper numbers by decoder, paper dictionary size)
TABLES = {
    "dseld-mnist": [("mnist", "pixels", "none (raw pixels)",
                     {"max_activation": 93.93, "max_sum": 97.48, "shallow": 98.25}, 28 * 28 * 2)],
    "vit-lca-table1": [
        ("cifar10", "vit_b_16", "ViT-B/16", {"max_activation": 90.53, "max_sum": 95.63}, 50000),
        ("cifar100", "vit_b_16", "ViT-B/16", {"max_activation": 81.63, "max_sum": 81.80}, 50000),
        ("imagenet", "vit_b_16", "ViT-B/16", {"max_activation": 71.51, "max_sum": 80.24}, 50000)],
    "dseld-table3": [
        ("cifar10", "resnet152", "ResNet-152-V2", {"max_activation": 89.16, "max_sum": 94.98, "shallow": 95.19}, 50000),
        ("cifar100", "resnet152", "ResNet-152-V2", {"max_activation": 68.29, "max_sum": 79.32, "shallow": 79.33},
         50000),
        ("imagenet", "resnet152", "ResNet-152-V2", {"max_activation": 71.83, "max_sum": 80.75, "shallow": 21.60},
         50000),
        ("imagenet", "efficientnet_v2_s", "EfficientNet-V2-S",
         {"max_activation": 76.40, "max_sum": 80.68, "shallow": 21.49}, 50000)],
    "dseld-table6": [
        ("cifar10", "resnet50", "ResNet-50-V2", {"max_sum": 92.00}, 50000),
        ("cifar100", "resnet50", "ResNet-50-V2", {"max_sum": 74.98}, 50000),
        ("cifar100", "efficientnet_v2_s", "EfficientNet-V2-S", {"max_sum": 75.41}, 50000),
        ("imagenet", "resnet50", "ResNet-50-V2", {"max_sum": 76.64}, 50000)],
}
IMAGENET_TRAIN_IMAGES = 60000     # 50K dictionary + 10K codes for the shallow decoder


def table_rows(table: str, datasets: str = "all") -> list[tuple]:
    if table not in TABLES:
        raise SpikevitError(f"unknown paper table {table!r}; choose from {sorted(TABLES)}")
    rows = TABLES[table]
    if datasets not in ("all", "", None):
        keep = {d.strip() for d in str(datasets).split(",") if d.strip()}
        unknown = keep - {r[0] for r in rows}
        if unknown:
            raise SpikevitError(f"{table} has no rows for {sorted(unknown)}; its datasets: "
                                f"{sorted({r[0] for r in rows})}")
        rows = [r for r in rows if r[0] in keep]
    return rows


def shallow_setting(value: str, total: int) -> tuple[int, dict | None]:
    """("all" | "none" | "0" | integer string, train images) -> (number of training codes, fit keywords)."""
    text = str(value).strip().lower()
    if text == "all":
        return total, {"method": "adam"}
    if text in ("none", "0"):
        return 0, None
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise SpikevitError(f"shallow_train must be 'all', 'none' or a number of training codes >= 0, got {value!r}")
    if count > total:
        raise SpikevitError(f"shallow_train = {count:,} exceeds the {total:,} training images available")
    return count, {"method": "lbfgs"}


def run_row(ctx: Context, p: dict, dataset: str, backbone: str, paper: dict, paper_m: int) -> dict:
    size = p["image_size"] or None
    train_limit = p["train_images"] or (IMAGENET_TRAIN_IMAGES if dataset == "imagenet" else None)
    kw = dict(weights=p["weights"], image_size=size, download=p["download"], num_workers=p["workers"],
              batch_size=p["extract_batch"])
    train = features(ctx, dataset, backbone, "train", limit=train_limit, **kw)
    test = features(ctx, dataset, backbone, "test", limit=p["test_images"] or None, **kw)
    m = p["M"] or paper_m
    total = train.features.shape[0]
    d = exemplar_dictionary(train, m, p["seed"], dataset)
    shallow, fit = shallow_setting(p["shallow_train"], total) if "shallow" in paper else (0, None)
    ev = evaluate(d, test, train if shallow else None, LCAParams.from_mapping(p),
                  batch_size=p["batch"], device=ctx.device, shallow_train_size=shallow,
                  seed=p["seed"], shallow_fit=fit and fit | {"epochs": p["shallow_epochs"],
                                                             "batch_size": p["shallow_batch"], "lr": p["shallow_lr"],
                                                             "seed": p["seed"]})
    row = {"dataset": dataset, "backbone": backbone, "weights": p["weights"], "N": d.feature_dim, "M": d.size,
           "paper_M": paper_m, "train_images": total, "test_images": int(test.features.shape[0])}
    for key in ("max_activation", "max_sum", "shallow"):
        if key in ev.accuracy:
            row[key] = ev.accuracy[key]
        if key in paper:
            row[f"paper_{key}"] = paper[key]
            if key in ev.accuracy:
                row[f"diff_{key}"] = ev.accuracy[key] - paper[key]
    if shallow:
        row |= {"shallow_train_codes": ev.info["shallow_train_codes"], "shallow_method": ev.info["shallow_method"],
                "shallow_encode_s": ev.info["shallow_encode_s"], "shallow_fit_s": ev.info["shallow_fit_s"]}
    row |= {"M_hat": ev.m_hat, "M_hat_%": 100 * ev.m_hat / d.size,
            "extract_ms_per_image": ev.timing_ms["feature_extraction"],
            "encode_ms_per_image": ev.timing_ms["lca_encoding"]}
    return {"row": row, "active_mean": ev.active_mean}


def plot(rows: list[dict], path, title: str):
    plt = pyplot()
    labels = [f"{r['dataset']}\n{r['backbone']}" for r in rows]
    keys = [k for k in ("max_activation", "max_sum", "shallow") if any(k in r or f"paper_{k}" in r for r in rows)]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.9 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    w = 0.8 / len(keys)
    for j, key in enumerate(keys):
        ours = [r.get(key, np.nan) for r in rows]
        paper = [r.get(f"paper_{key}", np.nan) for r in rows]
        pos = x + (j - (len(keys) - 1) / 2) * w
        ax.bar(pos, ours, w * 0.95, label=f"ours: {key}")
        ax.scatter(pos, paper, color="k", marker="_", s=300, zorder=3, label="paper" if j == 0 else None)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    rows_spec = table_rows(p["rows"], p["datasets"])
    if p["weights"] != "default":
        ctx.variant = "weights-" + ("none" if p["weights"] in ("none", None) else "file")
    partial = Partial(ctx, p)
    rows = []
    for dataset, backbone, label, paper, paper_m in rows_spec:
        key = f"{dataset}/{backbone}"
        done = partial.get(key)
        if done is None:
            done = run_row(ctx, p, dataset, backbone, paper, paper_m)
            partial.put(key, done)
        rows.append({"paper_backbone": label, **done["row"]})
    title = f"{p['rows']}: ours (bars) vs paper (ticks), lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}"
    figure = plot(rows, ctx.path("-top1.png"), title)
    notes = ("Features from the backbone registry (torchvision weights: vit_b_16 IMAGENET1K_V1, resnet152 / "
             "resnet50 IMAGENET1K_V2, efficientnet_v2_s IMAGENET1K_V1; MNIST: normalised raw pixels); dictionary of "
             "M random training exemplars, unit-norm; rectified soft threshold (authors' code); the shallow NN (one "
             "linear layer) is trained where the paper reports it on "
             + (f"the codes of every training image (mini-batch Adam, {p['shallow_epochs']} epochs, batch "
                f"{p['shallow_batch']}, lr {p['shallow_lr']}; exemplars coded leave-one-out, without their own atom)"
                if str(p["shallow_train"]).lower() == "all" else f"{p['shallow_train']} training codes (L-BFGS)")
             + "; its cost is in shallow_encode_s / shallow_fit_s."
             + ("" if p["weights"] == "default" else
                f" weights = {p['weights']}: NOT the published weights, a code-path check only; the accuracies "
                "are not comparable with the paper's."))
    path = report(ctx, p, {"rows": rows}, {"top-1 (ours beside the paper)": rows},
                  title=f"Top-1: {p['rows']}", notes=notes, figures=[figure])
    partial.finish()
    return path
