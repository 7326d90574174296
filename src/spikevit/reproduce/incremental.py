"""D-SELD's incremental-learning claim: new exemplars and classes are added without retraining, in time
proportional to what is added.

Part 1, accuracy: per dataset (MNIST raw pixels; CIFAR-10 EfficientNet-Lite0
features on a stated subset), ``per_class`` seeded random training exemplars
of each class.  The dictionary starts with the first ``start_classes`` classes;
the others are added one class at a time, in place (:meth:`Dictionary.add`).
After each step the test images of the classes seen so far are encoded
(lam, tau, K as the papers) and decoded (max-activation, max-sum): accuracy on
all seen classes and on the old ones (seen before this step).  The same test
images are encoded with a dictionary built from scratch from the same atoms in
the same order: its atoms and codes must be identical (checked bit for bit).

Part 2, cost: a dictionary is grown from ``chunk`` atoms to ``growth_max``
atoms, ``chunk`` at a time, and each addition is timed: in place (amortised
capacity doubling) against the old way (a new dictionary built by
concatenating the whole atom matrix).  Flat time per added exemplar against M
is the claim.  The dense-Gramian backend's Gramian is extended with
``extend_gramian`` (O(N M) per added atom, the new row itself has M entries)
against recomputing it (O(N M^2) per addition); timed up to ``gram_max`` atoms.
The dictionary file is rewritten on save (safetensors has a leading header, so
an append is impossible without rewriting the file); its save time is reported.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from spikevit.data.features import FeatureSet
from spikevit.errors import SpikevitError
from spikevit.lca.decoders import class_sums, max_activation
from spikevit.lca.dictionary import Dictionary
from spikevit.lca.encode import encode_batches
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.reproduce.common import Context, Partial, features, pyplot, report, save_figure

BACKBONES = {"mnist": "pixels", "cifar10": "efficientnet_lite0", "digits": "pixels"}

PARAMS = {
    "datasets": "mnist,cifar10",
    "train_images": "cifar10=5000",          # per dataset: a seeded subset of the train split (others: all)
    "test_images": "mnist=2000,cifar10=1000",  # per dataset: a seeded subset of the test split (others: all)
    "start_classes": 2,                      # classes in the first dictionary
    "per_class": 300,                        # exemplars per class
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps,
    "backend": "factored",                   # one deterministic backend for both dictionaries
    "batch": 250,
    "chunk": 100,                            # atoms per timed addition
    "growth_max": 60000,                     # timed growth up to this many atoms (at most the train split)
    "gram_max": 6000,                        # Gramian extension timed up to this many atoms
    "seed": 0,
}
QUICK = {"test_images": "mnist=500,cifar10=500", "per_class": 100, "growth_max": 20000, "gram_max": 3000}


def _per_dataset(spec: str, dataset: str) -> int | None:
    """"a=1,b=2" -> the value for ``dataset`` (None when absent or 0)."""
    for item in str(spec).split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == dataset:
            try:
                n = int(value)
            except ValueError:
                raise SpikevitError(f"expected DATASET=COUNT items, got {item!r}") from None
            if n < 0:
                raise SpikevitError(f"image count for {dataset} must be >= 0, got {n}")
            return n or None
    return None


def class_exemplars(labels: torch.Tensor, classes: int, per_class: int, seed: int) -> list[torch.Tensor]:
    """For each class, ``per_class`` seeded random rows of that class (sorted)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in range(classes):
        rows = torch.nonzero(labels == c).squeeze(1)
        if rows.numel() < per_class:
            raise SpikevitError(f"class {c} has {rows.numel()} training images, fewer than per_class = {per_class}")
        out.append(rows[torch.randperm(rows.numel(), generator=gen)[:per_class]].sort().values)
    return out


def _codes(d: Dictionary, x: torch.Tensor, p: dict) -> torch.Tensor:
    return torch.cat([o.codes for _, o in encode_batches(d.atoms, x, batch_size=p["batch"], show_progress=False,
                                                          **LCAParams.from_mapping(p).kwargs())])


