"""SIT-conversion of a trained transformer, at a ``spiking`` level: ``"softmax"`` (every attention softmax
-> :class:`SpikingSoftmax`), ``"attention"`` (+ Q, K, V coded by spiking neurons at the attention products)
or ``"all"`` (+ spike-coded inputs of every linear layer / convolution in the converted blocks).

Pipeline (fixed), with pluggable attention recipes:

1. **find** the attention modules, in model order (:func:`find_attention`):
   ``nn.MultiheadAttention`` (torchvision ViT's fused kernel included), and any module whose own
   ``forward`` calls ``softmax`` or ``F.scaled_dot_product_attention`` (timm ViT/DeiT ``Attention``,
   EdgeNeXt ``XCA``, spikevit's ``SmallViT`` attention, most hand-written attention).
2. **make explicit**: ``nn.MultiheadAttention`` becomes :class:`ExplicitMultiheadAttention` with the
   same parameters (checked numerically against the original on a probe input before anything else
   changes); timm's fused path needs no rewrite, see 3.
3. **wrap** each attention module in :class:`SpikingAttention`, which runs the module's own forward
   under a ``TorchFunctionMode`` that routes every softmax (``F.softmax``, ``torch.softmax``,
   ``Tensor.softmax``, ``nn.Softmax``) and every ``F.scaled_dot_product_attention`` (decomposed into
   ``QK^T * scale -> mask -> softmax -> @V``) through the block's spiking softmax, and records the
   multiply-accumulates of the attention products (``QK^T`` and ``A V``) for the energy accounting.
   Blocks outside ``blocks=`` are wrapped too but keep the exact softmax (so ``blocks=0`` is the ANN).
   At ``spiking >= "attention"`` the same mode codes Q (spikes), K (its neurons' value) and V (spikes)
   with calibrated :class:`~spikevit.nn.spike_coding.SpikeEncoder` s and runs ``QK^T`` / ``A V`` on spikes.
4. optionally replace elementwise activations (GELU / SiLU / Sigmoid modules) inside the converted
   blocks (the parent module of each converted attention) by fitted few-spike neurons (always at "all").
5. at ``"all"``: every ``nn.Linear`` / ``nn.Conv1d-3d`` of the converted blocks -> :class:`SpikingLinear` /
   :class:`SpikingConv` (input coded by its own encoder, or the spikes of a few-spike activation).
6. **calibrate** (:func:`calibrate`): run the calibration inputs, set every encoder's per-channel thresholds
   (those not given by ``neurons=``, e.g. learned by quantisation-aware fine-tuning).

A model made by :func:`spikevit.conversion.quantisation_aware` (and fine-tuned) is converted by freezing its
learned thresholds (:func:`freeze_quantisation_aware`, also :func:`spikevit.conversion.qcfs.spiking_model`): the result computes what it computed.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from spikevit.conversion.attention import (ExplicitMultiheadAttention, SpikingAttention, attention_modules,
                                           explicit_mha, find_attention)

__all__ = ["ACTIVATIONS", "ExplicitMultiheadAttention", "SpikingAttention", "attention_modules", "calibrate", "convert",
           "explicit_mha", "find_attention", "freeze_quantisation_aware"]
from spikevit.conversion.params import ACTIVATION_FITS, DEFAULT_CODING, LEVELS
from spikevit.errors import SpikevitError, require
from spikevit.nn.spike_coding import SpikeEncoder, SpikingConv, SpikingLinear
from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax
ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}


def _set_child(model: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, attr = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _select_blocks(n: int, blocks) -> set[int]:
    if blocks is None:
        return set(range(n))
    if isinstance(blocks, bool):
        raise SpikevitError("blocks must be None, a count or a list of block indices")
    if isinstance(blocks, int):
        require(0 <= blocks <= n, f"blocks={blocks}: the model has {n} attention blocks")
        return set(range(blocks))
    sel = set()
    for b in blocks:
        require(isinstance(b, int) and -n <= b < n, f"block index {b!r} out of range (model has {n} attention blocks)")
        sel.add(b % n)
    return sel


def _parse_activations(activations) -> list[str]:
    if activations in (None, False, (), []):
        return []
    if activations == "all" or activations is True:
        return list(ACTIVATIONS)
    if isinstance(activations, str):
        activations = [a.strip() for a in activations.split(",") if a.strip()]
    bad = [a for a in activations if a not in ACTIVATIONS]
    require(not bad, f"cannot convert activations {bad}; choose from {sorted(ACTIVATIONS)} or 'all'")
    return list(activations)




def convert(model: nn.Module, steps: int = 12, *, spiking: str = "softmax", calibration=None,
            coding: str = DEFAULT_CODING, coding_steps: int | None = None, calibration_batches: int = 8,
            blocks: int | Iterable[int] | None = None, squeeze: str | None = None,
            activations: str | Iterable[str] | None = (), activation_steps: int | None = None,
            norm_steps: int | None = None, inplace: bool = False, softmax_params: dict | None = None,
            neurons: Mapping[str, torch.Tensor] | None = None, activation_fit: str = "range") -> nn.Module:
    """SIT-convert ``model``: the selected attention blocks compute with spiking neurons.

    Args:
        steps: K of the SI-exp neurons (shipped: 4..16); also the default time steps of the other neurons.
        spiking: how much of each converted block spikes:

            * ``"softmax"``: the softmax becomes the spiking softmax (SI-exp + SI-norm); the rest is analog.
            * ``"attention"``: in addition Q, K and V come out of spiking neurons (``coding``), so ``Q K^T``
              has a spike operand (Q's spikes; K's neurons' decoded value is the other operand) and ``A V``
              has V's spikes as operand.
            * ``"all"``: in addition every linear layer and convolution inside the converted block (the
              parent module of the attention, e.g. a transformer block with its MLP) receives spike-coded
              input, and its GELU / SiLU / sigmoid activations become few-spike neurons (with few-spike
              coding their spikes feed the next layer directly; with rate coding the next layer's IF
              neurons integrate their output and fire spike counts).
        calibration: model inputs (a tensor ``[B, *]``) or a DataLoader (first ``calibration_batches``
            batches of ``(x, y)`` or ``x``) used to set the neurons' thresholds (per channel, clipping
            chosen by the coding error).  Required for ``"attention"`` and ``"all"``.
        coding: neurons that code analog values: ``"rate"`` (signed integrate-and-fire pairs, spike counts
            over ``coding_steps`` steps, MST-style) or ``"fewspike"`` (binary-weighted few-spike identity
            neurons: the SI-exp machinery with exact identity parameters, ``coding_steps`` = K).
        coding_steps: T (rate) or K (few-spike) of those neurons; default ``steps``.
        blocks: ``None`` (all attention blocks), a count ``n`` (the first n, in module order) or a list
            of block indices; the other blocks stay exact (``blocks=0`` is the ANN).
        squeeze: ``None``, ``"sigmoid"`` (paper: logits into (0, 1), fine-tune afterwards) or ``"tanh"``.
        activations: elementwise activation modules to replace, inside the converted blocks, by fitted
            few-spike neurons: names among ``gelu``, ``silu``, ``sigmoid``, or ``"all"`` (``"all"`` is
            implied by ``spiking="all"``).
        activation_steps: K of those neurons (default ``steps`` if fitted for every activation, else the
            nearest fitted K above it; recorded in ``model.sit_conversion``).
        norm_steps: SI-norm time steps (``None``: the paper's real-valued fast form).
        inplace: modify ``model`` itself instead of a deep copy.
        activation_fit: how those few-spike activations use ``calibration`` (given at any level): ``"range"``
            (default: each neuron is moved onto the range its inputs occupy and its output weights refitted by
            least squares on them), ``"polish"`` (also a short gradient fit of its thresholds; seconds per
            layer) or ``"shipped"`` (the shipped fit, on its fixed domain); see
            :func:`spikevit.conversion.fitting.fit_activations`.
        neurons: parameters of the spiking neurons, as state-dict entries of the converted model
            (:func:`spikevit.conversion.neuron_state`, e.g. learned by quantisation-aware fine-tuning):
            ``"<encoder path>.theta": [C]`` per-channel thresholds, ``"<activation path>.T" / ".h" / ".d": [K]``
            and ``".domain": [2]`` of fitted few-spike activations.  Neurons given so are neither calibrated
            nor fitted; ``calibration`` is needed only for the encoders left out.  Entries of blocks that
            ``blocks=`` leaves unconverted are ignored; any other unknown entry is an error.

    A model returned by :func:`spikevit.conversion.quantisation_aware` (fine-tuned or not) is converted with
    its learned thresholds (no re-calibration): the settings must be the ones it was made with.

    Returns the converted model (eval mode unchanged).  Raises :class:`SpikevitError` for an unknown level
    or coding, a missing / non-finite / ill-shaped calibration, or a model without convertible attention.
    """
    require(isinstance(model, nn.Module), f"convert() needs an nn.Module, got {type(model).__name__}")
    if (getattr(model, "sit_conversion", None) or {}).get("quantisation_aware"):
        return freeze_quantisation_aware(model, steps, spiking=spiking, coding=coding, coding_steps=coding_steps,
                                          blocks=blocks, inplace=inplace)
    require(isinstance(spiking, str) and spiking in LEVELS,
            f"spiking={spiking!r}: choose from {list(LEVELS)}")
    require(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
            f"steps must be an integer >= 1, got {steps!r}")
    require(coding in ("rate", "fewspike"), f"coding={coding!r}: choose from ['rate', 'fewspike']")
    require(activation_fit in ACTIVATION_FITS,
            f"activation_fit={activation_fit!r}: choose from {list(ACTIVATION_FITS)}")
    coding_steps = steps if coding_steps is None else coding_steps
    require(isinstance(coding_steps, int) and coding_steps >= 1,
            f"coding_steps must be an integer >= 1, got {coding_steps!r}")
    acts = _parse_activations(activations)
    if spiking == "all":
        acts = list(ACTIVATIONS)
    batches = None
    if spiking != "softmax":
        require(calibration is not None or neurons is not None, f"spiking={spiking!r} needs calibration= "
                "(a tensor of model inputs or a DataLoader) to set the spiking neurons' thresholds")
        if calibration is not None:
            batches = _calibration_batches(calibration, calibration_batches)
    elif acts and calibration is not None:          # few-spike activations are fitted to their inputs
        batches = _calibration_batches(calibration, calibration_batches)
    preset = _check_neurons(neurons)
    net = model if inplace else copy.deepcopy(model)
    found = find_attention(net)
    if not found:
        raise SpikevitError(
            f"{type(model).__name__}: no attention block to convert (looked for nn.MultiheadAttention and modules "
            "whose forward calls softmax or F.scaled_dot_product_attention, e.g. torchvision/timm ViT, DeiT, "
            "EdgeNeXt, spikevit's vit-cifar-* models)")
    selected = _select_blocks(len(found), blocks)
    p = next(net.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    for i, (name, mod) in enumerate(found):
        inner = mod.inner if isinstance(mod, SpikingAttention) else mod
        if isinstance(inner, nn.MultiheadAttention):
            inner = explicit_mha(inner)
        ss, encoders = None, None
        if i in selected:
            ss = SpikingSoftmax(steps, dim=-1, squeeze=squeeze, norm_steps=norm_steps,
                                params=softmax_params).to(device)
            if spiking != "softmax":
                encoders = nn.ModuleDict({r: SpikeEncoder(coding, coding_steps, -1, f"{name}.{r}")
                                          for r in ("q", "k", "v")}).to(device)
        _set_child(net, name, SpikingAttention(inner, ss, i, encoders))
        if i in selected:
            parent_name = name.rpartition(".")[0]
            parent = net.get_submodule(parent_name) if parent_name else net
            if acts:
                act_steps = _activation_steps(acts, activation_steps, steps)
                # few-spike coding: the activation's own spikes feed the next layer (time coding throughout);
                # rate coding: the next layer's IF neurons integrate the activation's output and fire counts
                _convert_activations(parent, acts, act_steps, hand_over=spiking == "all" and coding == "fewspike")
            if spiking == "all":
                _spike_code_layers(parent, coding, coding_steps, parent_name, device)
    net.sit_conversion = {"steps": steps, "spiking": spiking, "coding": coding if spiking != "softmax" else None,
                          "coding_steps": coding_steps if spiking != "softmax" else None,
                          "blocks": sorted(selected), "attention_blocks": len(found), "squeeze": squeeze,
                          "activations": acts, "activation_steps": _activation_steps(acts, activation_steps, steps)
                          if acts else None, "norm_steps": norm_steps,
                          "block_names": [found[i][0].rpartition(".")[0] for i in sorted(selected)]}
    if preset is not None:
        skip = tuple(p + "." for i, (p, _) in enumerate(found) if i not in selected) + tuple(
            p.rpartition(".")[0] + "." for i, (p, _) in enumerate(found) if i not in selected and "." in p)
        _set_neurons(net, preset, skip)
        net.sit_conversion["neurons"] = "given"
    missing = [n for n, m in net.named_modules() if isinstance(m, SpikeEncoder) and not m.calibrated]
    if missing and batches is None:
        raise SpikevitError(f"no thresholds for {len(missing)} spike encoders ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''}) and no calibration= to set them")
    if batches is not None and (missing or (acts and activation_fit != "shipped")):
        fitted = calibrate(net, batches, activation_fit)
        if acts:
            net.sit_conversion["activation_fit"] = {"mode": activation_fit, "layers": fitted}
    return net


def _check_neurons(neurons) -> dict[str, torch.Tensor] | None:
    """``neurons`` as ``{state-dict key: 1-D finite float tensor}`` (or None); bad entries -> SpikevitError."""
    if neurons is None:
        return None
    require(isinstance(neurons, Mapping), f"neurons must be a mapping {{state-dict key: tensor}}, got "
            f"{type(neurons).__name__}")
    out = {}
    for k, v in neurons.items():
        require(isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 1,
                f"neurons[{k!r}] must be a 1-D float tensor")
        require(bool(torch.isfinite(v).all()), f"neurons[{k!r}] holds NaN or infinite values")
        require(not k.endswith(".theta") or bool((v > 0).all()), f"neurons[{k!r}]: thresholds must be > 0")
        out[k] = v.detach()
    return out


_ACT_KEYS = ("T", "h", "d", "domain")


def _set_neurons(net: nn.Module, neurons: dict[str, torch.Tensor], skip: tuple[str, ...]) -> None:
    """Install ``neurons`` (see :func:`convert`): encoder thresholds, few-spike activation parameters."""
    modules = dict(net.named_modules())
    acts: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for k, v in neurons.items():
        path, _, attr = k.rpartition(".")
        m = modules.get(path)
        if isinstance(m, SpikeEncoder) and attr == "theta":
            m.theta = v.to(m.theta.device, torch.float32).clone()       # channel count checked at the first input
            m.clip_fraction = float("nan")
        elif isinstance(m, FewSpikeActivation) and attr in _ACT_KEYS:
            acts.setdefault(path, {})[attr] = v
        elif not k.startswith(skip):
            unknown.append(k)
    require(not unknown, f"neurons {unknown[:3]}: no such spiking neuron parameter in the converted model (keys look "
            f"like '<encoder path>.theta'; same model, spiking level and blocks?)")
    for path, d in acts.items():
        require(set(d) == set(_ACT_KEYS), f"neurons: few-spike activation {path!r} needs all of {list(_ACT_KEYS)}, "
                f"got {sorted(d)}")
        m = modules[path]
        require(d["T"].numel() == m.steps and d["domain"].numel() == 2,
                f"neurons: few-spike activation {path!r} has K = {m.steps}, given {d['T'].numel()} steps")
        m.set_neuron(d["T"], d["h"], d["d"], tuple(d["domain"].tolist()), {"given": True})


def freeze_quantisation_aware(net: nn.Module, steps: int | None = None, *, spiking: str | None = None,
                               coding: str = "rate", coding_steps: int | None = None, blocks=None,
                               inplace: bool = False) -> nn.Module:
    """The spiking model of a (fine-tuned) quantisation-aware model: learned thresholds frozen into the IF
    neurons, the few-spike neurons without their straight-through gradient (eval mode).

    The settings, where given, must be the ones the model was made with (``steps``, ``spiking``,
    ``coding="rate"``, ``coding_steps``, ``blocks``): a different T or level would not be the model that
    was trained.
    """
    from spikevit.nn.qcfs import unwrap_straight_through

    info = getattr(net, "sit_conversion", None) or {}
    require(isinstance(net, nn.Module) and info.get("quantisation_aware"),
            "not a quantisation-aware model (make one with spikevit.conversion.quantisation_aware)")
    made = {"steps": info["steps"], "spiking": info["spiking"], "coding": "rate", "coding_steps": info["coding_steps"]}
    asked = {"steps": steps, "spiking": spiking, "coding": coding,
             "coding_steps": coding_steps if coding_steps is not None else steps}
    bad = {k: v for k, v in asked.items() if v is not None and v != made[k]}
    if blocks is not None and sorted(_select_blocks(info["attention_blocks"], blocks)) != info["blocks"]:
        bad["blocks"] = blocks
    require(not bad, f"this model was fine-tuned quantisation-aware with {made} (blocks {info['blocks']}); "
            f"converting it with {bad} would not be the model that was trained: use the same settings, or "
            "convert the plain ANN (ann_state_dict) with calibration=")
    out = net if inplace else copy.deepcopy(net)
    for m in out.modules():
        if isinstance(m, SpikeEncoder):
            m.freeze()
    unwrap_straight_through(out)
    out.sit_conversion = {**info, "quantisation_aware": False, "thresholds": "learned"}
    if hasattr(out, "qcfs_ann_keys"):
        del out.qcfs_ann_keys
    return out.eval()


def _activation_steps(acts: list[str], activation_steps: int | None, steps: int) -> int:
    """K of the few-spike activations: ``activation_steps`` if given, else ``steps`` when every activation
    has a fit with that K, else the smallest fitted K above ``steps`` (else the largest below)."""
    from spikevit.conversion.params import available

    if activation_steps is not None:
        return activation_steps
    common = set.intersection(*(set(available(a)) for a in acts))
    if steps in common or not common:
        return steps
    above = sorted(k for k in common if k > steps)
    return above[0] if above else max(common)


def _spike_code_layers(root: nn.Module, coding: str, steps: int, prefix: str, device) -> int:
    """Every Linear / Conv (and explicit MHA input projection) under ``root`` gets spike-coded input."""
    n = 0
    for name, mod in list(root.named_modules()):
        if not name:
            continue
        label = f"{prefix}.{name}" if prefix else name
        if isinstance(mod, ExplicitMultiheadAttention) and mod.in_encoder is None:
            mod.in_encoder = SpikeEncoder(coding, steps, -1, f"{label}.in_proj").to(device)
            n += 1
        elif isinstance(mod, nn.Linear):
            _set_child(root, name, SpikingLinear(mod, SpikeEncoder(coding, steps, -1, label).to(device)))
            n += 1
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _set_child(root, name, SpikingConv(mod, SpikeEncoder(coding, steps, 1, label).to(device)))
            n += 1
    return n


def _calibration_batches(calibration, max_batches: int) -> list[torch.Tensor]:
    """Model inputs for calibration: a tensor ``[B, *]`` or the inputs of a DataLoader's first batches."""
    require(isinstance(max_batches, int) and max_batches >= 1,
            f"calibration_batches must be an integer >= 1, got {max_batches!r}")
    if isinstance(calibration, torch.Tensor):
        batches = [calibration]
    else:
        try:
            it = iter(calibration)
        except TypeError:
            raise SpikevitError(f"calibration must be a tensor of model inputs or a DataLoader, got "
                                f"{type(calibration).__name__}") from None
        batches = []
        for item in it:
            x = item[0] if isinstance(item, (tuple, list)) else item
            require(isinstance(x, torch.Tensor), f"calibration batches must hold tensors, got {type(x).__name__}")
            batches.append(x)
            if len(batches) >= max_batches:
                break
    for x in batches:
        require(x.is_floating_point() and x.dim() >= 2 and x.shape[0] >= 1,
                f"calibration inputs must be a float tensor [B, ...] with B >= 1, got {x.dtype} {tuple(x.shape)}")
        require(bool(torch.isfinite(x).all()), f"calibration inputs {tuple(x.shape)} hold NaN or infinite values")
    require(bool(batches), "calibration holds no batches")
    return batches


@torch.no_grad()
def calibrate(net: nn.Module, batches: list[torch.Tensor], activation_fit: str = "range") -> dict:
    """Run ``net`` on the calibration inputs with every :class:`SpikeEncoder` that has no thresholds yet
    passing values through and recording their range; then set those encoders' per-channel thresholds.
    Encoders with thresholds (given to :func:`convert`) keep them and code their inputs meanwhile.
    Few-spike activations not fitted yet record their inputs too and are fitted to them
    (:func:`spikevit.conversion.fitting.fit_activations` with ``activation_fit``); returns what that measured."""
    from spikevit.conversion.fitting import fit_activations

    encoders = [m for m in net.modules() if isinstance(m, SpikeEncoder) and not m.calibrated]
    encoders += [m for m in net.modules() if isinstance(m, FewSpikeActivation) and m.calibration is None
                 and activation_fit != "shipped"]
    p = next(net.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was = net.training
    net.eval()
    for e in encoders:
        e.calibrating = True
    try:
        for x in batches:
            try:
                net(x.to(device))
            except SpikevitError as exc:
                raise SpikevitError(f"calibration inputs of shape {tuple(x.shape)} do not fit the model: {exc}") from None
            except (RuntimeError, ValueError, IndexError) as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SpikevitError(f"calibration inputs of shape {tuple(x.shape)} do not fit the model: {msg}") from None
    finally:
        for e in encoders:
            e.calibrating = False
        net.train(was)
    for e in encoders:
        if isinstance(e, SpikeEncoder) and e._amax is not None:
            e.finish_calibration()
    for m in net.modules():           # layers fed by a few-spike activation's own spikes need no encoder
        if isinstance(m, (SpikingLinear, SpikingConv)) and m.encoder is not None and not m.encoder.calibrated:
            m.encoder = None
    return fit_activations(net, activation_fit)


def _convert_activations(root: nn.Module, acts: list[str], steps: int, hand_over: bool = False) -> int:
    n = 0
    p = next(root.parameters(), None)
    for name, mod in list(root.named_modules()):
        for act in acts:
            if type(mod) is ACTIVATIONS[act] and name:
                if act == "gelu" and getattr(mod, "approximate", "none") != "none":
                    continue
                fs = FewSpikeActivation(act, steps)
                fs.hand_over_spikes = hand_over
                if p is not None:
                    fs = fs.to(p.device)
                _set_child(root, name, fs)
                n += 1
    return n
