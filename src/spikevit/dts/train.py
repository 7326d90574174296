"""Training a (DTS) Spikformer with the generic trainer: model + mask-loss hook + per-epoch T_l metrics."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from spikevit.dts.loss import DEFAULT_MASK_GROUPS, gated_layers, mask_steps, parse_groups
from spikevit.errors import require
from spikevit.functional.dts import average_time_steps
from spikevit.train import TrainConfig, TrainHooks, build_model, fit


@dataclass
class DTSSpec:
    """What distinguishes one DTS / fixed-T run (stored in the checkpoint; a resumed run must match).

    dts=False: plain Spikformer at fixed T = tmax.  dts=True: DTSS gates starting at ``init_steps``
    (default tmax/2), mask loss ``lambda_m * sum_{groups} sum_t TM``.
    """

    arch: str = "spikformer-4-384"
    tmax: int = 4
    dts: bool = True
    init_steps: int | None = None
    min_steps: int = 1
    lambda_m: float = 1e-6
    mask_groups: tuple[str, ...] = DEFAULT_MASK_GROUPS
    model_args: dict = field(default_factory=dict)

    def __post_init__(self):
        self.mask_groups = parse_groups(self.mask_groups)
        require(self.lambda_m >= 0, f"lambda_m must be >= 0, got {self.lambda_m}")
        require(self.tmax >= 1, f"tmax must be >= 1, got {self.tmax}")
        if self.init_steps is None:
            self.init_steps = max(1, self.tmax // 2) if self.dts else self.tmax

    def model_kwargs(self) -> dict:
        kw = {"tmax": self.tmax, "dts": self.dts, **self.model_args}
        if self.dts:
            kw.update(init_steps=self.init_steps, min_steps=self.min_steps)
        return kw

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mask_groups"] = list(self.mask_groups)
        return d


def time_step_metrics(model: torch.nn.Module) -> dict:
    """T_avg, mean T_l per group and every layer's T_l (JSON-ready)."""
    steps = model.time_steps()
    groups: dict[str, list[int]] = {}
    for name, m in model.spiking_layers().items():
        groups.setdefault(m.group, []).append(steps[name])
    return {"T_avg": average_time_steps(list(steps.values())),
            "T_by_group": {g: sum(v) / len(v) for g, v in groups.items()}, "T_l": steps}


def dts_hooks(spec: DTSSpec) -> TrainHooks:
    """Mask loss (when DTS, lambda_m > 0 and groups are chosen) and per-epoch time-step metrics."""
    extra = None
    if spec.dts and spec.lambda_m > 0 and spec.mask_groups:
        def extra(model, logits, targets):
            steps = mask_steps(model, spec.mask_groups).to(logits.device)
            return spec.lambda_m * steps, {"mask_steps": steps.detach()}
    return TrainHooks(extra_loss=extra, epoch_metrics=time_step_metrics)


def build_dts_model(spec: DTSSpec, dataset: str, img_size: int | None = None, seed: int | None = None):
    model, run = build_model(spec.arch, dataset, img_size, spec.model_kwargs(), seed=seed)
    run["dts"] = spec.to_dict()
    return model, run


def train_dts(spec: DTSSpec, train_set, test_set, config: TrainConfig, out_dir: str | Path | None,
              dataset: str, img_size: int | None = None, extra_run: dict | None = None, resume: bool = True):
    """Build the model of ``spec`` and train it with :func:`spikevit.train.fit` (mask loss + metrics hooks)."""
    model, run = build_dts_model(spec, dataset, img_size, seed=config.seed)
    run.update(extra_run or {})
    if spec.dts:
        require(len(gated_layers(model)) > 0, f"{spec.arch} has no DTSS-gated layers")
    return fit(model, train_set, test_set, config, out_dir=out_dir, hooks=dts_hooks(spec), run=run, resume=resume)
