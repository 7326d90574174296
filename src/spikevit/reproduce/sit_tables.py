"""SIT-conversion Fig. 7 and Tables 2-5 (papers/sit-conversion.txt) through :mod:`spikevit.conversion`.

* ``part = "fig7"``: spiking-softmax error vs K on rows of i.i.d. U[-1, 1] logits
  (:func:`spikevit.conversion.softmax_error_sweep`), the paper's K = 12 point beside ours.
* ``part = "layers"``: :func:`spikevit.conversion.run` on a trained model: the ANN, then its first
  1..B attention blocks converted (the shape of Tables 2-4), energy per image of the ANN and of the fully
  converted model from the operator profile (Table 5), spikes, spike purity, the softmax error on the
  model's own attention logits.  Our rows are written beside the paper's tables as printed.

``checkpoint = ""`` picks the entry's weights: the committed ``vit-cifar-tiny`` model file for the
registry model; for ``timm:NAME`` / ``torchvision:NAME`` the published ImageNet weights, fetched once
(needs the internet) and stored as a state dict in the output folder.  ``dataset = ""`` is the model's own
(CIFAR-10 for ``vit-cifar-tiny``, ImageNet for published weights); CIFAR columns of the paper's tables need
a fine-tuned ``checkpoint``.
"""
from __future__ import annotations

import json
from pathlib import Path

from spikevit.errors import SpikevitError, require
from spikevit.reproduce.common import Context, report

PARAMS = {
    "part": "fig7",                 # fixed per registry entry: fig7 or layers
    # fig7
    "ks": "4-16",                   # SI-exp time steps K
    "row_lengths": "8,64,197",      # softmax row lengths n (the paper does not state n)
    "rows": 2000,                   # rows per row length
    "seed": 0,
    # layers
    "model": "vit-cifar-tiny",      # fixed per registry entry
    "checkpoint": "",               # "" = the entry's weights (see the module docstring)
    "dataset": "",                  # "" = the model's own dataset
    "steps": 12,                    # SI-exp K of the converted softmax
    "spiking": "softmax",           # softmax | attention | all (spikevit convert run --spiking)
    "squeeze": "",                  # "" = none; sigmoid / tanh range restriction before the spiking softmax
    "test_subset": 0,               # 0 = the whole test split
    "img_size": 0,                  # 0 = the dataset's own size
    "batch_size": 250,
    "energy_batches": 2,
    "calibration_samples": 256,
    "sweep": "4-16",                # K values of the error sweep inside the conversion report ("" skips it)
    "workers": 0,
    "download": False,              # let torchvision download CIFAR-10/100
}
QUICK = {"rows": 500, "test_subset": 1000}

COMMITTED = {"vit-cifar-tiny": "results/conversion/vit-cifar-tiny/tanh/model.safetensors"}

# --------------------------------------------------------------------------- the paper's numbers (as printed)

