"""Training a (DTS) Spikformer with the generic trainer: model + mask-loss hook + per-epoch T_l metrics.

:class:`DTSSpec` (what one run is) lives in :mod:`spikevit.dts.params` and is handed on here."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from spikevit.dts.loss import gated_layers, hoyer_terms, mask_steps, tet_loss, track_hoyer
from spikevit.dts.params import LOSSES, DTSSpec
from spikevit.errors import require
from spikevit.functional.dts import average_time_steps
from spikevit.train import TrainConfig, TrainHooks, build_model, fit

__all__ = [
    "LOSSES", "DTSSpec", "build_dts_model", "dts_hooks", "time_step_metrics", "train_dts"
]


def time_step_metrics(model: torch.nn.Module) -> dict:
    """T_avg, mean T_l per group and every layer's T_l (JSON-ready)."""
    steps = model.time_steps()
    groups: dict[str, list[int]] = {}
    for name, m in model.spiking_layers().items():
        groups.setdefault(m.group, []).append(steps[name])
    return {"T_avg": average_time_steps(list(steps.values())),
            "T_by_group": {g: sum(v) / len(v) for g, v in groups.items()}, "T_l": steps}


def dts_hooks(spec: DTSSpec, label_smoothing: float = 0.0) -> TrainHooks:
    """Extra loss terms and per-epoch time-step metrics.

    The generic trainer always optimises CE(mean_t O_t, y) (with ``label_smoothing``) plus the extra loss;
    the extra loss here is the mask loss (DTS, lambda_m > 0, groups chosen), the Hoyer regulariser
    (``hoyer_lambda > 0``) and, for ``loss="tet"``, ``L_TET - CE(mean_t O_t, y)``, so that the optimised
    total is exactly L_TET (+ the other terms).
    """
    use_mask = spec.dts and spec.lambda_m > 0 and bool(spec.mask_groups)
    use_tet, use_hoyer = spec.loss == "tet", spec.hoyer_lambda > 0
    extra = None
    if use_mask or use_tet or use_hoyer:
        def extra(model, logits, targets):
            total, logs = logits.new_zeros((), dtype=torch.float32), {}
            if use_mask:
                steps = mask_steps(model, spec.mask_groups).to(logits.device)
                total = total + spec.lambda_m * steps
                logs["mask_steps"] = steps.detach()
            if use_hoyer:
                h = hoyer_terms(model)
                total = total + spec.hoyer_lambda * h
                logs["hoyer"] = h.detach()
            if use_tet:
                tet = tet_loss(model.last_step_logits, targets, spec.tet_lambda, spec.tet_phi, label_smoothing)
                ce = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
                total = total + tet - ce
                logs["tet"] = tet.detach()
            return total, logs
    return TrainHooks(extra_loss=extra, epoch_metrics=time_step_metrics)


def build_dts_model(spec: DTSSpec, dataset: str, img_size: int | None = None, seed: int | None = None):
    model, run = build_model(spec.arch, dataset, img_size, spec.model_kwargs(), seed=seed)
    run["dts"] = spec.to_dict()
    return model, run


def train_dts(spec: DTSSpec, train_set, test_set, config: TrainConfig, out_dir: str | Path | None, *,
              dataset: str, img_size: int | None = None, extra_run: dict | None = None, resume: bool = True):
    """Build the model of ``spec`` and train it with :func:`spikevit.train.fit` (mask loss + metrics hooks).

    ``dataset`` / ``img_size`` size the model's input and head; ``extra_run`` is stored with the run (a
    resumed run must match it)."""
    model, run = build_dts_model(spec, dataset, img_size, seed=config.seed)
    run.update(extra_run or {})
    if spec.dts:
        require(len(gated_layers(model)) > 0, f"{spec.arch} has no DTSS-gated layers")
    if spec.hoyer_lambda > 0:
        require(track_hoyer(model) > 0, f"{spec.arch} has no LIF layers for the Hoyer regulariser")
    if spec.loss == "tet":
        require(hasattr(model, "forward_steps"), f"{spec.arch} has no per-step logits for the TET loss")
    return fit(model, train_set, test_set, config, out_dir=out_dir, hooks=dts_hooks(spec, config.label_smoothing),
               run=run, resume=resume)
