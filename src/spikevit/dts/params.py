"""The settings of the DTS method, written once: what one run is (:class:`DTSSpec`), what ``spikevit dts
train`` needs (:class:`DTSRunParams`) and what ``spikevit dts study`` needs (:class:`StudyParams`).

The library entry points :func:`spikevit.dts.run` and :func:`spikevit.dts.run_study` take these objects; the
``spikevit dts`` options map onto their fields one to one and read their defaults from here.  Every value
is checked when the object is made (a :class:`~spikevit.errors.SpikevitError` naming the field).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from spikevit.dts.loss import DEFAULT_MASK_GROUPS, MASK_GROUPS, parse_groups
from spikevit.errors import SpikevitError, require
from spikevit.functional.dts import default_init_steps
from spikevit.models.spikformer import DEFAULT_GROUPING, GROUPINGS
from spikevit.train import TrainConfig
from spikevit.validation import finite_float, non_negative_float, non_negative_int, positive_int

LOSSES = ("ce", "tet")
BASELINES = ("tet", "hoyer")  # the DTS paper's Table II methods that are losses on the same Spikformer


def _put(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def field_default(cls, name: str):
    """The default of field ``name`` of dataclass ``cls`` (the CLI reads its option defaults from here)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise SpikevitError(f"{cls.__name__}.{name} has no default")
    raise SpikevitError(f"{cls.__name__} has no field {name!r}")


def _optional(value, check, name: str):
    return None if value is None else check(value, name)


def _name(value, name: str) -> str:
    require(isinstance(value, str) and value.strip() != "", f"{name} must be a non-empty name, got {value!r}")
    return value


def _model_args(value, name: str = "model_args") -> dict:
    require(isinstance(value, dict) and all(isinstance(k, str) for k in value),
            f"{name} must be a dict of Spikformer arguments, got {value!r}")
    return dict(value)


@dataclass(frozen=True)
class DTSSpec:
    """What distinguishes one DTS / fixed-T run (stored in the checkpoint; a resumed run must match).

    arch:        Spikformer variant of the model registry (``spikformer-N-D``)
    tmax:        maximum time steps (the fixed T when ``dts=False``)
    dts:         DTSS gates on every LIF layer (False: plain Spikformer at fixed T = tmax)
    init_steps:  initial kept steps of every gate (None: :func:`~spikevit.functional.dts.default_init_steps`,
                 ``max(1, tmax // 2)``; a fixed-T run keeps all ``tmax``)
    min_steps:   steps every gated layer keeps at least
    lambda_m:    weight of the mask loss ``lambda_m * sum_{groups} sum_t TM`` (DTS-SNN Eq. 8)
    mask_groups: the groups in the mask loss (``"qkv,mlp"``, ``"all"``, ``"none"`` or a tuple)
    model_args:  extra Spikformer arguments (``{"dim": 32}``)
    grouping:    which LIF layers form the groups (``"paper"``, DTS-SNN Eq. 7; ``"feeds"``, see
                 :mod:`spikevit.models.spikformer`)
    loss:        ``"ce"`` (cross-entropy of the step-averaged logits) or ``"tet"`` (Table II baseline: the
                 TET loss with weight ``tet_lambda`` and target ``tet_phi``)
    hoyer_lambda: > 0 adds the Hoyer regulariser of every LIF layer's clipped membrane potential (Table II)
    """

    arch: str = "spikformer-4-384"
    tmax: int = 4
    dts: bool = True
    init_steps: int | None = None
    min_steps: int = 1
    lambda_m: float = 1e-6
    mask_groups: tuple[str, ...] = DEFAULT_MASK_GROUPS
    model_args: dict = field(default_factory=dict)
    grouping: str = DEFAULT_GROUPING
    loss: str = "ce"
    tet_lambda: float = 1e-3
    tet_phi: float = 1.0
    hoyer_lambda: float = 0.0

    def __post_init__(self):
        _name(self.arch, "arch")
        _put(self, "tmax", positive_int(self.tmax, "tmax"))
        require(isinstance(self.dts, bool), f"dts must be True or False, got {self.dts!r}")
        _put(self, "min_steps", non_negative_int(self.min_steps, "min_steps"))
        if self.init_steps is None:
            _put(self, "init_steps", default_init_steps(self.tmax) if self.dts else self.tmax)
        _put(self, "init_steps", non_negative_int(self.init_steps, "init_steps"))
        if self.dts:
            require(self.init_steps <= self.tmax, f"init_steps must lie in [0, tmax={self.tmax}], got {self.init_steps}")
            require(self.min_steps <= self.tmax, f"min_steps must lie in [0, tmax={self.tmax}], got {self.min_steps}")
        _put(self, "lambda_m", non_negative_float(self.lambda_m, "lambda_m"))
        try:
            _put(self, "mask_groups", parse_groups(self.mask_groups))
        except SpikevitError as exc:
            raise SpikevitError(f"mask_groups: {exc}") from None
        _put(self, "model_args", _model_args(self.model_args))
        require(self.grouping in GROUPINGS, f"grouping: unknown layer grouping {self.grouping!r}; choose from "
                                            f"{sorted(GROUPINGS)}")
        require(self.loss in LOSSES, f"loss: unknown loss {self.loss!r}; choose from {list(LOSSES)}")
        _put(self, "tet_lambda", finite_float(self.tet_lambda, "tet_lambda", minimum=0.0, maximum=1.0))
        _put(self, "tet_phi", finite_float(self.tet_phi, "tet_phi"))
        _put(self, "hoyer_lambda", non_negative_float(self.hoyer_lambda, "hoyer_lambda"))

    def model_kwargs(self) -> dict:
        kw = {"tmax": self.tmax, "dts": self.dts, "grouping": self.grouping, **self.model_args}
        if self.dts:
            kw.update(init_steps=self.init_steps, min_steps=self.min_steps)
        return kw

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mask_groups"] = list(self.mask_groups)
        return d


