"""Resumable, sharded feature extraction into a safetensors cache.

Layout: ``<cache>/<dataset>/<backbone>[_<weights>]/<split>[-n<limit>]/shard-00000.safetensors``,
each shard holding ``features`` (B, N), ``labels`` (B,) and ``index`` (B,) (row
in the split) with backbone / dataset metadata, plus ``manifest.json``.  A
killed run restarts at the first missing shard; finished shards are never
recomputed.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spikevit.backbones import create_backbone
from spikevit.data.datasets import dataset_spec, load_dataset
from spikevit.errors import SpikevitError
from spikevit.runtime import pick_device, progress
from spikevit.tensorio import load_tensors, read_metadata, save_tensors
from spikevit.validation import atomic_write_text

KIND = "feature-shard"


@dataclass
class FeatureSet:
    """Features (P, N), labels (P,), row indices (P,) and provenance metadata."""

    features: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    meta: dict

    @property
    def backbone(self) -> str:
        return self.meta["backbone"]


def _weights_tag(weights: str) -> str:
    if weights == "default":
        return ""
    if weights in ("none", None):
        return "_random"
    return "_" + hashlib.sha1(str(Path(weights).resolve()).encode()).hexdigest()[:8]


def feature_dir(cache: str | Path, dataset: str, backbone: str, split: str, weights: str = "default",
                limit: int | None = None, image_size: int | None = None) -> Path:
    tag = _weights_tag(weights) + (f"_{image_size}px" if image_size else "")
    return Path(cache) / dataset / f"{backbone.replace('/', '_').replace(':', '_')}{tag}" / (
        split + (f"-n{limit}" if limit else ""))


def subset_indices(total: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """All rows, or a seeded random ``limit`` of them (sorted)."""
    if limit is None or limit >= total:
        return torch.arange(total)
    if limit <= 0:
        raise SpikevitError(f"--limit must be positive, got {limit}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def extract_features(dataset: str, data_root, split: str, backbone: str, cache: str | Path, *,
                     weights: str = "default", batch_size: int = 64, shard_size: int = 2048,
                     limit: int | None = None, device: str | None = None, num_workers: int = 0,
                     image_size: int | None = None, download: bool = False, show_progress: bool = True,
                     skip_bad_images: bool = False) -> Path:
    """Extract features of ``split`` into the cache (resuming); return the split's folder."""
    spec = dataset_spec(dataset)
    out = feature_dir(cache, dataset, backbone, split, weights, limit, image_size)
    bb = create_backbone(backbone, weights, image_size=image_size, pixel_stats=(spec.mean, spec.std))
    ds = load_dataset(dataset, data_root, split, transform=bb.transform, download=download,
                      skip_bad_images=skip_bad_images)
    rows = subset_indices(len(ds), limit)
    if len(rows) == 0:
        raise SpikevitError(f"{dataset} {split} split is empty")
    n_shards = (len(rows) + shard_size - 1) // shard_size
    manifest = {"dataset": dataset, "split": split, "backbone": bb.name, "weights": str(weights),
                "rows": len(rows), "shard_size": shard_size, "shards": n_shards,
                "classes": list(getattr(ds, "classes", [])), "image_size": image_size,
                "rows_sha1": hashlib.sha1(rows.numpy().tobytes()).hexdigest(),
                "transform": _describe(bb.transform), "feature_dim": bb.spec.feature_dim}
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    if mpath.exists():
        old = _read_manifest(mpath)
        if old is None:    # unreadable (e.g. an interrupted write by an older version): shards cannot be verified
            print(f"{mpath} is unreadable; re-extracting every shard of {out} to repair it")
            for shard in out.glob("shard-*.safetensors"):
                shard.unlink()
        else:
            changed = [k for k in ("rows", "shard_size", "backbone", "rows_sha1", "transform")
                       if old.get(k) != manifest[k]]
            if changed:
                raise SpikevitError(f"{out} holds an extraction with different settings ({', '.join(changed)}); "
                                    "delete it or use another --cache")
    atomic_write_text(mpath, json.dumps(manifest, indent=2))
    todo = [i for i in range(n_shards) if not _shard_ok(out / f"shard-{i:05d}.safetensors")]
    if not todo:
        return out
    dev = pick_device(device)
    bb = bb.to(dev)
    targets = torch.as_tensor(ds.targets)
    bar = progress(total=sum(min(shard_size, len(rows) - i * shard_size) for i in todo),
                   desc=f"features {dataset}/{split} {bb.name}", unit="img",
                   **({} if show_progress else {"disable": True}))
    for i in todo:
        idx = rows[i * shard_size:(i + 1) * shard_size]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=batch_size,
                                             num_workers=num_workers, shuffle=False)
        feats = []
        t0 = time.perf_counter()
        for x, _ in loader:
            feats.append(bb(x.to(dev, non_blocking=True)).cpu())
            bar.update(x.shape[0])
        f = torch.cat(feats)
        if not torch.isfinite(f).all():
            raise SpikevitError(f"backbone {bb.name} produced NaN/inf features for shard {i}")
        save_tensors(out / f"shard-{i:05d}.safetensors", {"features": f, "labels": targets[idx], "index": idx},
                     KIND, {k: manifest[k] for k in ("dataset", "split", "backbone", "weights")}
                     | {"shard": i, "seconds": time.perf_counter() - t0, "device": str(dev)})
    bar.close()
    return out


