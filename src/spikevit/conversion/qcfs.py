"""Quantisation-aware fine-tuning for rate-coded conversion (QCFS / MST style): train the model with the
activation its converted neurons compute, then convert without loss.

A rate-coded signed IF pair over ``T`` steps hands the next layer ``theta / T * (n+ - n-)``: its input
rounded to the grid ``theta / T`` and clipped to [-theta, theta] (the signed QCFS quantiser with ``L = T``
levels and shift 1/2, :func:`spikevit.functional.coding.qcfs_quantise`).  A model trained without that
quantisation loses accuracy at small ``T``.  The remedy of MST and QCFS (Bu et al. 2022) is to fine-tune
with the quantiser in place and a learnable threshold, then convert.

* :func:`quantisation_aware` builds the training model: the converted model (same encoder points, same
  spiking softmax and few-spike activations) whose encoders forward the decoded value with a
  straight-through gradient and learn ``theta`` (initialised by the usual calibration; QCFS / LSQ
  gradient), and whose few-spike neurons pass the exact function's gradient
  (:class:`~spikevit.nn.qcfs.StraightThrough`).  Its parameters are the ANN's own tensors plus the
  thresholds, so any training loop (e.g. :func:`spikevit.train.fit`) fine-tunes it.
* ``convert(qat_model, T, spiking=..., coding="rate")`` (or :func:`spiking_model`) returns the spiking
  model with the learned thresholds: it computes what the fine-tuned model computes (up to float rounding
  of the two IF neurons' products done separately).
* :func:`ann_state_dict` / :func:`neuron_state` (+ :func:`save_neurons` / :func:`load_neurons`) split the
  fine-tuned model into the ANN's weights (loadable into the original architecture) and its neurons'
  parameters (learned thresholds ``<encoder path>.theta``, the few-spike activations fitted at the start)
  that ``convert(ann, ..., neurons=...)`` takes to rebuild the same spiking model.
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spikevit.conversion.params import ParamsBase, check_si_exp_steps
from spikevit.errors import SpikevitError, require
from spikevit.nn.qcfs import StraightThrough
from spikevit.nn.spike_coding import SpikeEncoder
from spikevit.nn.spiking_softmax import FewSpikeActivation
from spikevit.tensorio import load_tensors, save_tensors
from spikevit.validation import check_output, device_name, finite_float, non_negative_int, positive_int

NEURONS_KIND = "spikevit-neurons"


def quantisation_aware(model: nn.Module, steps: int = 4, *, spiking: str = "all", calibration=None,
                       coding_steps: int | None = None, calibration_batches: int = 8,
                       blocks: int | Iterable[int] | None = None, squeeze: str | None = None,
                       activation_steps: int | None = None, norm_steps: int | None = None,
                       inplace: bool = False) -> nn.Module:
    """The model to fine-tune before a rate-coded conversion at ``spiking`` (``"attention"`` or ``"all"``).

    Same arguments as :func:`~spikevit.conversion.convert` with ``coding="rate"``: ``steps`` is K of the
    SI-exp neurons and, unless ``coding_steps`` is given, T of the rate-coded IF pairs; ``calibration``
    (model inputs ``[B, *]`` or a DataLoader) initialises the thresholds.  The returned model's forward is
    the converted model's (quantised inputs at every encoder point, spiking softmax, few-spike activations);
    its backward is straight-through (see the module docstring).  ``theta`` of each encoder is an
    ``nn.Parameter`` (path ``<encoder path>.theta``).  The model keeps ``model``'s train / eval mode.
    """
    from spikevit.conversion.converter import convert

    require(isinstance(model, nn.Module), f"quantisation_aware() needs an nn.Module, got {type(model).__name__}")
    require(spiking in ("attention", "all"), f"spiking={spiking!r}: quantisation-aware training is for the rate-coded "
            "levels 'attention' and 'all' (at 'softmax' no value is rate-coded)")
    require(calibration is not None, "quantisation_aware() needs calibration= (model inputs or a DataLoader) to "
            "initialise the thresholds")
    was = model.training
    ann = model if inplace else copy.deepcopy(model)
    ann_keys: dict[int, list[str]] = {}
    for k, t in ann.state_dict(keep_vars=True).items():
        ann_keys.setdefault(id(t), []).append(k)
    net = convert(ann, steps, spiking=spiking, calibration=calibration, coding="rate", coding_steps=coding_steps,
                  calibration_batches=calibration_batches, blocks=blocks, squeeze=squeeze,
                  activation_steps=activation_steps, norm_steps=norm_steps, inplace=True)
    names: dict[str, str] = {}                 # ANN state-dict key -> key in the quantisation-aware model
    for k, t in net.state_dict(keep_vars=True).items():
        for a in ann_keys.get(id(t), ()):
            names.setdefault(a, k)
    lost = [a for keys in ann_keys.values() for a in keys if a not in names]
    if lost:
        raise SpikevitError(f"quantisation_aware: conversion did not keep the tensors {lost[:3]} (not supported)")
    for m in net.modules():
        if isinstance(m, SpikeEncoder):
            m.make_quantisation_aware()
    _wrap_few_spike(net)
    net.sit_conversion = {**net.sit_conversion, "quantisation_aware": True, "thresholds": "learned"}
    net.qcfs_ann_keys = names
    return net.train(was)


def _wrap_few_spike(net: nn.Module) -> None:
    from spikevit.conversion.attention import SpikingAttention

    for m in net.modules():
        if isinstance(m, SpikingAttention) and m.spiking_softmax is not None and \
                not isinstance(m.spiking_softmax, StraightThrough):
            m.spiking_softmax = StraightThrough(m.spiking_softmax)
    for name, m in list(net.named_modules()):
        if isinstance(m, FewSpikeActivation) and name:
            parent, _, attr = name.rpartition(".")
            owner = net.get_submodule(parent) if parent else net
            if not isinstance(owner, StraightThrough):
                setattr(owner, attr, StraightThrough(m))


def _require_quantisation_aware(net: nn.Module, what: str) -> dict:
    info = getattr(net, "sit_conversion", None) or {}
    require(isinstance(net, nn.Module) and info.get("quantisation_aware"),
            f"{what}: not a quantisation-aware model (make one with spikevit.conversion.quantisation_aware)")
    return info


def spiking_model(net: nn.Module, steps: int | None = None, *, spiking: str | None = None, coding: str = "rate",
                  coding_steps: int | None = None, blocks=None, inplace: bool = False) -> nn.Module:
    """The spiking model of a (fine-tuned) quantisation-aware model: learned thresholds frozen into the IF
    neurons, the few-spike neurons without their straight-through gradient (eval mode).

    The settings, where given, must be the ones the model was made with (``steps``, ``spiking``,
    ``coding="rate"``, ``coding_steps``, ``blocks``): a different T or level would not be the model that
    was trained.  This is what :func:`~spikevit.conversion.convert` does with such a model.
    """
    from spikevit.conversion.converter import freeze_quantisation_aware

    _require_quantisation_aware(net, "spiking_model")
    return freeze_quantisation_aware(net, steps, spiking=spiking, coding=coding, coding_steps=coding_steps,
                                     blocks=blocks, inplace=inplace)


def threshold_param_groups(theta_lr_scale: float = 10.0):
    """``param_groups`` hook of :func:`spikevit.train.fit` for a quantisation-aware model: the thresholds in
    their own group (no weight decay, learning rate x ``theta_lr_scale``), the rest as the trainer's default
    (decay on >= 2-D weights only)."""
    require(isinstance(theta_lr_scale, (int, float)) and theta_lr_scale > 0,
            f"theta_lr_scale must be > 0, got {theta_lr_scale!r}")

    def groups(model: nn.Module, config) -> list[dict]:
        theta = [m.theta for m in model.modules() if isinstance(m, SpikeEncoder) and m.quantisation_aware]
        ids = {id(p) for p in theta}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        out = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": config.weight_decay, "lr_scale": 1.0},
               {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0, "lr_scale": 1.0},
               {"params": theta, "weight_decay": 0.0, "lr_scale": float(theta_lr_scale)}]
        return [g for g in out if g["params"]]

    return groups


def finetune(net: nn.Module, train_set, test_set, config, *, theta_lr_scale: float = 10.0, out_dir=None,
             run: dict | None = None):
    """Fine-tune a quantisation-aware model with the project's trainer (:func:`spikevit.train.fit`: AdamW,
    warmup + cosine, ``config`` a :class:`~spikevit.train.TrainConfig`); thresholds learn ``theta_lr_scale``
    times faster.  Returns the trainer's ``TrainResult`` (``net`` is trained in place, left in eval mode)."""
    from spikevit.train import TrainHooks, fit

    _require_quantisation_aware(net, "finetune")
    hooks = TrainHooks(param_groups=threshold_param_groups(theta_lr_scale))
    return fit(net.train(), train_set, test_set, config, out_dir=out_dir, hooks=hooks,
               run=run or {"model": "quantisation-aware", "model_kwargs": dict(net.sit_conversion)})


