"""Pieces every reproduction shares: run context, feature access, pixel images, reports, plots."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikevit.data.datasets import dataset_spec, load_dataset
from spikevit.data.features import FeatureSet, cached_features, extract_command, extract_features, load_features
from spikevit.errors import SpikevitError
from spikevit.reports import pyplot, save_figure, write_report  # noqa: F401  (used by every study module)


@dataclass
class Context:
    """Where a reproduction reads and writes.

    name:      registry name (outputs go to ``out / name / name.json`` etc.)
    data_root: folder with the datasets (ImageFolder trees or torchvision format)
    cache:     feature cache (``spikevit lca extract`` layout)
    out:       results folder (default ``results/reproduce``)
    quick:     the --quick variant was asked for
    device:    torch device request ("auto", "cpu", "cuda" ...)
    extract:   extract missing features (never resumes an extraction another process may be running)
    command:   the command line that produced the result (recorded in the JSON)
    """

    name: str
    data_root: Path | None = None
    cache: Path = Path.home() / ".cache" / "spikevit" / "features"
    out: Path = Path("results/reproduce")
    quick: bool = False
    device: str | None = None
    extract: bool = True
    command: str = ""
    quick_changes: dict = field(default_factory=dict)   # {param: (full, quick)} when --quick
    variant: str = ""                                   # suffix of the output files (e.g. another dataset)
    started: float = field(default_factory=time.perf_counter)

    @property
    def folder(self) -> Path:
        return Path(self.out) / self.name

    def path(self, suffix: str) -> Path:
        """Output file ``<out>/<name>/<name>[-<variant>]<suffix>`` (suffix like ".json" or "-energy.png")."""
        return self.folder / f"{self.name}{'-' + self.variant if self.variant else ''}{suffix}"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def report(ctx: Context, params: dict, results: dict, tables: dict, *, title: str, notes: str,
           figures: list[Path] = ()) -> Path:
    """Write ``<name>.json`` (+ .md, .csv) through :func:`spikevit.reports.write_report`."""
    config = {"reproduction": ctx.name, "quick": ctx.quick, "params": params, "data_root": ctx.data_root,
              "cache": ctx.cache, "device": ctx.device}
    quick_changes = ctx.quick_changes if ctx.quick else {}
    if quick_changes:
        config["quick_changes"] = {k: {"full": a, "quick": b} for k, (a, b) in quick_changes.items()}
        notes = notes + "\n\n--quick changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in quick_changes.items())
    results = dict(results) | {"wall_time_s": round(ctx.elapsed(), 1)}
    return write_report(ctx.path(".json"), ctx.command or f"spikevit reproduce {ctx.name}", config, results,
                        tables, title=title, notes=notes, figures=[str(f) for f in figures])


# --------------------------------------------------------------------------- features


def features(ctx: Context, dataset: str, backbone: str, split: str, *, weights: str = "default",
             limit: int | None = None, image_size: int | None = None, batch_size: int = 64,
             download: bool = False, num_workers: int = 0) -> FeatureSet:
    """Cached features of one split (a seeded random ``limit`` of its rows when given).

    A complete extraction of the whole split is reused (its rows subset with
    the same seeded choice the extractor makes for ``--limit``); otherwise a
    complete ``limit`` extraction; otherwise the features are extracted (only
    ``limit`` rows when given).  A folder holding a manifest but missing shards
    is an extraction in progress (or an interrupted one): it is never resumed
    from here, so two processes never extract the same split at once; the
    error names the command that resumes it.
    """
    fs = cached_features(ctx.cache, dataset, backbone, split, weights=weights, limit=limit, image_size=image_size,
                         data_root=ctx.data_root)
    if fs is not None:
        return fs
    if not ctx.extract:
        cmd = extract_command(dataset, backbone, split, ctx.cache, ctx.data_root, weights, limit, image_size)
        raise SpikevitError(f"no {dataset} {split} features for {backbone} in {ctx.cache}; extract them with: {cmd}")
    return load_features(extract_features(dataset, ctx.data_root, split, backbone, ctx.cache, weights=weights,
                                          batch_size=batch_size, limit=limit, device=ctx.device,
                                          image_size=image_size, download=download, num_workers=num_workers))


# --------------------------------------------------------------------------- images


def pixel_images(dataset: str, root, split: str, indices: torch.Tensor | None = None):
    """Images of ``split`` as floats in [0, 1]: ((B, C, H, W), (B,) labels), grey datasets with C = 1.

    ``indices`` selects rows of the split (all when None).
    """
    from torchvision import transforms as T

    mode = "L" if len(dataset_spec(dataset).mean) == 1 else "RGB"
    tf = T.Compose([T.Lambda(lambda im: im.convert(mode)), T.ToTensor()])
    ds = load_dataset(dataset, root, split, transform=tf)
    idx = torch.arange(len(ds)) if indices is None else torch.as_tensor(indices).long()
    if idx.numel() and int(idx.max()) >= len(ds):
        raise SpikevitError(f"{dataset} {split} has {len(ds)} images, asked for row {int(idx.max())}")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx.tolist()), batch_size=256)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x); ys.append(torch.as_tensor(y))
    if not xs:
        raise SpikevitError(f"no images selected from {dataset} {split}")
    return torch.cat(xs), torch.cat(ys).long()


def split_targets(dataset: str, root, split: str) -> torch.Tensor:
    """(P,) labels of a split without decoding its images."""
    return torch.as_tensor(load_dataset(dataset, root, split).targets).long()


# --------------------------------------------------------------------------- plots



# --------------------------------------------------------------------------- resumable partial results


def _plain(x):
    """JSON fallback for tensors and numpy arrays / scalars."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"cannot store {type(x).__name__} in a partial result")


class Partial:
    """Finished pieces of a long reproduction, kept in ``<name>-partial.json`` so a rerun resumes.

    Pieces are stored under string keys together with the parameters; a rerun
    with different parameters starts afresh.
    """

    def __init__(self, ctx: Context, params: dict):
        self.path = ctx.path("-partial.json")
        self.params = json.loads(json.dumps(params, default=str))
        self.done: dict = {}
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                saved = {}
            if saved.get("params") == self.params:
                self.done = saved.get("done", {})

    def get(self, key: str):
        return self.done.get(key)

    def put(self, key: str, value) -> None:
        self.done[key] = json.loads(json.dumps(value, default=_plain))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"params": self.params, "done": self.done}))
        tmp.replace(self.path)

    def finish(self) -> None:
        """Remove the partial file once the final report is written."""
        self.path.unlink(missing_ok=True)


def exemplar_dictionary(train: FeatureSet, size: int, seed: int, dataset: str, *, shrink: bool = False):
    """A dictionary of ``size`` seeded random training exemplars (the whole split when ``size`` equals its rows).

    Asking for more exemplars than the split holds is an error unless ``shrink`` (the caller then
    reports the dictionary's real size).  Every atom records (dataset, train split, index in the split).
    """
    from spikevit.lca.dictionary import Dictionary

    total = train.features.shape[0]
    if size > total and shrink:
        size = total
    if size > total:
        raise SpikevitError(f"dictionary size M = {size:,} exceeds the {total:,} {dataset} training images available; "
                            f"set M to at most {total:,} (--set M={total}) to run a smaller dictionary")
    return Dictionary.from_features(train.features, train.labels, None if size == total else size, seed=seed,
                                    backbone=train.backbone, dataset=dataset, split="train", index=train.index)