def accuracy_steps(train: FeatureSet, test: FeatureSet, dataset: str, p: dict) -> list[dict]:
    """Grow class by class; after each step top-1 on seen / old classes and the from-scratch comparison."""
    classes = int(train.labels.max()) + 1
    c0 = p["start_classes"]
    if not 1 <= c0 < classes:
        raise SpikevitError(f"start_classes must be in 1..{classes - 1}, got {c0}")
    groups = class_exemplars(train.labels, classes, p["per_class"], p["seed"])
    first = torch.cat(groups[:c0])
    d = Dictionary.from_features(train.features[first], train.labels[first], index=train.index[first],
                                 dataset=dataset, backbone=train.backbone, num_classes=c0)
    rows, used = [], [first]
    for step, k in enumerate(range(c0 - 1, classes)):
        add_ms = float("nan")
        if step:                                           # add class k in place
            g = groups[k]
            t0 = time.perf_counter()
            d.add(train.features[g], train.labels[g], train.index[g], dataset=dataset, split="train")
            add_ms = 1e3 * (time.perf_counter() - t0)
            used.append(g)
        seen = k + 1
        mask = test.labels < seen
        x, y = test.features[mask], test.labels[mask]
        codes = _codes(d, x, p)
        all_rows = torch.cat(used)
        scratch = Dictionary.from_features(train.features[all_rows], train.labels[all_rows],
                                           index=train.index[all_rows], dataset=dataset, num_classes=seen)
        ref = _codes(scratch, x, p)
        pred_act = max_activation(codes, d.labels)
        pred_sum = class_sums(codes, d.labels, seen).argmax(1)
        old = y < (k if step else seen)                    # classes present before this step
        rows.append({
            "dataset": dataset, "step": step, "classes_seen": seen, "added_class": k if step else None,
            "M": d.size, "added": int(used[-1].numel()) if step else int(first.numel()),
            "add_ms": add_ms, "add_ms_per_exemplar": add_ms / used[-1].numel() if step else float("nan"),
            "test_images_seen": int(mask.sum()),
            "seen_max_activation": 100.0 * float((pred_act == y).double().mean()),
            "seen_max_sum": 100.0 * float((pred_sum == y).double().mean()),
            "old_max_activation": 100.0 * float((pred_act[old] == y[old]).double().mean()) if old.any() else None,
            "old_max_sum": 100.0 * float((pred_sum[old] == y[old]).double().mean()) if old.any() else None,
            "atoms_identical": bool(torch.equal(d.atoms, scratch.atoms) and torch.equal(d.labels, scratch.labels)),
            "codes_identical": bool(torch.equal(codes, ref)),
            "codes_max_abs_diff": float((codes - ref).abs().max()),
            "predictions_identical": bool(torch.equal(pred_sum, class_sums(ref, scratch.labels, seen).argmax(1))),
            "provenance_train_atoms": d.atoms_from(dataset, "train"),
        })
    return rows