def neuron_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The spiking neurons' parameters of a converted or quantisation-aware model, as state-dict entries
    (detached, CPU): ``"<encoder path>.theta": [C]`` and, for every few-spike activation,
    ``"<path>.T" / ".h" / ".d": [K]`` and ``"<path>.domain": [2]``.  What ``convert(ann, ..., neurons=...)``
    takes; with the ANN weights (:func:`ann_state_dict`) they rebuild the spiking model."""
    out = {}
    modules = dict(net.named_modules())
    for n, m in modules.items():
        if isinstance(m, StraightThrough):
            m = m.spiking                          # the neuron under its straight-through wrapper's path
        elif isinstance(modules.get(n.rpartition(".")[0]), StraightThrough):
            continue
        if isinstance(m, SpikeEncoder) and m.calibrated:
            out[f"{n}.theta"] = m.theta.detach().clamp_min(1e-6).float().cpu().clone()
        elif isinstance(m, FewSpikeActivation):
            for k in ("T", "h", "d"):
                out[f"{n}.{k}"] = getattr(m, k).detach().float().cpu().clone()
            out[f"{n}.domain"] = torch.tensor(m.domain, dtype=torch.float64)
    require(bool(out), "neuron_state: the model has no calibrated spiking neurons")
    return out


def thresholds_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder thresholds ``{encoder path: theta [C]}`` among :func:`neuron_state`'s entries."""
    return {k[: -len(".theta")]: v for k, v in state.items() if k.endswith(".theta")}