DTS_DEFAULTS = DTSSpec()
# the training budgets of the two commands: ``dts train`` the paper's CIFAR recipe (AdamW lr 4e-3, batch 256,
# 300 epochs), ``dts study`` a CPU-sized study; every other optimisation setting is TrainConfig's default
DTS_TRAIN_DEFAULTS = TrainConfig(epochs=300, batch_size=256, lr=4e-3)
STUDY_TRAIN_DEFAULTS = TrainConfig(epochs=3, batch_size=64, lr=4e-3)


def _train_config(value, default: TrainConfig) -> TrainConfig:
    if isinstance(value, dict):
        value = replace(default, **value)
    require(isinstance(value, TrainConfig), f"train must be a TrainConfig (or a dict of its fields), got "
                                            f"{type(value).__name__}")
    return value


def _data_fields(p) -> None:
    """The data settings shared by :class:`DTSRunParams` and :class:`StudyParams`."""
    _name(p.dataset, "dataset")
    for name in ("train_subset", "test_subset", "img_size", "eval_batches"):
        _put(p, name, _optional(getattr(p, name), positive_int, name))
    for name in ("augment", "download", "skip_bad_images"):
        require(isinstance(getattr(p, name), bool), f"{name} must be True or False, got {getattr(p, name)!r}")
    _put(p, "data_root", None if p.data_root is None else str(p.data_root))
    _put(p, "json", None if p.json is None else str(p.json))
    require(p.out is not None and str(p.out).strip() != "", f"out (the run directory) is required, got {p.out!r}")
    _put(p, "out", str(p.out))


@dataclass(frozen=True)
class DTSRunParams:
    """One ``spikevit dts train`` run (:func:`spikevit.dts.run`): train ``spec`` with ``train`` on ``dataset``,
    then measure it (accuracy, T_l, T_avg, spiking activity, SOPs, energy) on the test split.

    out:           run directory (checkpoints, ``log.json``, ``model.safetensors``); an interrupted run
                   resumes from it when ``resume``
    spec:          the model and its losses (:class:`DTSSpec`)
    train:         optimisation (:class:`~spikevit.train.TrainConfig`, default :data:`DTS_TRAIN_DEFAULTS`;
                   a dict of its fields overrides those defaults)
    dataset / data_root / download / skip_bad_images: see :func:`spikevit.train.build_datasets`
    train_subset / test_subset: seeded class-balanced subsets (None: the whole split)
    img_size:      override the dataset's image size; ``augment``: training augmentation
    eval_batches:  limit the final measurement to N test batches
    json:          the report (None: ``<out>/report.json``)
    """

    out: str
    spec: DTSSpec = field(default_factory=DTSSpec)
    train: TrainConfig = field(default_factory=lambda: replace(DTS_TRAIN_DEFAULTS))
    dataset: str = "cifar10"
    data_root: str | None = None
    download: bool = False
    skip_bad_images: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    img_size: int | None = None
    augment: bool = True
    resume: bool = True
    eval_batches: int | None = None
    json: str | None = None

    def __post_init__(self):
        require(isinstance(self.spec, DTSSpec), f"spec must be a DTSSpec, got {type(self.spec).__name__}")
        _put(self, "train", _train_config(self.train, DTS_TRAIN_DEFAULTS))
        require(isinstance(self.resume, bool), f"resume must be True or False, got {self.resume!r}")
        _data_fields(self)

    @property
    def report_path(self) -> Path:
        return Path(self.json) if self.json else Path(self.out) / "report.json"

    def data_info(self) -> dict:
        """Data settings stored with the run (a resumed run must use the same ones)."""
        return {"dataset": self.dataset, "train_subset": self.train_subset, "test_subset": self.test_subset,
                "img_size": self.img_size, "augment": self.augment}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(spec=self.spec.to_dict(), train=self.train.to_dict())
        return d