def _describe(transform) -> str:
    """Stable text form of a preprocessing pipeline (lambdas reduced to their role)."""
    text = repr(transform)
    return " ".join(line.split(" at 0x")[0].strip() for line in text.splitlines())


def _read_manifest(path: Path) -> dict | None:
    """The manifest, or None when it is empty, truncated or not a manifest."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("shards"), int) else None


def _shard_ok(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        read_metadata(path, KIND)
        return True
    except SpikevitError:
        return False


def load_features(folder: str | Path) -> FeatureSet:
    """Concatenate the shards of one extracted split; refuses incomplete extractions."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise SpikevitError(f"no extracted features in {folder} (missing manifest.json): run `spikevit lca extract`")
    manifest = _read_manifest(mpath)
    if manifest is None:
        raise SpikevitError(f"{mpath} is empty or corrupt: rerun the same `spikevit lca extract` command to repair it")
    feats, labels, index, seconds = [], [], [], 0.0
    for i in range(manifest["shards"]):
        p = folder / f"shard-{i:05d}.safetensors"
        if not p.is_file():
            raise SpikevitError(f"feature extraction in {folder} is incomplete (shard {i} of {manifest['shards']} "
                                "missing): rerun the same extract command to resume")
        t, meta = load_tensors(p, KIND, required=("features", "labels", "index"))
        if meta.get("backbone") != manifest["backbone"]:
            raise SpikevitError(f"{p} comes from backbone {meta.get('backbone')!r}, not {manifest['backbone']!r}")
        feats.append(t["features"]); labels.append(t["labels"]); index.append(t["index"])
        seconds += float(meta.get("seconds", 0.0))
    manifest["extract_ms_per_image"] = 1e3 * seconds / max(1, manifest["rows"])
    manifest["folder"] = str(folder)
    return FeatureSet(torch.cat(feats).float(), torch.cat(labels).long(), torch.cat(index).long(), manifest)


def subset(fs: FeatureSet, limit: int | None) -> FeatureSet:
    """``limit`` rows chosen as ``spikevit lca extract --limit`` chooses them (all rows when None or larger);
    the metadata records ``subset_of`` (rows before) and ``subset_rows``."""
    n = fs.features.shape[0]
    if limit is None or limit >= n:
        return fs
    rows = subset_indices(n, limit)
    meta = dict(fs.meta) | {"subset_of": n, "subset_rows": int(limit)}
    return FeatureSet(fs.features[rows], fs.labels[rows], fs.index[rows], meta)


def extract_command(dataset: str, backbone: str, split: str, cache, data_root, weights: str = "default",
                    limit: int | None = None, image_size: int | None = None) -> str:
    """The ``spikevit lca extract`` command that makes (or resumes) this cache folder."""
    cmd = (f"spikevit lca extract --dataset {dataset} --data-root {data_root or 'DIR'} --backbone {backbone} "
           f"--split {split} --cache {cache}")
    if weights != "default":
        cmd += f" --weights {weights}"
    if limit:
        cmd += f" --limit-{split} {limit}"
    if image_size:
        cmd += f" --image-size {image_size}"
    return cmd


def cached_features(cache, dataset: str, backbone: str, split: str, *, weights: str = "default",
                    limit: int | None = None, image_size: int | None = None, data_root=None,
                    incomplete: str = "raise") -> FeatureSet | None:
    """Features of a split from the cache without extracting: a complete extraction of the whole split (cut to
    ``limit`` rows, the same seeded rows ``--limit`` extracts), else a complete ``limit`` extraction, else None.

    A folder with a manifest but missing shards is an extraction in progress or interrupted: with
    ``incomplete="raise"`` it is a :class:`SpikevitError` naming the command that resumes it (so two processes
    never extract one split at once); with ``"skip"`` it is passed over.
    """
    for lim in ([None] if not limit else [None, limit]):
        folder = feature_dir(cache, dataset, backbone, split, weights, lim, image_size)
        manifest = _read_manifest(folder / "manifest.json") if (folder / "manifest.json").is_file() else None
        if manifest is None:
            continue
        missing = [i for i in range(manifest["shards"]) if not (folder / f"shard-{i:05d}.safetensors").is_file()]
        if missing and incomplete == "skip":
            continue
        if missing:
            raise SpikevitError(
                f"{dataset} {split} features for {backbone} in {folder} are incomplete ({len(missing)} of "
                f"{manifest['shards']} shards missing): an extraction is running or was interrupted. Wait for it, "
                "or resume it with: "
                + extract_command(dataset, backbone, split, cache, data_root, weights, lim, image_size))
        return subset(load_features(folder), limit) if lim is None else load_features(folder)
    return None
