"""Exemplar dictionaries: selection, L2-normalised atoms, labels, safe storage, growth."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikevit.errors import SpikevitError
from spikevit.tensorio import load_tensors, save_tensors

KIND = "lca-dictionary"
SELECTIONS = ("random", "balanced")


def normalize_atoms(features: torch.Tensor) -> torch.Tensor:
    """(M, N) feature rows -> (N, M) unit-norm atoms (columns); zero rows are refused."""
    norms = features.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        bad = torch.nonzero(norms.squeeze(1) == 0).squeeze(1)[:5].tolist()
        raise SpikevitError(f"cannot normalise all-zero exemplar feature vectors (rows {bad}...)")
    return (features / norms).T.contiguous()


def select_exemplars(labels: torch.Tensor, size: int, selection: str = "random", seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` exemplars: uniform random, or as equal per class as possible."""
    total = labels.shape[0]
    if selection not in SELECTIONS:
        raise SpikevitError(f"unknown exemplar selection {selection!r}; choose from {SELECTIONS}")
    if size <= 0:
        raise SpikevitError(f"dictionary size must be positive, got {size}")
    if size > total:
        raise SpikevitError(f"dictionary size {size} exceeds the {total} available training features")
    gen = torch.Generator().manual_seed(seed)
    if selection == "random":
        return torch.randperm(total, generator=gen)[:size].sort().values
    # balanced: shuffle, then rank each sample within its class and take the lowest ranks
    perm = torch.randperm(total, generator=gen)
    lab = labels[perm]
    order = torch.argsort(lab, stable=True)
    sorted_lab = lab[order]
    starts = torch.searchsorted(sorted_lab, sorted_lab, right=False)
    rank = torch.empty(total, dtype=torch.long)
    rank[order] = torch.arange(total) - starts
    chosen = perm[torch.argsort(rank * total + torch.arange(total), stable=True)[:size]]
    return chosen.sort().values


@dataclass
class Dictionary:
    """An exemplar dictionary.

    atoms:   (N, M) float32, unit-norm columns phi_i = f(x_i) / ||f(x_i)||
    labels:  (M,) int64 class of each atom
    source:  (M,) int64 index of each exemplar in its training split (-1: unknown)
    meta:    backbone, dataset, feature_dim, num_classes, class_names, selection, seed ...
    """

    atoms: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.atoms.ndim != 2 or self.atoms.shape[1] == 0:
            raise SpikevitError(f"dictionary atoms must be a non-empty (N, M) matrix, got {tuple(self.atoms.shape)}")
        m = self.atoms.shape[1]
        if self.labels.shape != (m,) or self.source.shape != (m,):
            raise SpikevitError(f"dictionary has {m} atoms but {self.labels.shape[0]} labels / "
                                f"{self.source.shape[0]} source indices")
        self.meta.setdefault("num_classes", int(self.labels.max()) + 1)
        self.meta["feature_dim"] = int(self.atoms.shape[0])

    @property
    def size(self) -> int:
        return int(self.atoms.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.atoms.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, size: int | None = None, *,
                      selection: str = "random", seed: int = 0, **meta) -> "Dictionary":
        """Choose ``size`` exemplars (all when None) from (P, N) features and (P,) labels."""
        _check_features(features, labels)
        idx = torch.arange(features.shape[0]) if size is None else select_exemplars(labels, size, selection, seed)
        meta.update(selection=selection, seed=seed)
        meta.setdefault("num_classes", int(labels.max()) + 1)
        return cls(normalize_atoms(features[idx].float()), labels[idx].long(), idx.long(), meta)

    def check_features(self, features: torch.Tensor, backbone: str | None = None) -> None:
        """Refuse features that do not come from this dictionary's backbone / size."""
        own = self.meta.get("backbone")
        if backbone is not None and own is not None and backbone != own:
            raise SpikevitError(f"features come from backbone {backbone!r} but the dictionary was built "
                                f"from {own!r}")
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise SpikevitError(f"features have shape {tuple(features.shape)} but the dictionary expects "
                                f"(B, {self.feature_dim}) from backbone {own!r}")

    def add(self, features: torch.Tensor, labels: torch.Tensor, source: torch.Tensor | None = None,
            class_names: list[str] | None = None) -> "Dictionary":
        """New dictionary with extra exemplars (possibly of new classes) appended.

        Only the added rows are normalised: the cost is O(N * added), the old
        atoms are reused as they are.
        """
        _check_features(features, labels)
        self.check_features(features)
        new_atoms = normalize_atoms(features.float())
        src = torch.full((features.shape[0],), -1, dtype=torch.long) if source is None else source.long()
        meta = dict(self.meta)
        meta["num_classes"] = max(self.num_classes, int(labels.max()) + 1)
        if class_names is not None:
            meta["class_names"] = list(class_names)
        meta["added"] = int(meta.get("added", 0)) + int(features.shape[0])
        return Dictionary(torch.cat([self.atoms, new_atoms], 1), torch.cat([self.labels, labels.long()]),
                          torch.cat([self.source, src]), meta)

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"atoms": self.atoms, "labels": self.labels, "source": self.source},
                            KIND, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "Dictionary":
        tensors, meta = load_tensors(path, KIND, required=("atoms", "labels", "source"))
        atoms = tensors["atoms"]
        if atoms.ndim != 2 or not atoms.is_floating_point() or not torch.isfinite(atoms).all():
            raise SpikevitError(f"{path}: corrupt dictionary (atoms must be a finite (N, M) float matrix)")
        return cls(atoms.float(), tensors["labels"].long(), tensors["source"].long(), meta)


def extend_gramian(gram: torch.Tensor, old_atoms: torch.Tensor, new_atoms: torch.Tensor) -> torch.Tensor:
    """Gramian of [old | new] from the old Gramian: only Phi^T Phi_new is computed.

    Cost 2 N M_new (M_old + M_new) FLOPs instead of 2 N (M_old + M_new)^2.
    """
    cross = old_atoms.T @ new_atoms                                  # (M_old, M_new)
    corner = new_atoms.T @ new_atoms                                 # (M_new, M_new)
    return torch.cat([torch.cat([gram, cross], 1), torch.cat([cross.T, corner], 1)], 0)


def _check_features(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2:
        raise SpikevitError(f"features must be (P, N), got shape {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise SpikevitError("no features given: an empty dictionary cannot be built")
    if labels.shape != (features.shape[0],):
        raise SpikevitError(f"{features.shape[0]} feature rows but labels of shape {tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise SpikevitError("features contain NaN or inf values")
    if labels.min() < 0:
        raise SpikevitError("labels must be non-negative class indices")