def parse_baselines(spec: str | list[str] | tuple[str, ...] | None) -> tuple[tuple[str, int], ...]:
    """``"tet:2,hoyer:2"`` (or a list of ``"tet:2"`` items) -> ``(("tet", 2), ("hoyer", 2))``: method and fixed T."""
    if not spec:
        return ()
    items = [i.strip() for i in spec.split(",")] if isinstance(spec, str) else [str(i).strip() for i in spec]
    out = []
    for item in filter(None, items):
        method, sep, t = item.partition(":")
        method = method.strip().lower()
        if method not in BASELINES or not sep or not t.strip().isdigit() or int(t) < 1:
            raise SpikevitError(f"baselines expects METHOD:T items with METHOD in {list(BASELINES)} and T >= 1, "
                                f"got {item!r}")
        out.append((method, int(t)))
    return tuple(out)


def _split(value, sep: str) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(sep) if v.strip()]
    return list(value)


def int_list(value, name: str) -> tuple[int, ...]:
    """``"1,2,4"`` (or a sequence) -> ``(1, 2, 4)``, each an integer >= 1."""
    return tuple(positive_int(v, name) for v in _split(value, ","))


def float_list(value, name: str) -> tuple[float, ...]:
    """``"1e-4,1e-2"`` (or a sequence) -> ``(1e-4, 1e-2)``, each a finite number >= 0."""
    return tuple(non_negative_float(v, name) for v in _split(value, ","))


def grouping_list(value, name: str = "groupings") -> tuple[str, ...]:
    """``"qkv+mlp;all"`` (or a sequence) -> ``("qkv+mlp", "all")``, each a mask-loss grouping."""
    out = tuple(_split(value, ";"))
    for g in out:
        try:
            parse_groups(g)
        except SpikevitError as exc:
            raise SpikevitError(f"{name} holds a bad grouping {g!r}: {exc}") from None
    return out


def baseline_list(value, name: str = "baselines") -> tuple[str, ...]:
    """``"tet:2,hoyer:2"`` (or a sequence) -> ``("tet:2", "hoyer:2")``, each a valid Table II baseline."""
    return tuple(f"{m}:{t}" for m, t in parse_baselines(_split(value, ",")))


def name_list(value, name: str) -> tuple[str, ...] | None:
    """``"a,b"`` (or a sequence, or None) -> ``("a", "b")`` / None; a given list names at least one."""
    if value is None:
        return None
    out = tuple(_name(v, name) for v in _split(value, ","))
    require(len(out) > 0, f"{name} must name at least one run, got {value!r}")
    return out


