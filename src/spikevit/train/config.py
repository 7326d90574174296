"""Training configuration and the hooks a method plugs into the generic loop."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
from torch import nn

from spikevit.errors import require


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`spikevit.train.fit` (the CLI flags map one-to-one onto these).

    ``batch_size`` is the GLOBAL batch (split evenly over DDP processes), so a run gives the same
    optimisation on 1 or N processes.  The learning rate follows a per-step linear warmup over
    ``warmup_epochs`` and then a cosine decay from ``lr`` to ``min_lr`` at the end of ``epochs``.
    Parameters with ``ndim <= 1`` (biases, norm scales, DTS time-step parameters) get no weight decay.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    bf16: bool = False
    seed: int = 0
    # not part of the optimisation (may change between a run and its resumption)
    eval_every: int = 1
    workers: int = 0
    device: str = "auto"

    RESUME_FREE = ("eval_every", "workers", "device")

    def __post_init__(self):
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(0 <= self.min_lr <= self.lr, f"min_lr must lie in [0, lr], got {self.min_lr}")
        require(0 <= self.warmup_epochs <= self.epochs,
                f"warmup_epochs must lie in [0, epochs], got {self.warmup_epochs}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(0 <= self.label_smoothing < 1, f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        require(self.clip_grad is None or self.clip_grad > 0, "clip_grad must be > 0 (or None)")
        require(self.eval_every >= 1, "eval_every must be >= 1")
        require(self.workers >= 0, "workers must be >= 0")
        self.betas = tuple(float(b) for b in self.betas)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def optimisation_dict(self) -> dict:
        """The fields a checkpoint must agree on to be resumed."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUME_FREE}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict]"]
EpochMetrics = Callable[[nn.Module], dict]
ParamGroups = Callable[[nn.Module, TrainConfig], list[dict]]


@dataclass
class TrainHooks:
    """Optional method-specific pieces of the generic loop.

    extra_loss(model, logits, targets) -> loss or (loss, {name: float}): added to the cross-entropy
        (e.g. the DTS mask loss); the dict is averaged over the epoch into the log as ``train_<name>``.
    epoch_metrics(model) -> {name: value}: computed after each epoch (after evaluation) and logged.
    param_groups(model, config) -> [{"params": [...], "weight_decay": .., "lr_scale": ..}]: replaces the
        default grouping (decay on ndim >= 2 weights only); ``lr_scale`` multiplies the scheduled lr.
    ``model`` is always the bare module (never the DistributedDataParallel wrapper).
    """

    extra_loss: ExtraLoss | None = None
    epoch_metrics: EpochMetrics | None = None
    param_groups: ParamGroups | None = None
    extra: dict = field(default_factory=dict)