FIG7 = {"K": 12, "mse": 0.013991, "si_exp_rmse": 0.0015413}   # Fig. 7 (K = 12) and Sec. 3.1 (SI-exp fit RMSE)
# Tables 2-4: blocks converted -> top-1 % on ImageNet-1K, CIFAR100, CIFAR10
TABLES = {
    "2": ("EdgeNeXt", [(0, 79.42, 85.40, 97.69), (1, 79.30, 85.37, 97.69), (2, 79.30, 85.42, 97.68),
                       (3, 79.18, 85.37, 97.69)]),
    "3": ("Next-ViT", [(0, 81.71, 86.54, 97.62), (1, 81.71, 86.55, 97.61), (2, 81.72, 86.55, 97.61),
                       (3, 81.72, 86.53, 97.61), (4, 81.72, 86.55, 97.61)]),
    "4": ("UniFormer", [(0, 77.16, 85.70, 97.46), (1, 77.16, 85.68, 97.46), (2, 77.18, 85.75, 97.45),
                        (3, 77.18, 85.72, 97.47), (4, 77.18, 85.68, 97.45), (5, 77.20, 85.69, 97.45),
                        (6, 77.19, 85.70, 97.47), (7, 77.18, 85.68, 97.46), (8, 77.15, 85.72, 97.48),
                        (9, 77.17, 85.70, 97.48), (10, 77.11, 85.77, 97.59)]),
}
# Table 5: dataset, model, ANN %, SIT %, conversion loss (points), blocks, params (M), FLOPs (G), energy mJ, change %
TABLE5 = [
    ("imagenet", "EdgeNeXt", 79.42, 79.18, -0.24, 3, 5.59, 1.26, 3.19, -44.96),
    ("imagenet", "Next-ViT", 81.71, 81.71, 0.00, 4, 31.76, 5.8, 21.83, -18.18),
    ("imagenet", "UniFormer", 77.16, 77.11, -0.05, 10, 10.21, 1.3, 4.49, -24.92),
    ("cifar100", "EdgeNeXt", 85.40, 85.37, -0.03, 3, 5.59, 1.26, 3.22, -44.22),
    ("cifar100", "Next-ViT", 86.54, 86.55, 0.01, 4, 31.76, 5.8, 21.32, -20.09),
    ("cifar100", "UniFormer", 85.70, 85.77, 0.07, 10, 10.21, 1.3, 4.48, -25.08),
    ("cifar10", "EdgeNeXt", 97.69, 97.69, 0.00, 3, 5.59, 1.26, 3.18, -45.13),
    ("cifar10", "Next-ViT", 97.62, 97.61, -0.01, 4, 31.76, 5.8, 21.56, -19.19),
    ("cifar10", "UniFormer", 97.46, 97.59, 0.13, 10, 10.21, 1.3, 4.50, -24.75),
]
COLUMNS = {"imagenet": 1, "cifar100": 2, "cifar10": 3}


def steps_list(text: str, what: str) -> list[int]:
    """``"4-16"`` / ``"4,8,12"`` -> [4, ..., 16]."""
    out = []
    try:
        for part in filter(None, (s.strip() for s in str(text).split(","))):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise SpikevitError(f"{what}: cannot read {text!r}; use e.g. 12, 4-16 or 4,8,12") from None
    require(all(k >= 1 for k in out), f"{what}: values must be >= 1, got {text!r}")
    return out


# --------------------------------------------------------------------------- Fig. 7


def fig7(ctx: Context, p: dict) -> Path:
    from spikevit.conversion import softmax_error_sweep
    from spikevit.conversion.params import available
    from spikevit.conversion.report import sweep_notes, sweep_plot

    ks, ns = steps_list(p["ks"], "ks"), steps_list(p["row_lengths"], "row_lengths")
    missing = sorted(set(ks) - set(available("exp")))
    require(not missing, f"ks: no shipped SI-exp neuron for K = {missing} (available: {available('exp')})")
    rows = softmax_error_sweep(ks, ns, rows=p["rows"], seed=p["seed"])
    for r in rows:
        r["paper_mse"] = FIG7["mse"] if r["K"] == FIG7["K"] else None
    ctx.folder.mkdir(parents=True, exist_ok=True)
    png = sweep_plot(rows, ctx.path("-fig7.png"), f"Spiking softmax vs softmax, logits ~ U[-1, 1], "
                     f"{p['rows']} rows per n")
    k12 = [r for r in rows if r["K"] == FIG7["K"]]
    summary = [{"row_length": r["row_length"], "K": r["K"], "mse": r["mse"], "rel_rmse": r["rel_rmse"],
                "mean_row_l1": r["mean_row_l1"], "max_abs": r["max_abs"], "paper_mse": FIG7["mse"]} for r in k12]
    best = {n: min((r for r in rows if r["row_length"] == n), key=lambda r: r["rel_rmse"])["K"] for n in ns}
    results = {"K12": summary, "lowest_rel_rmse_K_by_row_length": best, "paper": FIG7}
    notes = ("Rows of n i.i.d. U[-1, 1] logits (the paper's Sec. 4.2 setting), SpikingSoftmax with the shipped "
             "SI-exp neurons (one fit per K) and SI-norm in its fast form, against torch.softmax. "
             "The paper marks K = 12 as its choice with 'MSE' 0.013991 and gives no other value. "
             + sweep_notes(rows))
    return report(ctx, p, results, {"Fig. 7 at K = 12: ours beside the paper": summary,
                                    "spiking-softmax error vs K": rows},
                  title="SIT Fig. 7: spiking-softmax error vs time steps K", notes=notes,
                  figures=[Path(png)] if png else [])


