"""The settings of the exemplar LCA decoder: their defaults are written here once.

:class:`LCAParams` holds the LCA dynamics (SPEC Eq. 2); every entry point takes them from it:
:func:`spikevit.lca.encode`, the sharded encoder, the evaluation pipeline, the scikit-learn estimator, the
``spikevit lca`` options and the reproductions.  :class:`LCARunParams` holds a whole ``spikevit lca run`` /
``lca evaluate`` job (features, dictionary, dynamics, decoders); :func:`spikevit.lca.run` takes it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from spikevit.errors import SpikevitError
from spikevit.functional.lca import THRESHOLDS
from spikevit.validation import device_name, finite_float, non_negative_float, non_negative_int, positive_int


def check_tau(tau, name: str = "tau") -> float:
    """The LCA time constant (in steps): finite, >= 1 (Eq. 2 is stable), and small enough that the update
    ``(b - u - ...) / tau`` still moves the potentials in float64."""
    tau = finite_float(tau, name, minimum=1.0)
    if not 1.0 - 1.0 / tau < 1.0:
        raise SpikevitError(f"{name} {tau:g} is too large: 1 - 1/tau rounds to 1 in float64, so the potentials "
                            "never move")
    return tau


@dataclass(frozen=True)
class LCAParams:
    """LCA settings: ``u += (b - u - (G - diag G) a) / tau``, ``a = T_lam(u)``, ``steps`` = K updates.

    lam:       threshold lambda (>= 0)
    tau:       time constant in steps (>= 1)
    steps:     number of updates K (>= 1); the code is a[K]
    rectify:   ``a = max(u - lam, 0)`` (the authors' code) instead of the signed soft threshold
    threshold: "soft" or "hard"
    backend:   "auto" or a name of :data:`spikevit.lca.encode.BACKENDS` (all exact)

    The values are checked when the object is made (a :class:`SpikevitError` naming the field).
    """

    lam: float = 2.0
    tau: float = 100.0
    steps: int = 100
    rectify: bool = True
    threshold: str = "soft"
    backend: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "lam", non_negative_float(self.lam, "lam"))
        object.__setattr__(self, "tau", check_tau(self.tau))
        object.__setattr__(self, "steps", positive_int(self.steps, "steps (number of LCA steps K)"))
        if type(self.rectify).__name__ not in ("bool", "bool_"):        # Python or NumPy bool, nothing truthy
            raise SpikevitError(f"rectify must be True or False, got {self.rectify!r}")
        object.__setattr__(self, "rectify", bool(self.rectify))
        if self.threshold not in THRESHOLDS:
            raise SpikevitError(f"unknown threshold {self.threshold!r}; choose from {THRESHOLDS}")

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`spikevit.lca.encode` (and every function that takes the same ones)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping, **changes) -> LCAParams:
        """The settings named in ``mapping`` (e.g. a reproduction's parameters; other keys are ignored), the
        defaults for the rest, then ``changes``."""
        names = {f.name for f in fields(cls)}
        return cls(**({k: v for k, v in mapping.items() if k in names} | changes))


LCA_DEFAULTS = LCAParams()

DEFAULT_CACHE = str(Path.home() / ".cache" / "spikevit" / "features")
SELECTIONS = ("random", "balanced")


@dataclass(frozen=True)
class LCARunParams:
    """One exemplar-LCA job: backbone features -> exemplar dictionary -> LCA codes -> decoders.

    ``spikevit lca run`` and ``spikevit lca evaluate`` map onto it one to one: each field is the option of the
    same name (``dictionary_size`` is ``--dictionary-size``) with the same default, and ``lca`` holds
    ``--lam --tau --steps --signed --threshold --backend``.

    data:        dataset, data_root (None: the dataset's own location), download (torchvision may download),
                 skip_bad_images (leave out unreadable images instead of stopping)
    features:    backbone, weights ("default", "none" or a local state dict), image_size (None: the
                 backbone's), cache (feature cache folder), batch_size (images per backbone batch),
                 limit_train / limit_test (a seeded random subset of a split), workers (data-loader processes)
    dictionary:  dictionary_size (M; None: every training image), selection ("random" or "balanced"), seed
                 (selection, shallow-NN rows and probes), dictionary_out (also save the fitted dictionary);
                 or dictionary: a saved dictionary file to evaluate instead of fitting one (``lca evaluate``),
                 allow_test_atoms (evaluate even though it holds atoms from the evaluated split)
    dynamics:    lca (:class:`LCAParams`), encode_batch (inputs per LCA batch)
    decoders:    shallow_train_size (training codes of the shallow NN; 0: none), probes (also a cosine k-NN and
                 a logistic regression on the features)
    device:      "auto", "cpu", "cuda", "cuda:1", "mps"

    Values are checked when the object is made (a :class:`SpikevitError` naming the field).
    """

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    skip_bad_images: bool = False
    backbone: str = "pixels"
    weights: str = "default"
    image_size: int | None = None
    cache: str = DEFAULT_CACHE
    batch_size: int = 64
    limit_train: int | None = None
    limit_test: int | None = None
    workers: int = 0
    dictionary_size: int | None = None
    selection: str = "random"
    seed: int = 0
    dictionary_out: str | None = None
    dictionary: str | None = None
    allow_test_atoms: bool = False
    lca: LCAParams = LCA_DEFAULTS
    encode_batch: int = 256
    shallow_train_size: int = 5000
    probes: bool = False
    device: str = "auto"

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("dataset", "backbone", "weights"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SpikevitError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("data_root", "cache", "dictionary_out", "dictionary"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, Path)) or str(value) == "":
                    raise SpikevitError(f"{name} must be a path, got {value!r}")
                put(name, str(value))
        if self.cache is None:
            raise SpikevitError("cache must be a folder path, got None")
        for name in ("download", "skip_bad_images", "allow_test_atoms", "probes"):
            if not isinstance(getattr(self, name), bool):
                raise SpikevitError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("batch_size", "encode_batch"):
            put(name, positive_int(getattr(self, name), name))
        for name in ("image_size", "limit_train", "limit_test", "dictionary_size"):
            if getattr(self, name) is not None:
                put(name, positive_int(getattr(self, name), name))
        for name in ("workers", "seed", "shallow_train_size"):
            put(name, non_negative_int(getattr(self, name), name))
        if self.selection not in SELECTIONS:
            raise SpikevitError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if isinstance(self.lca, Mapping):
            put("lca", LCAParams(**self.lca))
        if not isinstance(self.lca, LCAParams):
            raise SpikevitError(f"lca must be an LCAParams, got {type(self.lca).__name__}")
        put("device", device_name(self.device, "device"))
        if self.dictionary is not None:     # evaluating a saved dictionary: nothing is fitted
            fitted = [n for n in ("dictionary_size", "dictionary_out") if getattr(self, n) is not None]
            fitted += ["selection"] if self.selection != SELECTIONS[0] else []
            if fitted:
                raise SpikevitError(f"{fitted[0]} applies to a fitted dictionary; dictionary "
                                    f"{self.dictionary} is evaluated as saved")
        elif self.allow_test_atoms:
            raise SpikevitError("allow_test_atoms applies to a saved dictionary (the fitted one takes the train "
                                "split only)")

    def config(self) -> dict:
        """The fields as a plain dict (``lca`` nested), as a report records them."""
        return asdict(self)


LCA_RUN_DEFAULTS = LCARunParams()
