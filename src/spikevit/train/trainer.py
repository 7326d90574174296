"""The generic training loop (:func:`fit`) and evaluation (:func:`evaluate`)."""
from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from spikevit.errors import SpikevitError
from spikevit.runtime import progress, seed_everything
from spikevit.train.checkpoint import (load_checkpoint, load_model_state, optimizer_from_tensors, prefixed,
                                       rng_of_rank, rng_state_tensors, save_checkpoint, save_model,
                                       set_rng_state_tensors)
from spikevit.train.config import TrainConfig, TrainHooks
from spikevit.train.data import make_loader
from spikevit.train.evaluate import evaluate as shared_evaluate
from spikevit.train.distributed import (DistInfo, all_gather_tensor, all_reduce_sum, barrier, init_distributed,
                                        shutdown)
from spikevit.train.schedule import CosineWarmup

LAST = "last.safetensors"
FINAL = "model.safetensors"
LOG = "log.json"


@dataclass
class TrainResult:
    model: nn.Module            # bare module (rank-local copy), eval mode
    history: list[dict]         # one dict per epoch (the JSON log)
    final: dict                 # the last evaluation
    out_dir: Path | None
    resumed_from: int           # epochs already done when this call started


def default_param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on >= 2-D weights only; biases, norm parameters and 1-D gates are not decayed."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def evaluate(model: nn.Module, loader, device: torch.device, bf16: bool = False, info: DistInfo | None = None,
             desc: str = "eval") -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over ``loader`` (summed over DDP ranks): the
    shared :func:`spikevit.train.evaluate.evaluate`."""
    return shared_evaluate(model, loader, device, bf16=bf16, info=info, desc=desc)


def _check_resumable(meta: dict, run: dict, config: TrainConfig, path: Path) -> None:
    if meta["run"].get("model") != run.get("model") or meta["run"].get("model_kwargs") != run.get("model_kwargs"):
        raise SpikevitError(f"{path} belongs to another model ({meta['run'].get('model')} "
                            f"{meta['run'].get('model_kwargs')}); use another --out directory")
    diff = {k: (meta["config"].get(k), v) for k, v in config.optimisation_dict().items()
            if meta["config"].get(k) != v}
    other = {k: (meta["run"].get(k), v) for k, v in run.items()
             if k not in ("model", "model_kwargs") and meta["run"].get(k) != v}
    if diff or other:
        raise SpikevitError(f"{path} was written with different settings {{name: (checkpoint, now)}}: "
                            f"{ {**diff, **other} }; resume with the same settings or use another --out directory")


def fit(model: nn.Module, train_set, test_set, config: TrainConfig, out_dir: str | Path | None = None,
        hooks: TrainHooks | None = None, run: dict | None = None, resume: bool = True,
        stop_after_steps: int | None = None) -> TrainResult:
    """Train ``model`` (any classifier ``images [B, C, H, W] -> logits [B, K]``) with AdamW + cosine schedule.

    Loss = cross-entropy (label smoothing ``config.label_smoothing``) + ``hooks.extra_loss`` if given.
    With ``out_dir``: ``last.safetensors`` is written after every epoch (resumed automatically when
    ``resume``), ``log.json`` holds one entry per epoch and ``model.safetensors`` the final weights.
    Under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA).
    ``run`` describes the model for the registry (``{"model": name, "model_kwargs": {...}, ...}``) and is
    checked when resuming.  ``stop_after_steps`` aborts after that many optimiser steps of this call
    (used to simulate a kill in tests).
    """
    hooks = hooks or TrainHooks()
    run = dict(run or {})
    info = init_distributed(config.device)
    device = info.device
    try:
        return _fit(model, train_set, test_set, config, out_dir, hooks, run, resume, stop_after_steps, info, device)
    finally:
        shutdown(info)


def _fit(model, train_set, test_set, config, out_dir, hooks, run, resume, stop_after_steps, info, device):
    seed_everything(config.seed + 7919 * info.rank)
    out_dir = Path(out_dir) if out_dir is not None else None
    model.to(device)
    param_groups = (hooks.param_groups or default_param_groups)(model, config)
    opt = torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    loader_kw = dict(seed=config.seed, workers=config.workers, rank=info.rank, world=info.world_size,
                     pin_memory=device.type == "cuda")
    train_loader = make_loader(train_set, config.batch_size, shuffle=True, **loader_kw)
    test_loader = make_loader(test_set, config.batch_size, shuffle=False, **loader_kw)
    steps_per_epoch = len(train_loader)
    sched = CosineWarmup(opt, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch),
                         config.lr, config.min_lr)
    history: list[dict] = []
    start_epoch = 0
    last = out_dir / LAST if out_dir else None
    if resume and last is not None and last.exists():
        tensors, meta = load_checkpoint(last)
        _check_resumable(meta, run, config, last)
        load_model_state(model, prefixed(tensors, "model."), str(last))
        optimizer_from_tensors(opt, tensors, meta.get("optim_scalars", {}), meta["optim_groups"])
        sched.load_state_dict(meta["schedule"])
        history = list(meta["history"])
        start_epoch = int(meta["epoch"])
        rng = rng_of_rank(tensors, info.rank) if meta.get("world_size") == info.world_size else None
        if rng is not None:
            set_rng_state_tensors(rng, device)
        elif info.is_main:
            print(f"spikevit: note: {last} was written by {meta.get('world_size')} processes, now "
                  f"{info.world_size}: RNG streams restart from the seed (data order is unaffected)")
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    steps_done = 0
    final = history[-1].get("test", {}) if history else {}
    for epoch in range(start_epoch, config.epochs):
        train_loader.sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(config.seed * 1_000_003 + epoch * 101 + info.rank)
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        bar = progress(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       **_quiet_unless_main(info))
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, config.bf16):
                logits = ddp(x)
                ce = criterion(logits.float(), y)
                loss = ce
                logged = {"ce": ce.detach()}
                if hooks.extra_loss is not None:
                    extra = hooks.extra_loss(model, logits, y)
                    extra, extra_logs = extra if isinstance(extra, tuple) else (extra, {})
                    loss = loss + extra
                    logged["extra_loss"] = extra.detach()
                    logged.update({k: torch.as_tensor(v).detach() for k, v in extra_logs.items()})
            if not torch.isfinite(loss):
                raise SpikevitError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); "
                                    "lower --lr or enable --clip-grad")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            opt.step()
            sched.step()
            with torch.no_grad():
                logged["loss"] = loss.detach()
                logged["acc1"] = (logits.argmax(1) == y).float().mean() * 100
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_batches += 1
            steps_done += 1
            if n_batches % 10 == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", acc=f"{sums['acc1'] / n_batches:.1f}")
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                raise _SimulatedKill(steps_done)
        keys = sorted(sums)
        avg = all_reduce_sum(torch.tensor([sums[k] for k in keys] + [n_batches], dtype=torch.float64), info)
        entry = {"epoch": epoch + 1, "lr": sched.lr(),
                 "train": {k: float(avg[i] / avg[-1]) for i, k in enumerate(keys)}}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            entry["test"] = final = evaluate(model, test_loader, device, config.bf16, info)
        if hooks.epoch_metrics is not None:
            entry["metrics"] = hooks.epoch_metrics(model)
        history.append(entry)
        rng_all = [dict(zip(_rng_keys(device), ts)) for ts in _gather_rng(device, info)]
        if out_dir is not None and info.is_main:
            save_checkpoint(last, model, opt, sched.state_dict(), epoch + 1, run, config.to_dict(), history,
                            rng_all)
            _write_json(out_dir / LOG, {"run": run, "config": config.to_dict(), "epochs": history})
        barrier(info)
        if info.is_main:
            msg = f"epoch {epoch + 1}/{config.epochs}: train loss {entry['train']['loss']:.4f}"
            if "test" in entry:
                msg += f", test acc {entry['test']['acc1']:.2f}%"
            if os.environ.get("SPIKEVIT_QUIET", "0") != "1":
                print(msg, flush=True)
    model.eval()
    if out_dir is not None and info.is_main and (start_epoch < config.epochs or not (out_dir / FINAL).exists()):
        save_model(out_dir / FINAL, model, run, {"test": final, "epochs": config.epochs})
    barrier(info)
    return TrainResult(model, history, final, out_dir, start_epoch)


def _quiet_unless_main(info: DistInfo) -> dict:
    return {} if info.is_main else {"disable": True}


class _SimulatedKill(RuntimeError):
    """Raised by ``fit(stop_after_steps=...)``; nothing after the last saved checkpoint survives."""


def _rng_keys(device):
    return sorted(rng_state_tensors(device))


def _gather_rng(device, info: DistInfo) -> list[list[torch.Tensor]]:
    """RNG tensors of every rank, ``[rank][key]`` in ``_RNG_KEYS`` order."""
    own = rng_state_tensors(device)
    per_key = [all_gather_tensor(own[k], info) for k in sorted(own)]
    return [[per_key[j][r] for j in range(len(per_key))] for r in range(info.world_size)]


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=lambda o: None if isinstance(o, float) and not math.isfinite(o)
                              else str(o)) + "\n")
    os.replace(tmp, path)
