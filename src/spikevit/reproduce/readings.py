"""D-SELD Table 3, MNIST row: which reading of the paper (and of its authors' code) reproduces it?

The paper gives 93.93 / 97.48 / 98.25 % (max-activation / max-sum / shallow NN)
for MNIST raw pixels at "28 * 28 * 2" with lam = 2, tau = 100, K = 100.  Our
default reading (``baseline``) is short by 3-4 points.  Each row here changes
ONE thing from the baseline and reruns the whole test split:

* M / exemplar choice: the authors' script (``src/lca_feature_extractor.py`` of
  github.com/Sanaz-Tak/D-SELD) loads MNIST without shuffling and stops after
  ``dictionary_num`` images, i.e. the FIRST 1,568 training images in file order
  (ImageFolder trees here keep the original MNIST index as the file name);
* input normalisation: mean/std normalised pixels (the authors' transform,
  ours) against plain [0, 1] pixels;
* lam, tau and K: tau = 10 (``lr_neuron = 0.1`` in the authors' config file
  against 0.01 in their script), lam = 1 / 4, K = 300 (closer to convergence);
* signed (Eq. 6) against rectified (the authors' code) soft threshold;
* atom normalisation: unit-norm atoms (paper and code) against raw pixel
  vectors as atoms;
* what "28 * 28 * 2" is: Table 3 puts it in the "Feature Map Size" column,
  which holds N for every other row, so it may be N = 1,568 (ON/OFF
  channels, ``on-off``) rather than M;
* what M is: the authors' interactive runner calls their script without
  ``--dictionary_num``, whose default is 50,000 (``first-50000``).

The shallow NN of each row is the L-BFGS linear layer on ``shallow_train``
training codes (the cheap variant); the paper's training on the codes of the
whole training set is in ``spikevit reproduce dseld-mnist``.  Resumable per row.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spikevit.data.datasets import dataset_spec, load_dataset
from spikevit.data.features import FeatureSet, subset
from spikevit.errors import SpikevitError
from spikevit.lca.dictionary import Dictionary
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, Partial, features, pyplot, report, save_figure

PAPER = {"max_activation": 93.93, "max_sum": 97.48, "shallow": 98.25}
PAPER_M = 28 * 28 * 2

# name -> (what it changes, changes from the baseline)
READINGS: dict[str, tuple[str, dict]] = {
    "baseline": ("ours: M = 1,568 seeded random exemplars, mean/std pixels, lam 2, tau 100, K 100, rectified, "
                 "unit-norm atoms", {}),
    "first-M": ("M = the first 1,568 training images in MNIST order (authors' code: no shuffling, stop at M)",
                {"selection": "first"}),
    "pixels-01": ("inputs and atoms from [0, 1] pixels (no mean/std normalisation)", {"pixels": "unit-range"}),
    "tau-10": ("tau = 10 (lr_neuron = 0.1, the authors' config file)", {"tau": 10.0}),
    "lam-1": ("lam = 1", {"lam": 1.0}),
    "lam-4": ("lam = 4", {"lam": 4.0}),
    "K-300": ("K = 300 steps (nearer convergence)", {"steps": 300}),
    "signed": ("signed soft threshold (Eq. 6) instead of rectified", {"rectify": False}),
    "raw-atoms": ("atoms are the raw (normalised-pixel) vectors, not unit-norm", {"atoms": "raw"}),
    "first-M+tau-10": ("first 1,568 images and tau = 10", {"selection": "first", "tau": 10.0}),
    "on-off": ("N = 28*28*2: Table 3 lists 28*28*2 under 'Feature Map Size' (N for every other row), read as "
               "ON/OFF channels [max(x, 0), max(-x, 0)] of the mean/std pixels (N = 1,568, M = 1,568)",
               {"pixels": "on-off"}),
    "first-50000": ("M = the first 50,000 training images (the authors' script default --dictionary_num 50000, "
                    "which their interactive runner does not change for MNIST)", {"selection": "first", "M": 50000}),
}
BASE = {"selection": "random", "pixels": "normalised", "atoms": "unit", "lam": LCA_DEFAULTS.lam,
        "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps, "rectify": LCA_DEFAULTS.rectify}
# the readings lam-1 / lam-4, tau-10, K-300 and signed differ from the LCA defaults on purpose (one change each)

PARAMS = {
    "readings": "all",          # comma list of READINGS names, or "all"
    "M": PAPER_M,
    "test_images": 0,           # 0 = the whole test split
    "shallow_train": 5000,      # L-BFGS shallow NN on this many training codes (0: skip)
    "batch": 250,
    "backend": LCA_DEFAULTS.backend,
    "seed": 0,
}
QUICK = {"test_images": 1000, "shallow_train": 1000, "readings": "baseline,first-M,tau-10,pixels-01"}


def file_order(dataset: str, root, split: str) -> torch.Tensor:
    """(P,) original index of each row of an ImageFolder split whose files are named by index (``123.png``)."""
    ds = load_dataset(dataset, root, split)
    samples = getattr(ds, "samples", None)
    if samples is None:
        raise SpikevitError(f"{dataset} {split}: file order needs an ImageFolder tree (files named by index)")
    try:
        return torch.tensor([int(Path(path).stem) for path, _ in samples])
    except ValueError:
        raise SpikevitError(f"{dataset} {split}: file names are not image indices; the MNIST order is unknown") from None


def reading_dictionary(train: FeatureSet, setting: dict, m: int, seed: int, order: torch.Tensor | None) -> Dictionary:
    """The dictionary of one reading: M exemplars (random or first in file order), unit-norm or raw atoms."""
    total = train.features.shape[0]
    if m > total:
        raise SpikevitError(f"M = {m:,} exceeds the {total:,} training images available")
    if setting["selection"] == "first":
        rows = torch.argsort(order[train.index])[:m].sort().values
    else:
        rows = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:m].sort().values
    meta = {"backbone": train.backbone, "dataset": "mnist", "split": "train", "num_classes": 10}
    if setting["atoms"] == "raw":
        return Dictionary(train.features[rows].T, train.labels[rows], train.index[rows], meta | {"atom_norm": "raw"})
    return Dictionary.from_features(train.features[rows], train.labels[rows], index=train.index[rows], **meta)


def unit_range(fs: FeatureSet) -> FeatureSet:
    """Mean/std-normalised MNIST pixels back to [0, 1]: x * std + mean."""
    spec = dataset_spec("mnist")
    return FeatureSet(fs.features * spec.std[0] + spec.mean[0], fs.labels, fs.index, fs.meta)


def on_off(fs: FeatureSet) -> FeatureSet:
    """(P, N) -> (P, 2N) ON/OFF channels [max(x, 0), max(-x, 0)]."""
    return FeatureSet(torch.cat([fs.features.clamp_min(0), (-fs.features).clamp_min(0)], 1), fs.labels, fs.index,
                      fs.meta)


def run_reading(ctx: Context, p: dict, name: str, train: FeatureSet, test: FeatureSet, order) -> dict:
    setting = BASE | READINGS[name][1]
    if setting["pixels"] == "unit-range":
        train, test = unit_range(train), unit_range(test)
    elif setting["pixels"] == "on-off":
        train, test = on_off(train), on_off(test)
    d = reading_dictionary(train, setting, setting.get("M", p["M"]), p["seed"], order)
    ev = evaluate(d, test, train if p["shallow_train"] else None, LCAParams.from_mapping(setting, backend=p["backend"]),
                  batch_size=p["batch"], device=ctx.device, shallow_train_size=p["shallow_train"], seed=p["seed"])
    row = {"reading": name, "changes": READINGS[name][0], "N": d.feature_dim, "M": d.size}
    for key in ("max_activation", "max_sum", "shallow"):
        if key in ev.accuracy:
            row[key] = ev.accuracy[key]
            row[f"diff_{key}"] = ev.accuracy[key] - PAPER[key]
    row |= {"M_hat": ev.m_hat, "silent_%": 100 * ev.silent_fraction,
            "encode_ms_per_image": ev.timing_ms["lca_encoding"],
            "first_M_class_counts": torch.bincount(d.labels, minlength=10).tolist()}
    return row


def plot(rows: list[dict], path):
    plt = pyplot()
    keys = [k for k in ("max_activation", "max_sum", "shallow") if any(k in r for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    w = 0.8 / len(keys)
    for j, key in enumerate(keys):
        pos = x + (j - (len(keys) - 1) / 2) * w
        ax.bar(pos, [r.get(key, np.nan) for r in rows], w * 0.95, label=key)
        ax.axhline(PAPER[key], color=f"C{j}", ls="--", lw=1)
    ax.set_xticks(x, [r["reading"] for r in rows], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("top-1 (%)")
    lo = min(r.get(k, 100) for r in rows for k in keys)
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_title("D-SELD MNIST row: readings (bars) vs the paper (dashed)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    names = list(READINGS) if p["readings"] in ("all", "") else [r.strip() for r in p["readings"].split(",") if r.strip()]
    unknown = [n for n in names if n not in READINGS]
    if unknown:
        raise SpikevitError(f"unknown readings {unknown}; choose from {', '.join(READINGS)}")
    train = features(ctx, "mnist", "pixels", "train")
    test = subset(features(ctx, "mnist", "pixels", "test"), p["test_images"] or None)
    needs_order = any(READINGS[n][1].get("selection") == "first" for n in names)
    order = file_order("mnist", ctx.data_root, "train") if needs_order else None
    partial = Partial(ctx, {k: v for k, v in p.items() if k != "readings"})   # rows survive a changed list
    rows = []
    for name in names:
        done = partial.get(name)
        if done is None:
            done = run_reading(ctx, p, name, train, test, order)
            partial.put(name, done)
        n = train.features.shape[1] * (2 if READINGS[name][1].get("pixels") == "on-off" else 1)
        rows.append({"reading": name, "changes": done["changes"], "N": done.get("N", n)} | done)
    best = max(rows, key=lambda r: r["max_sum"])
    within = [r["reading"] for r in rows
              if all(abs(r.get(f"diff_{k}", 99)) <= 0.5 for k in ("max_activation", "max_sum"))]
    notes = (f"Paper (Table 3, MNIST): {PAPER['max_activation']} / {PAPER['max_sum']} / {PAPER['shallow']} % at M = "
             f"{PAPER_M:,}. Test images: {test.features.shape[0]:,}. Shallow NN here: L-BFGS on {p['shallow_train']} "
             f"training codes (the whole-training-set shallow NN is in dseld-mnist). Best max-sum: {best['reading']} "
             f"({best['max_sum']:.2f} %). Readings within 0.5 points of the paper on both spiking decoders: "
             f"{', '.join(within) if within else 'none'}.")
    fig = plot(rows, ctx.path("-readings.png"))
    table = [{k: v for k, v in r.items() if k != "first_M_class_counts"} for r in rows]
    path = report(ctx, p, {"rows": rows, "paper": PAPER}, {"readings (one change each from the baseline)": table},
                  title="D-SELD MNIST row: readings of the paper and its code", notes=notes, figures=[fig])
    if set(names) >= set(READINGS):
        partial.finish()
    return path
