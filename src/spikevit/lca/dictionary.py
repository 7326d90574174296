"""Exemplar dictionaries: selection, L2-normalised atoms, labels, provenance, safe storage, in-place growth."""
from __future__ import annotations

from pathlib import Path

import torch

from spikevit.errors import SpikevitError
from spikevit.tensorio import load_tensors, read_metadata, save_tensors

KIND = "lca-dictionary"
SELECTIONS = ("random", "balanced")
UNIT_NORM_TOL = 1e-3          # a stored atom whose L2 norm differs from 1 by more than this is refused
UNKNOWN = {"dataset": None, "split": None}


def normalize_atoms(features: torch.Tensor) -> torch.Tensor:
    """(M, N) feature rows -> (N, M) unit-norm atoms (columns); zero rows are refused."""
    return _unit_rows(features).T.contiguous()


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """(M, N) feature rows -> (M, N) unit-norm rows; zero rows are refused."""
    norms = features.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        bad = torch.nonzero(norms.squeeze(1) == 0).squeeze(1)[:5].tolist()
        raise SpikevitError(f"cannot normalise all-zero exemplar feature vectors (rows {bad}...)")
    return features / norms


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


class Dictionary:
    """An exemplar dictionary that grows in place.

    atoms:   (N, M) float32, unit-norm columns phi_i = f(x_i) / ||f(x_i)|| (a view of a row buffer
             (capacity, N): adding atoms writes only the new rows, amortised O(N * added))
    labels:  (M,) int64 class of each atom
    source:  (M,) int64 index of each exemplar in its split (-1: unknown)
    origin:  (M,) int64 row of ``meta["origins"]`` ({"dataset", "split"}) each atom came from
    meta:    backbone, dataset, feature_dim, num_classes, class_names, selection, seed, origins ...
    """

    def __init__(self, atoms: torch.Tensor, labels: torch.Tensor, source: torch.Tensor, meta: dict | None = None,
                 origin: torch.Tensor | None = None):
        if not isinstance(atoms, torch.Tensor) or atoms.ndim != 2 or atoms.shape[1] == 0:
            shape = tuple(atoms.shape) if isinstance(atoms, torch.Tensor) else type(atoms).__name__
            raise SpikevitError(f"dictionary atoms must be a non-empty (N, M) matrix, got {shape}")
        m = atoms.shape[1]
        if labels.shape != (m,) or source.shape != (m,):
            raise SpikevitError(f"dictionary has {m} atoms but {labels.shape[0] if labels.ndim else 0} labels / "
                                f"{source.shape[0] if source.ndim else 0} source indices")
        self.meta = dict(meta or {})
        origins = self.meta.get("origins")
        if origin is None:   # one origin for all atoms: the dataset named in meta (split given or unknown)
            self.meta["origins"] = [{"dataset": self.meta.get("dataset"), "split": self.meta.get("split")}]
            origin = torch.zeros(m, dtype=torch.long)
        elif not origins:
            raise SpikevitError("dictionary atoms carry origin indices but meta has no 'origins' table")
        if origin.shape != (m,):
            raise SpikevitError(f"dictionary has {m} atoms but {origin.shape[0] if origin.ndim else 0} origin entries")
        self._rows = atoms.T.float().contiguous()          # (capacity, N) row buffer, rows [:M] used
        self._labels = labels.long().clone()
        self._source = source.long().clone()
        self._origin = origin.long().clone()
        self._m = m
        self._gram: torch.Tensor | None = None             # (capacity, capacity) cached Gramian buffer
        self._gram_m = 0
        self.meta.setdefault("num_classes", int(self._labels.max()) + 1)
        self.meta["feature_dim"] = int(atoms.shape[0])
        self.check_labels()
        if int(self._origin.min()) < 0 or int(self._origin.max()) >= len(self.meta["origins"]):
            raise SpikevitError(f"dictionary origin indices must lie in [0, {len(self.meta['origins'])})")

    # ------------------------------------------------------------------ views
    @property
    def atoms(self) -> torch.Tensor:
        """(N, M) view of the atoms (columns)."""
        return self._rows[:self._m].T

    @property
    def labels(self) -> torch.Tensor:
        return self._labels[:self._m]

    @labels.setter
    def labels(self, value: torch.Tensor) -> None:
        self._labels[:self._m] = value

    @property
    def source(self) -> torch.Tensor:
        return self._source[:self._m]

    @source.setter
    def source(self, value: torch.Tensor) -> None:
        self._source[:self._m] = value

    @property
    def origin(self) -> torch.Tensor:
        return self._origin[:self._m]

    @property
    def size(self) -> int:
        return self._m

    @property
    def capacity(self) -> int:
        return int(self._rows.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self._rows.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, size: int | None = None, *,
                      selection: str = "random", seed: int = 0, split: str | None = "train",
                      index: torch.Tensor | None = None, **meta) -> "Dictionary":
        """Choose ``size`` exemplars (all when None) from (P, N) features and (P,) labels.

        ``index`` (P,) maps feature rows to their index in ``split`` of ``meta["dataset"]``
        (default: the row number itself); every atom records (dataset, split, index).
        """
        _check_features(features, labels)
        idx = torch.arange(features.shape[0]) if size is None else select_exemplars(labels, size, selection, seed)
        meta.update(selection=selection, seed=seed, split=split)
        meta.setdefault("num_classes", int(labels.max()) + 1)
        src = idx if index is None else index[idx]
        return cls(_unit_rows(features[idx].float()).T, labels[idx].long(), src.long(), meta)

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
            class_names: list[str] | None = None, *, dataset: str | None = None,
            split: str | None = None) -> "Dictionary":
        """Append exemplars (possibly of new classes) in place and return ``self``.

        Only the added rows are normalised and written: the atom buffer grows
        geometrically (capacity doubles when full), so the cost is amortised
        O(N * added), independent of the current size M.  A cached Gramian
        (:meth:`gramian`) is extended with :func:`extend_gramian` (O(N M added)).
        ``dataset`` / ``split`` record where the new atoms come from (default:
        the dictionary's own dataset, split unknown).
        """
        _check_features(features, labels)
        self.check_features(features)
        p = features.shape[0]
        new_rows = _unit_rows(features.float())
        src = torch.full((p,), -1, dtype=torch.long) if source is None else torch.as_tensor(source).long()
        if src.shape != (p,):
            raise SpikevitError(f"{p} added exemplars but {tuple(src.shape)} source indices")
        entry = {"dataset": dataset if dataset is not None else self.meta.get("dataset"), "split": split}
        origins = self.meta["origins"]
        if entry not in origins:
            origins.append(entry)
        code = origins.index(entry)
        num_classes = max(self.num_classes, int(labels.max()) + 1)
        if class_names is not None and len(class_names) < num_classes:
            raise SpikevitError(f"{len(class_names)} class names given for {num_classes} classes")
        m0, m1 = self._m, self._m + p
        old_rows = self._rows[:m0]
        self._reserve(m1)
        self._rows[m0:m1] = new_rows
        self._labels[m0:m1] = labels.long()
        self._source[m0:m1] = src
        self._origin[m0:m1] = code
        self._m = m1
        if self._gram is not None and self._gram_m == m0:
            self._grow_gram(m1)
            extend_gramian(self._gram[:m0, :m0], old_rows.T, new_rows.T, out=self._gram)
            self._gram_m = m1
        self.meta["num_classes"] = num_classes
        if class_names is not None:
            self.meta["class_names"] = list(class_names)
        self.meta["added"] = int(self.meta.get("added", 0)) + p
        return self

    def _reserve(self, m: int) -> None:
        """Make room for ``m`` atoms, doubling the capacity when it runs out."""
        cap = self.capacity
        if m <= cap:
            return
        new_cap = max(m, 2 * cap)
        rows = self._rows.new_empty(new_cap, self.feature_dim)
        rows[:self._m] = self._rows[:self._m]
        self._rows = rows
        for name in ("_labels", "_source", "_origin"):
            old = getattr(self, name)
            buf = old.new_full((new_cap,), -1)
            buf[:self._m] = old[:self._m]
            setattr(self, name, buf)

    def _grow_gram(self, m: int) -> None:
        cap = self._gram.shape[0]
        if m <= cap:
            return
        new_cap = max(m, 2 * cap)
        buf = self._gram.new_empty(new_cap, new_cap)
        buf[:self._gram_m, :self._gram_m] = self._gram[:self._gram_m, :self._gram_m]
        self._gram = buf

    def gramian(self) -> torch.Tensor:
        """(M, M) Gramian phi^T phi, computed once and then extended as atoms are added."""
        if self._gram is None or self._gram_m != self._m:
            a = self.atoms
            self._gram = a.T @ a
            self._gram_m = self._m
        return self._gram[:self._m, :self._m]

    # ------------------------------------------------------------------ checks
    def check_labels(self) -> None:
        """Refuse labels outside [0, num_classes) and a class-name list shorter than the classes."""
        labels, c = self.labels, self.num_classes
        bad = torch.nonzero((labels < 0) | (labels >= c)).squeeze(1)
        if bad.numel():
            i = int(bad[0])
            raise SpikevitError(f"dictionary atom {i} has label {int(labels[i])}, outside its {c} classes "
                                f"(0..{c - 1}); {bad.numel()} atom(s) affected")
        names = self.meta.get("class_names")
        if names and len(names) < c:
            raise SpikevitError(f"dictionary has {c} classes but only {len(names)} class names")

    def check_atoms(self, unit_norm: bool = True) -> None:
        """Refuse non-finite or all-zero atoms and, with ``unit_norm``, atoms whose L2 norm is not 1."""
        rows = self._rows[:self._m]
        if not torch.isfinite(rows).all():
            raise SpikevitError("dictionary atoms contain NaN or inf values")
        norms = rows.norm(dim=1)
        zero = torch.nonzero(norms == 0).squeeze(1)
        if zero.numel():
            raise SpikevitError(f"dictionary has {zero.numel()} all-zero atom(s) (first: atom {int(zero[0])}); "
                                "they can never be active")
        if unit_norm:
            off = torch.nonzero((norms - 1).abs() > UNIT_NORM_TOL).squeeze(1)
            if off.numel():
                i = int(off[0])
                raise SpikevitError(f"dictionary atoms must have unit L2 norm; {off.numel()} do not (atom {i} has "
                                    f"norm {float(norms[i]):.4g}): the file was edited or is corrupt")

    # ------------------------------------------------------------------ provenance
    def atoms_from(self, dataset: str | None, split: str) -> int:
        """How many atoms come from ``split`` of ``dataset`` (atoms of unknown split count too)."""
        return count_atoms_from(self.meta["origins"], self.origin, dataset, split)

    def check_disjoint(self, dataset: str | None, split: str, allow: bool = False,
                       flag: str = "--allow-test-atoms") -> int:
        """Refuse to evaluate on a split that contributed atoms (or whose atoms' split is unknown).

        Returns the number of such atoms (0 unless ``allow``).
        """
        return check_split_disjoint(self.meta["origins"], self.origin, dataset, split, allow, flag)

    def provenance(self) -> list[dict]:
        """One row per origin: dataset, split, atom count and index range."""
        out = []
        for i, o in enumerate(self.meta["origins"]):
            mask = self.origin == i
            if mask.any():
                src = self.source[mask]
                out.append({"dataset": o.get("dataset"), "split": o.get("split"), "atoms": int(mask.sum()),
                            "index_min": int(src.min()), "index_max": int(src.max())})
        return out

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (the format has a leading header, so the file is rewritten, not appended)."""
        return save_tensors(path, {"atoms": self.atoms.contiguous(), "labels": self.labels, "source": self.source,
                                   "origin": self.origin}, KIND, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "Dictionary":
        """Load and check a dictionary file: finite unit-norm atoms, labels within its classes."""
        tensors, meta = load_tensors(path, KIND, required=("atoms", "labels", "source"))
        atoms = tensors["atoms"]
        if atoms.ndim != 2 or not atoms.is_floating_point() or not torch.isfinite(atoms).all():
            raise SpikevitError(f"{path}: corrupt dictionary (atoms must be a finite (N, M) float matrix)")
        origin = tensors.get("origin")
        if origin is None:
            meta["origins"], origin = _legacy_origins(meta, atoms.shape[1])
        try:
            d = cls(atoms.float(), tensors["labels"].long(), tensors["source"].long(), meta, origin.long())
            d.check_atoms(unit_norm=meta.get("atom_norm", "unit") == "unit")
        except SpikevitError as exc:
            raise SpikevitError(f"{path}: {exc}") from None
        return d


def count_atoms_from(origins: list[dict], origin: torch.Tensor, dataset: str | None, split: str) -> int:
    """Atoms whose origin (a row of ``origins``) is ``split`` of ``dataset``; unknown splits / datasets count."""
    hits = [i for i, o in enumerate(origins) if o.get("split") in (split, None) and o.get("dataset") in (dataset, None)]
    return int(torch.isin(origin, torch.tensor(hits, dtype=torch.long)).sum()) if hits else 0


def check_split_disjoint(origins: list[dict], origin: torch.Tensor, dataset: str | None, split: str,
                         allow: bool = False, flag: str = "--allow-test-atoms") -> int:
    """Refuse to evaluate on a split that contributed atoms (or whose atoms' split is unknown) unless ``allow``;
    return the number of such atoms."""
    n = count_atoms_from(origins, origin, dataset, split)
    if n and not allow:
        unknown = any(o.get("split") is None for o in origins)
        raise SpikevitError(
            f"the dictionary holds {n} atom(s) taken from the {dataset} {split} split"
            + (" or from a split it does not record" if unknown else "")
            + f"; evaluating on that split measures memorisation, not accuracy (pass {flag} to do it anyway)")
    return n


def _legacy_origins(meta: dict, m: int) -> tuple[list[dict], torch.Tensor]:
    """A file written before provenance: the fitted atoms came from the train split, added ones are unknown."""
    added = int(meta.get("added", 0))
    origins = [{"dataset": meta.get("dataset"), "split": meta.get("split", "train")},
               {"dataset": meta.get("dataset"), "split": None}]
    return origins, torch.cat([torch.zeros(m - added, dtype=torch.long), torch.ones(added, dtype=torch.long)])


def read_provenance(path: str | Path) -> tuple[list[dict], torch.Tensor]:
    """(origins table, (M,) origin row of every atom) of a dictionary file, without reading its atoms."""
    from safetensors import safe_open

    meta = read_metadata(path, KIND)
    with safe_open(str(path), framework="pt") as fh:
        if "origin" in fh.keys():
            return meta["origins"], fh.get_tensor("origin").long()
        return _legacy_origins(meta, fh.get_slice("atoms").get_shape()[1])


def extend_gramian(gram: torch.Tensor, old_atoms: torch.Tensor, new_atoms: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Gramian of [old | new] (M_old + M_new)^2 from the old one: only Phi^T Phi_new is computed.

    gram: (M_old, M_old); old_atoms: (N, M_old); new_atoms: (N, M_new).
    Cost 2 N M_new (M_old + M_new) FLOPs instead of 2 N (M_old + M_new)^2.
    ``out``: a buffer of at least (M, M) whose top-left block already holds ``gram``;
    only the new rows and columns are written (no copy of the old block).
    """
    m0, m1 = gram.shape[0], gram.shape[0] + new_atoms.shape[1]
    cross = old_atoms.T @ new_atoms                                  # (M_old, M_new)
    corner = new_atoms.T @ new_atoms                                 # (M_new, M_new)
    if out is None:
        return torch.cat([torch.cat([gram, cross], 1), torch.cat([cross.T, corner], 1)], 0)
    out[:m0, m0:m1] = cross
    out[m0:m1, :m0] = cross.T
    out[m0:m1, m0:m1] = corner
    return out[:m1, :m1]


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