def ann_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """The fine-tuned ANN weights of a quantisation-aware model under the original model's state-dict keys
    (load them into the architecture it was made from)."""
    _require_quantisation_aware(net, "ann_state_dict")
    sd = net.state_dict()
    return {a: sd[k].detach().clone() for a, k in net.qcfs_ann_keys.items()}


def save_neurons(path: str | os.PathLike, neurons: dict[str, torch.Tensor], info: dict | None = None):
    """Write :func:`neuron_state`'s entries (a safetensors file with ``info`` as metadata)."""
    return save_tensors(path, neurons, NEURONS_KIND, info or {})


def load_neurons(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(neurons, info)`` from :func:`save_neurons`'s file; a foreign file -> SpikevitError."""
    return load_tensors(path, NEURONS_KIND)


# ----------------------------------------------------------------------------------------------------------
# the whole fine-tune as one library call (``spikevit convert finetune``)
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneParams(ParamsBase):
    """Quantisation-aware fine-tuning of a trained model (:func:`finetune_run`), before a rate-coded conversion.

    model / checkpoint: as :class:`~spikevit.conversion.ConversionParams` (registry name + spikevit model file,
        ``torchvision:NAME`` / ``timm:NAME`` + state dict, ``file:PATH``)
    steps:        SI-exp K and, unless ``coding_steps`` is given, T of the rate-coded IF pairs
    spiking:      ``"attention"`` or ``"all"``
    train_images: seeded augmented training images of the one pass (None: the whole training split)
    batch_size / lr / min_lr / warmup_epochs / weight_decay / label_smoothing / clip_grad: the trainer's
        (:class:`~spikevit.train.TrainConfig`); ``min_lr`` None: ``lr / 100``
    theta_lr_scale: the thresholds' learning rate is ``lr`` times this
    calibration_samples: seeded training images that initialise the thresholds (as in conversion)
    out:          folder for ``model.safetensors`` (fine-tuned weights, same format as the input) and
        ``neurons.safetensors`` (:func:`neuron_state`: thresholds, few-spike activations)
    """

    model: str
    checkpoint: str | None = None
    dataset: str = "cifar10"
    data_root: str | None = None
    steps: int = 4
    spiking: str = "all"
    coding_steps: int | None = None
    train_images: int | None = 25600
    batch_size: int = 128
    lr: float = 2e-4
    min_lr: float | None = None
    warmup_epochs: float = 0.05
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_grad: float | None = 1.0
    theta_lr_scale: float = 10.0
    calibration_samples: int = 256
    img_size: int | None = None
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    out: str = "runs/qcfs"
    json: str | None = None
    download: bool = False
    skip_bad_images: bool = False

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        require(isinstance(self.model, str) and self.model, f"model must be a non-empty name, got {self.model!r}")
        require(self.spiking in ("attention", "all"), f"spiking={self.spiking!r}: quantisation-aware fine-tuning "
                "is for the rate-coded levels 'attention' and 'all'")
        for name in ("steps", "batch_size", "calibration_samples"):
            put(name, positive_int(getattr(self, name), name))
        for name in ("coding_steps", "train_images", "img_size"):
            if getattr(self, name) is not None:
                put(name, positive_int(getattr(self, name), name))
        for name in ("workers", "seed"):
            put(name, non_negative_int(getattr(self, name), name))
        for name in ("lr", "theta_lr_scale"):
            put(name, finite_float(getattr(self, name), name, minimum=0.0, strictly=True))
        for name in ("warmup_epochs", "weight_decay", "label_smoothing"):
            put(name, finite_float(getattr(self, name), name, minimum=0.0))
        for name in ("min_lr", "clip_grad"):
            if getattr(self, name) is not None:
                put(name, finite_float(getattr(self, name), name, minimum=0.0, strictly=name == "clip_grad"))
        put("device", device_name(self.device, "device"))
        check_si_exp_steps(self.steps)


def finetune_run(params: FinetuneParams, *, command: str | None = None, verbose: bool = True):
    """Fine-tune ``params.model`` quantisation-aware and write the fine-tuned weights and neurons.

    Loads the model (:func:`~spikevit.conversion.resolve_model`), calibrates the thresholds on
    ``calibration_samples`` seeded training images, fine-tunes with :func:`finetune` over ``train_images``
    seeded augmented training images (1,000 seeded test images evaluated at the end), writes
    ``<out>/model.safetensors`` and ``<out>/neurons.safetensors``, and checks that the spiking model rebuilt
    from those files gives the fine-tuned model's logits.  Returns the :class:`~spikevit.reports.Report`
    (written to ``params.json`` when set).  Convert / measure the result with
    ``spikevit convert run --checkpoint <out>/model.safetensors --neurons <out>/neurons.safetensors``.
    """
    import sys

    import torch.nn.functional as F

    from spikevit.conversion.converter import convert
    from spikevit.conversion.resolve import calibration_images, resolve_model
    from spikevit.data import dataset_spec
    from spikevit.reports import Report
    from spikevit.runtime import pick_device, seed_everything
    from spikevit.train import TrainConfig, build_datasets, save_model

    require(isinstance(params, FinetuneParams), f"finetune_run() takes a FinetuneParams, got {type(params).__name__}")
    p = params
    out = Path(p.out)
    model_file, neurons_file = out / "model.safetensors", out / "neurons.safetensors"
    for f, what in ((model_file, "--out (model file)"), (neurons_file, "--out (neurons file)")):
        check_output(f, what, inputs=[p.checkpoint])
    if p.json is not None:
        check_output(p.json, "--json", inputs=[p.checkpoint, str(model_file), str(neurons_file)])
    seed_everything(p.seed)
    dev = pick_device(p.device)
    spec = dataset_spec(p.dataset)
    net, desc = resolve_model(p.model, p.checkpoint, num_classes=spec.num_classes, img_size=p.img_size)
    net = net.to(dev).eval()
    cal = calibration_images(p.dataset, p.data_root, p.calibration_samples, p.seed, img_size=p.img_size,
                             download=p.download, skip_bad_images=p.skip_bad_images).to(dev)
    train_set, test_set = build_datasets(p.dataset, p.data_root, augment=True, img_size=p.img_size,
                                         train_subset=p.train_images, test_subset=1000, seed=p.seed,
                                         download=p.download, skip_bad_images=p.skip_bad_images)
    qat = quantisation_aware(net, p.steps, spiking=p.spiking, calibration=cal, coding_steps=p.coding_steps)
    config = TrainConfig(epochs=1, batch_size=p.batch_size, lr=p.lr, min_lr=p.lr / 100 if p.min_lr is None else p.min_lr,
                         warmup_epochs=p.warmup_epochs, weight_decay=p.weight_decay, label_smoothing=p.label_smoothing,
                         clip_grad=p.clip_grad, seed=p.seed, workers=p.workers, device=str(dev))
    t0 = time.perf_counter()
    res = finetune(qat, train_set, test_set, config, theta_lr_scale=p.theta_lr_scale)
    seconds = time.perf_counter() - t0
    info = {"model": p.model, "checkpoint": p.checkpoint, "steps": p.steps, "coding_steps": p.coding_steps or p.steps,
            "spiking": p.spiking, "train_images": len(train_set), "optimizer_steps": len(train_set) // p.batch_size,
            "train_seconds": round(seconds, 1)}
    ann = copy.deepcopy(net)
    ann.load_state_dict(ann_state_dict(qat))
    if "run" in desc:                                   # registry model: a spikevit model file again
        save_model(model_file, ann, {**desc["run"], "init_from": p.checkpoint, "qcfs": info},
                   {"quantisation_aware_test_subset": res.final})
    else:                                               # torchvision / timm: a plain state dict
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in ann.state_dict().items()}, str(model_file))
    save_neurons(neurons_file, neuron_state(qat), info)
    # the spiking model rebuilt from the files computes what the fine-tuned model computes
    snn = convert(ann.eval(), p.steps, spiking=p.spiking, coding="rate", coding_steps=p.coding_steps,
                  neurons=load_neurons(neurons_file)[0])
    probe = torch.stack([test_set[i][0] for i in range(min(64, len(test_set)))]).to(dev)
    with torch.no_grad():
        a, b = qat.eval()(probe), snn(probe)
    check = {"max_abs_diff": float((a - b).abs().max()),
             "cosine": float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0)),
             "same_argmax_fraction": float((a.argmax(1) == b.argmax(1)).float().mean()), "images": len(probe)}
    history = [{"epoch": h["epoch"], "train_loss": h["train"].get("loss"), "train_acc1": h["train"].get("acc1"),
                "test_subset_acc1": h.get("test", {}).get("acc1")} for h in res.history]
    report = Report(command or ("spikevit " + " ".join(sys.argv[1:])), p.to_dict(),
                    {**info, "test_subset": res.final, "lossless_check": check, "model_file": str(model_file),
                     "neurons_file": str(neurons_file)}, tables={"finetune": history},
                    title=f"Quantisation-aware fine-tuning of {p.model} (spiking = {p.spiking}, T = {info['coding_steps']})",
                    notes=f"One pass over {len(train_set)} seeded augmented training images ({info['optimizer_steps']} "
                          f"AdamW steps, {seconds:.0f} s); thresholds initialised on {p.calibration_samples} seeded "
                          "training images and learned; test_subset: the quantisation-aware model on 1,000 seeded "
                          "test images; lossless_check: its logits against the spiking model rebuilt from the "
                          "written files.")
    if p.json:
        report.write(p.json)
    if verbose:
        print(f"fine-tuned {info['optimizer_steps']} steps in {seconds:.0f} s: {res.final.get('acc1', float('nan')):.2f}% "
              f"on 1,000 test images (quantisation-aware); wrote {model_file} and {neurons_file} (spiking model "
              f"vs fine-tuned: max |logit diff| {check['max_abs_diff']:.2g})", flush=True)
    return report


__all__ = ["NEURONS_KIND", "FinetuneParams", "finetune_run", "ann_state_dict", "finetune", "load_neurons", "neuron_state", "quantisation_aware",
           "save_neurons", "spiking_model", "threshold_param_groups", "thresholds_of"]