def growth_timing(train: FeatureSet, p: dict) -> list[dict]:
    """Time per added exemplar vs M: in-place growth against rebuilding by concatenation."""
    total = train.features.shape[0]
    top = min(p["growth_max"], total)
    chunk = p["chunk"]
    if chunk <= 0 or chunk > top:
        raise SpikevitError(f"chunk must be in 1..{top}, got {chunk}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(p["seed"]))[:top]
    feats, labels, index = train.features[order], train.labels[order], train.index[order]
    grown = Dictionary.from_features(feats[:chunk], labels[:chunk], index=index[:chunk])
    atoms, lab, src = grown.atoms.contiguous().clone(), grown.labels.clone(), grown.source.clone()
    rows = []
    for start in range(chunk, top - chunk + 1, chunk):
        f, y, i = feats[start:start + chunk], labels[start:start + chunk], index[start:start + chunk]
        t0 = time.perf_counter()
        grown.add(f, y, i)
        t_in = time.perf_counter() - t0
        t0 = time.perf_counter()                           # the old way: normalise the new rows, copy everything
        new = (f / f.norm(dim=1, keepdim=True)).T
        atoms, lab, src = torch.cat([atoms, new], 1), torch.cat([lab, y]), torch.cat([src, i])
        t_cat = time.perf_counter() - t0
        rows.append({"M_before": start, "in_place_us_per_exemplar": 1e6 * t_in / chunk,
                     "concat_us_per_exemplar": 1e6 * t_cat / chunk, "capacity": grown.capacity})
    if not torch.equal(grown.atoms, atoms):
        raise SpikevitError("in-place growth and concatenation disagree on the atoms")
    return rows


def gramian_timing(train: FeatureSet, p: dict) -> list[dict]:
    """Time per added exemplar of the cached Gramian: extend_gramian vs recomputing phi^T phi."""
    top = min(p["gram_max"], train.features.shape[0])
    chunk = p["chunk"]
    d = Dictionary.from_features(train.features[:chunk], train.labels[:chunk])
    d.gramian()
    rows = []
    for start in range(chunk, top - chunk + 1, chunk):
        t0 = time.perf_counter()
        d.add(train.features[start:start + chunk], train.labels[start:start + chunk])
        gram = d.gramian()
        t_ext = time.perf_counter() - t0
        a = d.atoms
        t0 = time.perf_counter()
        full = a.T @ a
        t_full = time.perf_counter() - t0
        rows.append({"M_before": start, "extend_us_per_exemplar": 1e6 * t_ext / chunk,
                     "recompute_us_per_exemplar": 1e6 * t_full / chunk,
                     "max_abs_diff": float((gram - full).abs().max())})
    return rows


def save_timing(train: FeatureSet, p: dict, tmp) -> list[dict]:
    """Seconds to write the dictionary file at a few sizes (the file is rewritten, not appended)."""
    out = []
    total = min(p["growth_max"], train.features.shape[0])
    for m in sorted({min(total, s) for s in (1000, 5000, 20000, total)}):
        d = Dictionary.from_features(train.features[:m], train.labels[:m])
        t0 = time.perf_counter()
        d.save(tmp)
        out.append({"M": m, "save_ms": 1e3 * (time.perf_counter() - t0), "file_MB": tmp.stat().st_size / 2 ** 20})
    tmp.unlink(missing_ok=True)
    return out


def _binned(rows, key, bins=20):
    m = np.array([r["M_before"] for r in rows], dtype=float)
    v = np.array([r[key] for r in rows], dtype=float)
    edges = np.linspace(m.min(), m.max() + 1, bins + 1)
    centers, med = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (m >= lo) & (m < hi)
        if sel.any():
            centers.append(m[sel].mean()); med.append(np.median(v[sel]))
    return np.array(centers), np.array(med)


def plot(timing: dict, gram: dict, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    for j, (ds, rows) in enumerate(timing.items()):
        for key, style, name in (("in_place_us_per_exemplar", "-", "in place"), ("concat_us_per_exemplar", "--",
                                                                                  "concatenation (old)")):
            x, y = _binned(rows, key)
            ax.plot(x, y, style, color=f"C{j}", label=f"{ds}: {name}")
    ax.set_xlabel("dictionary size M before the addition"); ax.set_ylabel("µs per added exemplar (median per bin)")
    ax.set_yscale("log"); ax.set_title("Adding atoms", fontsize=9); ax.legend(fontsize=7)
    ax = axes[1]
    for j, (ds, rows) in enumerate(gram.items()):
        for key, style, name in (("extend_us_per_exemplar", "-", "extend_gramian"),
                                 ("recompute_us_per_exemplar", "--", "recompute")):
            x, y = _binned(rows, key)
            ax.plot(x, y, style, color=f"C{j}", label=f"{ds}: {name}")
    ax.set_xlabel("dictionary size M before the addition"); ax.set_ylabel("µs per added exemplar (median per bin)")
    ax.set_yscale("log"); ax.set_title("Dense-Gramian backend: Gramian update", fontsize=9); ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_accuracy(steps: list[dict], path):
    plt = pyplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in steps))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        rows = [r for r in steps if r["dataset"] == ds]
        x = [r["classes_seen"] for r in rows]
        for key, style in (("seen_max_sum", "-o"), ("old_max_sum", "--o"), ("seen_max_activation", "-s"),
                           ("old_max_activation", "--s")):
            ax.plot(x, [np.nan if r[key] is None else r[key] for r in rows], style, label=key, ms=3)
        ax.set_xlabel("classes in the dictionary"); ax.set_ylabel("top-1 (%)"); ax.set_title(ds, fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    datasets = [d.strip() for d in p["datasets"].split(",") if d.strip()]
    unknown = [d for d in datasets if d not in BACKBONES]
    if unknown:
        raise SpikevitError(f"incremental: no backbone for {unknown}; choose from {sorted(BACKBONES)}")
    partial = Partial(ctx, p)
    steps, timing, gram, saves = [], {}, {}, {}
    for ds in datasets:
        done = partial.get(ds)
        if done is None:
            bb = BACKBONES[ds]
            train = features(ctx, ds, bb, "train", limit=_per_dataset(p["train_images"], ds))
            test = features(ctx, ds, bb, "test", limit=_per_dataset(p["test_images"], ds))
            done = {"steps": accuracy_steps(train, test, ds, p), "timing": growth_timing(train, p),
                    "gram": gramian_timing(train, p), "save": save_timing(train, p, ctx.path(f"-{ds}-tmp.safetensors")),
                    "train_images": int(train.features.shape[0]), "test_images": int(test.features.shape[0])}
            partial.put(ds, done)
        steps += done["steps"]
        timing[ds], gram[ds], saves[ds] = done["timing"], done["gram"], done["save"]
    fig_t = plot(timing, gram, ctx.path("-time.png"))
    fig_a = plot_accuracy(steps, ctx.path("-accuracy.png"))
    summary = []
    for ds in datasets:
        t, g = timing[ds], gram[ds]
        half = len(t) // 2
        summary.append({
            "dataset": ds, "train_images": partial.get(ds)["train_images"], "M_range": f"{t[0]['M_before']}-{t[-1]['M_before']}",
            "in_place_us_first_half": float(np.median([r["in_place_us_per_exemplar"] for r in t[:half]])),
            "in_place_us_second_half": float(np.median([r["in_place_us_per_exemplar"] for r in t[half:]])),
            "in_place_us_mean_amortised": float(np.mean([r["in_place_us_per_exemplar"] for r in t])),
            "concat_us_first_half": float(np.median([r["concat_us_per_exemplar"] for r in t[:half]])),
            "concat_us_second_half": float(np.median([r["concat_us_per_exemplar"] for r in t[half:]])),
            "gram_extend_us_last": g[-1]["extend_us_per_exemplar"] if g else None,
            "gram_recompute_us_last": g[-1]["recompute_us_per_exemplar"] if g else None,
            "gram_max_abs_diff": max(r["max_abs_diff"] for r in g) if g else None,
            "all_codes_identical": all(r["codes_identical"] for r in steps if r["dataset"] == ds),
        })
    notes = (f"Per class {p['per_class']} seeded random training exemplars; start with {p['start_classes']} classes; "
             f"lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}, backend {p['backend']}; train subset "
             f"{p['train_images']!r}, test subset {p['test_images']!r} (seeded, as `spikevit lca extract --limit`). "
             "'old' = test images of the classes present before the step. Codes are compared bit for bit with a "
             "dictionary built from scratch from the same atoms in the same order. Timings are wall-clock on a "
             "shared CPU; the plot shows the median per M bin, the table the medians of the first and second half "
             "of the M range (flat = the claim holds). The in-place time includes the amortised capacity doublings.")
    path = report(ctx, p, {"steps": steps, "summary": summary, "timing": timing, "gramian": gram, "save": saves},
                  {"summary": summary, "accuracy after each added class": steps,
                   "save (the file is rewritten)": [{"dataset": ds, **r} for ds, rs in saves.items() for r in rs]},
                  title="D-SELD incremental learning: class by class, in place", notes=notes,
                  figures=[fig_a, fig_t])
    partial.finish()
    return path
