"""Parameters of SIT-conversion: the settings of a conversion run (:class:`ConversionParams`, defaults
written once; ``spikevit convert run`` maps onto it flag by flag) and, handed on from
:mod:`spikevit.nn.fewspike_params` (the neurons' own floor, so that :class:`~spikevit.nn.SpikingSoftmax`
can load its defaults), the shipped and user-fitted few-spike neuron parameters."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from spikevit.errors import require
from spikevit.nn.fewspike_params import (KIND, PACKAGE_PARAMS, _package_params, available, few_spike_parameters,
                                         read_params, si_exp_parameters, store_fit)
from spikevit.nn.spike_coding import CODINGS
from spikevit.validation import device_name, finite_float, non_negative_int, positive_int

LEVELS = ("softmax", "attention", "all")
DEFAULT_CODING = "rate"
SQUEEZES = (None, "sigmoid", "tanh")
ACTIVATION_FITS = ("range", "polish", "shipped")


def check_si_exp_steps(steps: int) -> int:
    """``steps`` (K of the SI-exp neurons) must have a shipped fit."""
    require(steps in available("exp"), f"steps={steps}: no shipped SI-exp neuron (available K: {available('exp')})")
    return steps


class ParamsBase:
    """What the parameter dataclasses of conversion share: ``to_dict()`` and ``default(name)`` (the CLI
    reads its option defaults from there, so that a default is written once)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def default(cls, name: str):
        """The default of field ``name``."""
        return next(f for f in fields(cls) if f.name == name).default


@dataclass(frozen=True)
class ConversionParams(ParamsBase):
    """One SIT-conversion run (:func:`spikevit.conversion.run`): convert ``model`` block by block at level
    ``spiking`` and measure it on ``dataset``'s test split.

    model / checkpoint: see :func:`~spikevit.conversion.resolve_model` (registry name with a spikevit model
        file, ``torchvision:NAME`` / ``timm:NAME`` with a state dict, or ``file:PATH``)
    steps:        K of the SI-exp neurons (a shipped fit: 4..16); default time steps of the other neurons
    spiking:      ``"softmax"``, ``"attention"`` or ``"all"`` (see :func:`~spikevit.conversion.convert`)
    coding:       ``"rate"`` (IF pairs) or ``"fewspike"``; ``coding_steps``: their T / K (default ``steps``)
    squeeze:      None, ``"sigmoid"`` or ``"tanh"`` before the spiking softmax
    activations:  activations converted to few-spike neurons ("gelu,silu", "all"; implied by "all")
    activation_fit: how the few-spike activations use the calibration: ``"range"`` (fitted to the inputs each
                  layer gets), ``"polish"`` (also tunes their thresholds; slower) or ``"shipped"`` (as fitted on
                  the default domain)
    layer_by_layer: also evaluate the first 1..B-1 blocks converted (paper Tables 2-4)
    test_subset:  evaluate on a seeded class-balanced subset of this size (None: the whole test split)
    calibration_samples: seeded training images that set the coding neurons' thresholds
    energy_batches: test batches profiled for the energy tables; ``energy_model`` / ``e_mac`` / ``e_ac``
    sweep_steps:  K values of the spiking-softmax error sweep (empty: no sweep)
    skip_bad_images: decode every image up front and leave out the unreadable ones (else: stop at the first)
    json:         write the report here (JSON + markdown + CSVs + plots); None: only return it
    neurons:      a file of spiking-neuron parameters (``spikevit convert finetune``'s ``neurons.safetensors``,
                  :func:`spikevit.conversion.qcfs.save_neurons`): learned thresholds instead of calibrated ones

    Values are checked when the object is made (a :class:`~spikevit.errors.SpikevitError` naming the field).
    """

    model: str
    checkpoint: str | None = None
    dataset: str = "cifar10"
    data_root: str | None = None
    steps: int = 12
    spiking: str = "softmax"
    coding: str = DEFAULT_CODING
    coding_steps: int | None = None
    squeeze: str | None = None
    activations: tuple[str, ...] = ()
    activation_steps: int | None = None
    activation_fit: str = "range"
    norm_steps: int | None = None
    layer_by_layer: bool = True
    batch_size: int = 250
    test_subset: int | None = None
    img_size: int | None = None
    workers: int = 0
    calibration_samples: int = 256
    energy_batches: int = 2
    energy_model: str = "sit45nm"
    e_mac: float | None = None
    e_ac: float | None = None
    sweep_steps: tuple[int, ...] = tuple(range(4, 17))
    seed: int = 0
    device: str = "auto"
    json: str | None = None
    download: bool = False
    skip_bad_images: bool = False
    neurons: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        require(isinstance(self.model, str) and self.model, f"model must be a non-empty name, got {self.model!r}")
        require(self.spiking in LEVELS, f"spiking={self.spiking!r}: choose from {list(LEVELS)}")
        require(self.coding in CODINGS, f"coding={self.coding!r}: choose from {list(CODINGS)}")
        require(self.activation_fit in ACTIVATION_FITS,
                f"activation_fit={self.activation_fit!r}: choose from {list(ACTIVATION_FITS)}")
        require(self.squeeze in SQUEEZES, f"squeeze={self.squeeze!r}: choose from {list(SQUEEZES)}")
        for name in ("steps", "batch_size", "calibration_samples", "energy_batches"):
            put(name, positive_int(getattr(self, name), name))
        for name in ("coding_steps", "activation_steps", "norm_steps", "test_subset", "img_size"):
            if getattr(self, name) is not None:
                put(name, positive_int(getattr(self, name), name))
        put("workers", non_negative_int(self.workers, "workers"))
        put("seed", non_negative_int(self.seed, "seed"))
        for name in ("e_mac", "e_ac"):
            if getattr(self, name) is not None:
                put(name, finite_float(getattr(self, name), name, minimum=0.0, strictly=True))
        put("device", device_name(self.device, "device"))
        if isinstance(self.activations, str):
            put("activations", tuple(a for a in self.activations.split(",") if a))
        put("activations", tuple(self.activations))
        put("sweep_steps", tuple(positive_int(k, "sweep_steps") for k in self.sweep_steps))
        check_si_exp_steps(self.steps)


__all__ = [
    "DEFAULT_CODING",
    "KIND",
    "LEVELS",
    "PACKAGE_PARAMS",
    "ConversionParams",
    "_package_params",
    "available",
    "few_spike_parameters",
    "read_params",
    "si_exp_parameters",
    "store_fit",
]
