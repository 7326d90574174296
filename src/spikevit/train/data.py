"""Datasets, augmentation and loaders for training, on top of :func:`spikevit.data.load_dataset`.

Augmentation: CIFAR random crop (padding 4) + horizontal flip; MNIST/digits random crop (padding 2,
no flip); ImageNet-style random-resized crop + flip at train and resize + centre crop at test.
Every split is normalised with the dataset's mean/std.  Data order is a pure function of
(seed, epoch): :class:`EpochSampler` shards each global batch over the DDP ranks so that the union of
the ranks' batches at a step equals the single-process batch of that step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from spikevit.data import dataset_spec, load_dataset
from spikevit.errors import SpikevitError, require


@dataclass(frozen=True)
class Geometry:
    in_chans: int
    img_size: int


# input geometry handed to the model constructors
GEOMETRY: dict[str, Geometry] = {
    "mnist": Geometry(1, 28), "digits": Geometry(1, 8), "cifar10": Geometry(3, 32), "cifar100": Geometry(3, 32),
    "imagenet": Geometry(3, 224), "imagefolder": Geometry(3, 224),
}


def dataset_geometry(name: str, img_size: int | None = None) -> Geometry:
    dataset_spec(name)  # validates the name
    g = GEOMETRY[name]
    return Geometry(g.in_chans, img_size or g.img_size)


def build_transforms(name: str, train: bool, augment: bool = True, img_size: int | None = None):
    """torchvision transform for ``name``'s ``train``/test split (see the module docstring)."""
    from torchvision import transforms as T

    spec = dataset_spec(name)
    geo = dataset_geometry(name, img_size)
    norm = [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    native = GEOMETRY[name].img_size
    large = geo.img_size >= 64  # ImageNet-style pipeline
    if large:
        if train and augment:
            return T.Compose([T.RandomResizedCrop(geo.img_size), T.RandomHorizontalFlip(), *norm])
        return T.Compose([T.Resize(int(round(geo.img_size / 0.875))), T.CenterCrop(geo.img_size), *norm])
    resize = [] if geo.img_size == native else [T.Resize(geo.img_size)]
    if name in ("mnist", "digits") and geo.in_chans == 1:
        to_gray = [T.Grayscale(1)]
    else:
        to_gray = []
    if not (train and augment):
        return T.Compose([*to_gray, *resize, *norm])
    pad = geo.img_size // 8
    flip = [] if name in ("mnist", "digits") else [T.RandomHorizontalFlip()]
    return T.Compose([*to_gray, *resize, T.RandomCrop(geo.img_size, padding=pad), *flip, *norm])


def seeded_subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A class-stratified, seeded subset of ``n`` samples (``None`` or ``n >= len`` keeps everything)."""
    if n is None or n >= len(ds):
        return ds
    require(n > 0, f"subset size must be > 0, got {n}")
    targets = np.asarray(getattr(ds, "targets"))
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    per_class = [rng.permutation(np.flatnonzero(targets == c)) for c in classes]
    # round-robin over classes keeps the subset balanced
    order = [idx[i] for i in range(max(len(p) for p in per_class)) for idx in per_class if i < len(idx)]
    keep = np.sort(np.asarray(order[:n]))
    sub = Subset(ds, keep.tolist())
    sub.targets = targets[keep].tolist()
    sub.classes = getattr(ds, "classes", None)
    return sub


def build_datasets(name: str, root: str | None, augment: bool = True, img_size: int | None = None,
                   train_subset: int | None = None, test_subset: int | None = None, seed: int = 0,
                   download: bool = False, skip_bad_images: bool = False) -> tuple[Dataset, Dataset]:
    """(train, test) datasets with training augmentation and seeded stratified subsets."""
    train = load_dataset(name, root, "train", build_transforms(name, True, augment, img_size), download,
                         skip_bad_images)
    test = load_dataset(name, root, "test", build_transforms(name, False, augment, img_size), download,
                        skip_bad_images)
    return seeded_subset(train, train_subset, seed), seeded_subset(test, test_subset, seed + 1)


class EpochSampler(Sampler[int]):
    """Indices of one rank for one epoch.

    train (``shuffle=True``): a permutation seeded by (seed, epoch), cut to whole global batches; global
    batch b is ``perm[b*G:(b+1)*G]`` and rank r takes its r-th slice of ``G / world`` samples.
    eval (``shuffle=False``): rank r takes ``r::world`` of all samples (no padding, nothing dropped).
    """

    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                 seed: int = 0):
        if shuffle and global_batch % world:
            raise SpikevitError(f"global batch size {global_batch} is not divisible by the {world} processes")
        if shuffle and n < global_batch:
            raise SpikevitError(f"training set has {n} samples, fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.n, self.world)
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        nb = self.n // self.global_batch
        perm = torch.randperm(self.n, generator=g)[: nb * self.global_batch]
        return perm.view(nb, self.world, -1)[:, self.rank].reshape(-1)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.n, self.world))
        return (self.n // self.global_batch) * (self.global_batch // self.world)


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, workers: int = 0,
                rank: int = 0, world: int = 1, pin_memory: bool = False) -> DataLoader:
    """DataLoader over an :class:`EpochSampler`; its generator (worker seeds) is reseeded per epoch by the loop.

    ``batch_size`` is the GLOBAL batch: each of the ``world`` processes (this one is ``rank``) loads
    ``batch_size / world`` samples per step.  The defaults give an evaluation loader: one process, fixed order.
    """
    sampler = EpochSampler(len(ds), batch_size, rank, world, shuffle, seed)
    local = batch_size // world if shuffle else max(1, batch_size // world)
    return DataLoader(ds, batch_size=local, sampler=sampler, num_workers=workers, drop_last=False,
                      pin_memory=pin_memory, generator=torch.Generator(), persistent_workers=False)