@dataclass(frozen=True)
class StudyParams:
    """One ``spikevit dts study`` (:func:`spikevit.dts.run_study`): fixed-T baselines, Table II baselines and
    DTS runs over ``lambdas`` x ``groupings``, all trained with the same budget ``train``, measured, reported.

    out:        the study folder: one resumable run directory per run (finished runs are skipped)
    arch / tmax / init_steps / min_steps / model_args / grouping: the runs' model (see :class:`DTSSpec`)
    fixed_t:    T of the fixed-T Spikformer baselines
    lambdas:    lambda_m of the DTS runs; ``groupings``: their mask-loss groupings (``"qkv+mlp"``, ``"all"``)
    nomask:     also a DTS run without mask loss
    baselines:  Table II baselines, ``("tet:2", "hoyer:2")``: fixed-T Spikformers trained with the TET loss
                (``tet_lambda``, ``tet_phi``) / the Hoyer regulariser (``hoyer_lambda``)
    train:      optimisation (default :data:`STUDY_TRAIN_DEFAULTS`; a dict of fields overrides them)
    runs:       train / measure only these runs (a study split over processes); None: all
    resume:     resume unfinished runs and skip finished ones (False: train the selected runs afresh)
    report:     write the report (to ``json``) over every finished run; ``report_only``: train nothing
    data_seed:  seed of the train / test subsets (None: ``train.seed``), fixed across seed replicates
    replicates: ``{label: study folder}`` of the same runs trained with other seeds, reported beside this one
    fig2_run:   the run whose LIF inputs are plotted for Fig. 2 (None: the fixed-T run with the largest T)
    energy_model / eval_batches: the measurement (energy constants; a limit on the test batches)
    """

    out: str
    arch: str = "spikformer-1-64"
    tmax: int = DTS_DEFAULTS.tmax
    init_steps: int | None = None
    min_steps: int = DTS_DEFAULTS.min_steps
    fixed_t: tuple[int, ...] = (1, 2, 4)
    lambdas: tuple[float, ...] = (1e-4, 1e-2)
    groupings: tuple[str, ...] = ("qkv+mlp", "all")
    nomask: bool = True
    baselines: tuple[str, ...] = ()
    model_args: dict = field(default_factory=dict)
    grouping: str = DTS_DEFAULTS.grouping
    tet_lambda: float = DTS_DEFAULTS.tet_lambda
    tet_phi: float = DTS_DEFAULTS.tet_phi
    hoyer_lambda: float = 1e-8   # the Hoyer baseline runs (Datta et al.'s code default)
    train: TrainConfig = field(default_factory=lambda: replace(STUDY_TRAIN_DEFAULTS))
    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False
    skip_bad_images: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    img_size: int | None = None
    augment: bool = True
    runs: tuple[str, ...] | None = None
    resume: bool = True
    report: bool = True
    report_only: bool = False
    eval_batches: int | None = None
    energy_model: str = "dts45nm"
    data_seed: int | None = None
    replicates: dict = field(default_factory=dict)
    fig2_run: str | None = None
    json: str | None = "results/dts/study.json"

    def __post_init__(self):
        _name(self.arch, "arch")
        _put(self, "tmax", positive_int(self.tmax, "tmax"))
        _put(self, "init_steps", _optional(self.init_steps, non_negative_int, "init_steps"))
        require(self.init_steps is None or self.init_steps <= self.tmax,
                f"init_steps must lie in [0, tmax={self.tmax}], got {self.init_steps}")
        _put(self, "min_steps", non_negative_int(self.min_steps, "min_steps"))
        _put(self, "fixed_t", int_list(self.fixed_t, "fixed_t"))
        _put(self, "lambdas", float_list(self.lambdas, "lambdas"))
        _put(self, "groupings", grouping_list(self.groupings))
        _put(self, "baselines", baseline_list(self.baselines))
        _put(self, "model_args", _model_args(self.model_args))
        require(self.grouping in GROUPINGS, f"grouping: unknown layer grouping {self.grouping!r}; choose from "
                                            f"{sorted(GROUPINGS)}")
        _put(self, "tet_lambda", finite_float(self.tet_lambda, "tet_lambda", minimum=0.0, maximum=1.0))
        _put(self, "tet_phi", finite_float(self.tet_phi, "tet_phi"))
        _put(self, "hoyer_lambda", non_negative_float(self.hoyer_lambda, "hoyer_lambda"))
        require(self.hoyer_lambda > 0 or not any(b.startswith("hoyer") for b in self.baselines),
                "hoyer_lambda must be > 0 for the hoyer baseline")
        for name in ("nomask", "resume", "report", "report_only"):
            require(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}")
        _put(self, "train", _train_config(self.train, STUDY_TRAIN_DEFAULTS))
        _put(self, "runs", name_list(self.runs, "runs"))
        _put(self, "data_seed", _optional(self.data_seed, non_negative_int, "data_seed"))
        _name(self.energy_model, "energy_model")
        _put(self, "fig2_run", None if self.fig2_run is None else _name(self.fig2_run, "fig2_run"))
        require(isinstance(self.replicates, dict), f"replicates must be a dict {{label: study folder}}, got "
                                                   f"{self.replicates!r}")
        reps = {}
        for label, folder in self.replicates.items():
            require(isinstance(label, str) and label.strip() and str(folder).strip(),
                    f"replicates: expected {{label: study folder}}, got {label!r}: {folder!r}")
            reps[label.strip()] = str(folder).strip()
        _put(self, "replicates", reps)
        _data_fields(self)
        require(not self.report or self.json is not None, "json (the study report) is required when report is True")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["train"] = self.train.to_dict()
        return d


__all__ = [
    "BASELINES", "DTS_DEFAULTS", "DTS_TRAIN_DEFAULTS", "LOSSES", "MASK_GROUPS", "STUDY_TRAIN_DEFAULTS",
    "DTSRunParams", "DTSSpec", "StudyParams", "baseline_list", "field_default", "float_list", "grouping_list",
    "int_list", "name_list", "parse_baselines"
]