# --------------------------------------------------------------------------- Tables 2-5


def _repo_file(path: str) -> str:
    """A repository-relative file (the committed checkpoints) found from the working directory or the repo."""
    if Path(path).is_file() or Path(path).is_absolute():
        return path
    here = Path(__file__).resolve().parents[3] / path
    return str(here) if here.is_file() else path


def published_weights(ctx: Context, model: str) -> str:
    """Fetch the published ImageNet weights of ``timm:NAME`` / ``torchvision:NAME`` once; the state dict is
    stored as ``<out>/<name>/<NAME>-published.safetensors`` (reused when present)."""
    from safetensors.torch import save_file

    lib, arch = model.split(":", 1)
    path = ctx.folder / f"{arch}-published.safetensors"
    if path.is_file():
        return str(path)
    if lib == "timm":
        try:
            import timm
        except ImportError:
            raise SpikevitError("timm is not installed (pip install 'spikevit[timm]')") from None
        net = timm.create_model(arch, pretrained=True)
    else:
        import torchvision

        net = torchvision.models.get_model(arch, weights="DEFAULT")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def entry_inputs(ctx: Context, p: dict) -> tuple[str, str]:
    """(checkpoint, dataset) of the run: the entry's defaults for empty parameters."""
    model = p["model"]
    external = model.startswith(("timm:", "torchvision:"))
    dataset = p["dataset"] or ("imagenet" if external else "cifar10")
    if p["checkpoint"]:
        return p["checkpoint"], dataset
    if external:
        require(dataset == "imagenet", f"{model} on {dataset}: the published weights are ImageNet weights; "
                "give a fine-tuned state dict with --set checkpoint=FILE")
        return published_weights(ctx, model), dataset
    require(model in COMMITTED, f"{model}: no committed model file; give one with --set checkpoint=FILE")
    return _repo_file(COMMITTED[model]), dataset


def paper_table(model: str) -> str | None:
    """Which of the paper's Tables 2-4 a model stands beside (None: no matching table)."""
    m = model.lower()
    if "edgenext" in m:
        return "2"
    if "nextvit" in m or "next-vit" in m:
        return "3"
    return "4" if "uniformer" in m else None


def compare_layers(ours: list[dict], model: str, dataset: str) -> list[dict]:
    """Our layer-by-layer rows beside the paper's table of the same model (or of every table when none
    matches: the shape, change against the ANN per blocks converted), for the same dataset column
    (CIFAR-10 when the dataset is none of the paper's)."""
    col = COLUMNS.get(dataset, COLUMNS["cifar10"])
    which = paper_table(model)
    out = []
    for r in ours:
        row = {"blocks_converted": r["blocks_converted"], "acc1": r["acc1"], "acc_change": r["acc_change"]}
        for t in ([which] if which else list(TABLES)):
            name, rows = TABLES[t]
            base = rows[0][col]
            hit = next((x for x in rows if x[0] == r["blocks_converted"]), None)
            row[f"paper_T{t}_{name}_acc1"] = hit[col] if hit else None
            row[f"paper_T{t}_{name}_change"] = round(hit[col] - base, 2) if hit else None
        out.append(row)
    return out


def paper_tables_rows() -> list[dict]:
    return [{"table": t, "model": name, "blocks_converted": b, "imagenet_acc1": i, "cifar100_acc1": c100,
             "cifar10_acc1": c10} for t, (name, rows) in TABLES.items() for b, i, c100, c10 in rows]


def spread(rows: list[dict], key: str = "acc_change") -> float:
    """Largest |change against the ANN| over the partial and full conversions."""
    return max(abs(r[key]) for r in rows[1:]) if len(rows) > 1 else 0.0


