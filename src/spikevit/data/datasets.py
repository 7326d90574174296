"""Dataset registry.

Each dataset is found, in order, in torchvision's own on-disk format under
``root`` (downloaded there only with ``download=True``), or as an ImageFolder
tree ``root/<name>/<split>/<class>/<image>`` (the layout of ``../shared/data``
and of ImageNet), or ``root/<split>/...`` when ``root`` is the dataset folder.
``digits`` is scikit-learn's embedded 8x8 digits set (no files needed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from spikevit.errors import SpikevitError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int | None
    mean: tuple[float, ...]          # per-channel pixel statistics (for the "pixels" backbone)
    std: tuple[float, ...]
    torchvision_class: str | None = None
    folder_names: tuple[str, ...] = ()
    test_split: str = "test"


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("mnist", 10, (0.1307,), (0.3081,), "MNIST", ("mnist", "MNIST")),
    DatasetSpec("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10",
                ("cifar10", "cifar-10", "CIFAR10")),
    DatasetSpec("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100",
                ("cifar100", "cifar-100", "CIFAR100")),
    DatasetSpec("imagenet", 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "ImageNet",
                ("imagenet", "ImageNet", "ILSVRC2012"), test_split="val"),
    DatasetSpec("imagefolder", None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    # scikit-learn digits scaled to [0, 1]; statistics of the whole set
    DatasetSpec("digits", 10, (0.3052,), (0.3815,)),
]}


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise SpikevitError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name]


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's 8x8 digits as 8-bit greyscale PIL images; fixed stratified 70/30 split."""

    def __init__(self, split: str, transform: Callable | None = None):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        idx = np.arange(len(data.target))
        train_idx, test_idx = train_test_split(idx, test_size=0.3, random_state=0, stratify=data.target)
        keep = np.sort(train_idx if split == "train" else test_idx)
        self.images = (data.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = data.target[keep].tolist()
        self.classes = [str(c) for c in range(10)]
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        return (self.transform(img) if self.transform else img), self.targets[i]


def _folder_root(spec: DatasetSpec, root: Path, split: str) -> Path | None:
    names = spec.folder_names or ()
    candidates = [root / n / split for n in names] + [root / split]
    return next((c for c in candidates if c.is_dir()), None)


def open_image(path: str) -> Image.Image:
    """Decode one image file fully (as ImageFolder's loader does: RGB); an unreadable file is a
    :class:`SpikevitError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()                   # decode now: truncated files fail here, not later inside a transform
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SpikevitError(f"unreadable image {path}: {exc} (pass --skip-bad-images to leave such files out)"
                            ) from None


def image_folder(root: str, transform: Callable | None = None, skip_bad_images: bool = False):
    """``torchvision.datasets.ImageFolder`` whose unreadable images are a clear error naming the file, or,
    with ``skip_bad_images=True``, are found by decoding every file up front, left out, and listed in the
    dataset's ``skipped`` attribute."""
    import torchvision

    ds = torchvision.datasets.ImageFolder(root, transform=transform, loader=open_image)
    ds.skipped = []
    if skip_bad_images:
        good = []
        for path, target in ds.samples:
            try:
                open_image(path)
                good.append((path, target))
            except SpikevitError:
                ds.skipped.append(path)
        ds.samples = ds.imgs = good
        ds.targets = [t for _, t in good]
        if ds.skipped:
            shown = ", ".join(ds.skipped[:3]) + (" ..." if len(ds.skipped) > 3 else "")
            print(f"skipped {len(ds.skipped)} unreadable image(s) of {root}: {shown}")
    return ds


def load_dataset(name: str, root: str | Path | None, split: str, transform: Callable | None = None,
                 download: bool = False, skip_bad_images: bool = False):
    """Return a torch Dataset with ``.targets`` and ``.classes`` for ``split`` ("train" / "test").

    Image-folder datasets fail with a :class:`SpikevitError` naming an unreadable image when it is read;
    ``skip_bad_images`` decodes every image up front and leaves the unreadable ones out (``ds.skipped``).
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise SpikevitError(f"unknown split {split!r}; choose from {SPLITS}")
    if name == "digits":
        return DigitsDataset(split, transform)
    if root is None:
        raise SpikevitError(f"dataset {name!r} needs --data-root (a folder holding it)")
    root = Path(root)
    if not root.is_dir():
        raise SpikevitError(f"data root not found: {root}")
    real_split = spec.test_split if split == "test" else "train"
    import torchvision

    if spec.torchvision_class and name != "imagenet":
        cls = getattr(torchvision.datasets, spec.torchvision_class)
        try:
            ds = cls(str(root), train=(split == "train"), transform=transform, download=download)
            return _with_targets(ds)
        except RuntimeError:
            if download:
                raise SpikevitError(f"could not download {name} into {root}") from None
    if name == "imagenet" and (root / "meta.bin").exists():
        return torchvision.datasets.ImageNet(str(root), split=real_split, transform=transform)
    folder = _folder_root(spec, root, real_split)
    if folder is None:
        raise SpikevitError(
            f"dataset {name!r} ({real_split} split) not found under {root}: expected torchvision's format "
            f"or an ImageFolder tree {root}/{(spec.folder_names or ('<name>',))[0]}/{real_split}/<class>/<image>"
            + ("" if download else " (or pass --download where the dataset host is reachable)"))
    ds = image_folder(str(folder), transform=transform, skip_bad_images=skip_bad_images)
    if spec.num_classes is not None and len(ds.classes) != spec.num_classes:
        raise SpikevitError(f"{folder} has {len(ds.classes)} class folders, {name} has {spec.num_classes}")
    return ds


def _with_targets(ds):
    if not hasattr(ds, "targets") or ds.targets is None:
        raise SpikevitError("dataset has no targets")
    ds.targets = [int(t) for t in ds.targets]
    return ds