def layers(ctx: Context, p: dict) -> Path:
    from spikevit.conversion import ConversionParams
    from spikevit.conversion import run as convert_run

    checkpoint, dataset = entry_inputs(ctx, p)
    convert_json = ctx.path("-convert.json")
    convert_json.parent.mkdir(parents=True, exist_ok=True)
    sweep = steps_list(p["sweep"], "sweep") if p["sweep"] else ()
    params = ConversionParams(p["model"], checkpoint, dataset=dataset,
                              data_root=None if ctx.data_root is None else str(ctx.data_root), steps=p["steps"],
                              spiking=p["spiking"], squeeze=p["squeeze"] or None, batch_size=p["batch_size"],
                              test_subset=p["test_subset"] or None, img_size=p["img_size"] or None,
                              workers=p["workers"], calibration_samples=p["calibration_samples"],
                              energy_batches=p["energy_batches"], sweep_steps=sweep, seed=p["seed"],
                              device=ctx.device or "auto", json=str(convert_json), download=p["download"])
    summary = convert_run(params, command=ctx.command or f"spikevit reproduce {ctx.name}").results
    doc = json.loads(convert_json.read_text())
    lbl, t5 = doc["tables"]["layer_by_layer"], doc["tables"]["table5"]
    ours5 = [{"dataset": dataset, "model": r["model"], "ann_acc1": r["ann_acc1"], "sit_acc1": r["snn_acc1"],
              "conversion_loss": r["conversion_loss"], "blocks": r["blocks"], "params_M": r["params_M"],
              "flops_G": r["flops_ann_G"], "energy_ann_mJ": r["energy_ann_mJ"], "energy_mJ": r["energy_snn_mJ"],
              "energy_change_percent": r["energy_change_percent"], "source": "ours"} for r in t5]
    paper5 = [{"dataset": d, "model": m, "ann_acc1": a, "sit_acc1": s, "conversion_loss": cl, "blocks": b,
               "params_M": pm, "flops_G": fl, "energy_ann_mJ": None, "energy_mJ": e, "energy_change_percent": ch,
               "source": "paper"} for d, m, a, s, cl, b, pm, fl, e, ch in TABLE5 if d == dataset or
              dataset not in COLUMNS]
    paper_spread = {f"T{t} {name} {d}": round(max(abs(x[c] - rows[0][c]) for x in rows[1:]), 2)
                    for t, (name, rows) in TABLES.items() for d, c in COLUMNS.items()}
    results = {"ann_acc1": summary["ann"]["acc1"], "sit_acc1": summary["snn"]["acc1"],
               "conversion_loss_points": summary["conversion_loss_points"], "attention_blocks":
               summary["attention_blocks"], "largest_abs_change_points": spread(lbl),
               "paper_largest_abs_change_points": paper_spread, "energy": summary["energy"],
               "test_images": summary["snn"]["samples"], "checkpoint": checkpoint, "dataset": dataset,
               "conversion_report": convert_json.name}
    figures = [Path(f) for f in doc.get("figures", [])]
    notes = (f"{p['model']} ({checkpoint}) on the {dataset} test split ({summary['snn']['samples']} images), "
             f"SI-exp K = {p['steps']}, spiking level '{p['spiking']}'. The paper converts EdgeNeXt-S (Table 2), "
             "Next-ViT-S (Table 3) and UniFormer-XXS (Table 4), fine-tuned on CIFAR-10/100 and on ImageNet-1K; "
             "its tables list top-1 after the first n Transformer blocks are converted. Compare the shape: the "
             "change against the ANN after each block (ours: acc_change) and the conversion loss of the whole "
             "model. Energy (Table 5) per image with the paper's 45 nm constants (E_MAC 4.6 pJ, E_AC 0.9 pJ) from "
             "the operator profile of the ANN and of the fully converted model (full conversion report: "
             f"{convert_json.name}).")
    return report(ctx, p, results, {"Tables 2-4 shape: ours beside the paper (same dataset column)":
                                    compare_layers(lbl, p["model"], dataset),
                                    "Table 5: ours beside the paper": ours5 + paper5,
                                    "paper Tables 2-4 as printed": paper_tables_rows()},
                  title=f"SIT Tables 2-5: layer-by-layer conversion and energy of {p['model']}", notes=notes,
                  figures=figures)


def run(ctx: Context, p: dict) -> Path:
    parts = {"fig7": fig7, "layers": layers}
    require(p["part"] in parts, f"part {p['part']!r}: choose from {sorted(parts)}")
    return parts[p["part"]](ctx, p)
