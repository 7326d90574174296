"""Spike counting with forward hooks, accuracy/loss evaluation, and the spiking-softmax error measures.

:class:`SpikeCounter` registers forward hooks on a (converted) model and accumulates, per layer:

* spiking neuron layers (:class:`SpikingSoftmax`, :class:`FewSpikeActivation`): spikes over all time
  steps and neurons (one neuron per input element);
* linear / conv layers: dense MACs (the rule table of :mod:`spikevit.energy.counting`) and whether
  their input is the output of a spiking layer (tensor identity, through Dropout/Identity);
* attention products of every :class:`SpikingAttention`: ``QK^T`` (analog) and ``A V`` (spiking when
  the block is converted).

``layers()`` gives the per-sample list that :func:`spikevit.energy.sit.sit_energy` turns into energy.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.conversion.converter import SpikingAttention
from spikevit.energy.counting import OP_RULES
from spikevit.errors import require
from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax
from spikevit.runtime import progress


class SpikeCounter:
    """Context manager: ``with SpikeCounter(model) as sc: model(x)``; then ``sc.layers()``, ``sc.spikes()``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.handles = []
        self.samples = 0
        self.neuron_stats: "OrderedDict[str, dict]" = OrderedDict()
        self.ops: "OrderedDict[str, dict]" = OrderedDict()
        self._spiking_outputs: list[tuple[torch.Tensor, str]] = []

    # -- hooks ---------------------------------------------------------------------------------------------
    def _source(self, x) -> str | None:
        for t, name in self._spiking_outputs:
            if x is t:
                return name
        return None

    def _neuron_hook(self, name, kind):
        def hook(m, args, out):
            rec = self.neuron_stats.setdefault(name, {"layer": name, "kind": kind, "time_steps": m.steps,
                                                      "spikes": 0.0, "neurons": 0})
            rec["spikes"] += m.last_spikes
            rec["neurons"] += m.last_neurons
            if isinstance(m, FewSpikeActivation):
                self._spiking_outputs.append((out, name))
        return hook

    def _passthrough_hook(self, m, args, out):
        src = self._source(args[0]) if args else None
        if src is not None:
            self._spiking_outputs.append((out, src))

    def _layer_hook(self, name, rule):
        def hook(m, args, out):
            x = args[0]
            rec = self.ops.setdefault(name, {"name": name, "kind": type(m).__name__, "macs": 0, "source": None})
            rec["macs"] += int(rule(m, x, out))
            src = self._source(x)
            if src is not None:
                rec["source"] = src
        return hook

    def _attention_hook(self, name):
        def hook(m, args, out):
            for part in ("qk", "av"):
                rec = self.ops.setdefault(f"{name}.{part}", {"name": f"{name}.{part}", "kind": f"attention {part}",
                                                             "macs": 0, "source": None})
                rec["macs"] += int(m.macs[part])
                if part == "av" and m.converted:
                    rec["source"] = _module_name(self.model, m.spiking_softmax)
        return hook

    def _root_pre_hook(self, m, args, kwargs=None):
        self._spiking_outputs.clear()
        if args and isinstance(args[0], torch.Tensor):
            self.samples += int(args[0].shape[0])

    def __enter__(self) -> "SpikeCounter":
        for name, m in self.model.named_modules():
            if isinstance(m, SpikingSoftmax):
                self.handles.append(m.register_forward_hook(self._neuron_hook(name, f"SI-exp softmax (K={m.steps})")))
            elif isinstance(m, FewSpikeActivation):
                self.handles.append(m.register_forward_hook(self._neuron_hook(name, f"few-spike {m.function} (K={m.steps})")))
            elif isinstance(m, (nn.Dropout, nn.Identity)):
                self.handles.append(m.register_forward_hook(self._passthrough_hook))
            elif isinstance(m, SpikingAttention):
                self.handles.append(m.register_forward_hook(self._attention_hook(name)))
            else:
                rule = next((r for t, r in OP_RULES.items() if type(m) is t), None)
                if rule is not None:
                    self.handles.append(m.register_forward_hook(self._layer_hook(name, rule)))
        self.handles.append(self.model.register_forward_pre_hook(self._root_pre_hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self._spiking_outputs.clear()

    # -- results -------------------------------------------------------------------------------------------
    def spikes(self) -> list[dict]:
        """Per spiking layer: neurons and spikes per sample, spikes per neuron (all time steps)."""
        n = max(self.samples, 1)
        return [{"layer": r["layer"], "kind": r["kind"], "time_steps": r["time_steps"],
                 "neurons_per_sample": r["neurons"] / n, "spikes_per_sample": r["spikes"] / n,
                 "spikes_per_neuron": r["spikes"] / r["neurons"] if r["neurons"] else 0.0}
                for r in self.neuron_stats.values()]

    def layers(self) -> list[dict]:
        """Per-sample layer list for :func:`spikevit.energy.sit.sit_energy`."""
        n = max(self.samples, 1)
        out = []
        for r in self.ops.values():
            src = self.neuron_stats.get(r["source"]) if r["source"] else None
            row = {"name": r["name"], "kind": r["kind"], "macs": r["macs"] / n, "spiking": src is not None}
            if src is not None:
                row.update(spikes=src["spikes"] / n, neurons=src["neurons"] / n, source=r["source"])
            out.append(row)
        return out


def _module_name(root: nn.Module, target: nn.Module) -> str | None:
    for name, m in root.named_modules():
        if m is target:
            return name
    return None


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader, device: torch.device, counter: SpikeCounter | None = None,
                        max_batches: int | None = None, desc: str = "eval") -> dict:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` over ``loader``."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for i, (x, y) in enumerate(progress(loader, desc=desc, leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += int(y.numel())
    require(total > 0, "evaluation saw no samples")
    return {"acc1": 100.0 * correct / total, "loss": loss / total, "samples": total}


# ----------------------------------------------------------------------------------------------------------
# spiking-softmax error
# ----------------------------------------------------------------------------------------------------------
def softmax_error(logits: torch.Tensor, steps: int, dim: int = -1, squeeze: str | None = None,
                  norm_steps: int | None = None) -> dict:
    """Error of :class:`SpikingSoftmax` against ``softmax`` on given logits (``[*]``, rows along ``dim``).

    ``mse``: mean over all elements of (spiking - exact)^2; ``max_abs``: largest elementwise error;
    ``rel_rmse``: sqrt(sum (spiking - exact)^2 / sum exact^2); ``mean_row_l1``: mean over rows of
    sum_i |spiking_i - exact_i| (total-variation distance x 2).  With a squeeze, the exact reference is
    ``softmax(squeeze(logits))`` (the ANN the conversion starts from).
    """
    x = logits.float()
    ref_in = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}.get(squeeze, lambda t: t)(x)
    exact = torch.softmax(ref_in, dim)
    spk = SpikingSoftmax(steps, dim=dim, squeeze=squeeze, norm_steps=norm_steps)(x)
    err = spk - exact
    return {"K": steps, "mse": float(err.pow(2).mean()), "max_abs": float(err.abs().max()),
            "rel_rmse": float(err.pow(2).sum().sqrt() / exact.pow(2).sum().sqrt()),
            "mean_row_l1": float(err.abs().sum(dim).mean()),
            "fraction_inputs_outside_[-1,1]": float(((ref_in < -1) | (ref_in > 1)).float().mean())}


def softmax_error_sweep(steps_list: list[int], row_lengths: list[int], rows: int = 2000, seed: int = 0,
                        low: float = -1.0, high: float = 1.0) -> list[dict]:
    """Spiking-softmax error vs K on i.i.d. uniform logits in ``[low, high]`` (the paper's Fig. 7 setting).

    For each row length n: ``rows`` rows of n logits, ``x ~ U[low, high]``; see :func:`softmax_error`.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in row_lengths:
        x = low + (high - low) * torch.rand(rows, n, generator=g)
        for K in steps_list:
            out.append({"row_length": n, **softmax_error(x, K)})
    return out


def capture_attention_logits(model: nn.Module, loader, device, max_batches: int = 1,
                             max_rows: int = 20000) -> torch.Tensor:
    """Softmax inputs of every attention block of a converted model (run on ``max_batches`` batches).

    Returns ``[R, N]`` rows (at most ``max_rows``, evenly subsampled) of the pre-softmax attention
    logits (after any squeeze the model itself applies, before the spiking softmax's own squeeze).
    """
    from spikevit.conversion.converter import attention_modules

    mods = attention_modules(model)
    require(bool(mods), "capture_attention_logits needs a converted model (convert(model, blocks=0) is enough)")
    captured: list[torch.Tensor] = []
    originals = []
    for m in mods:
        orig = m.apply_softmax

        def spy(x, dim, orig=orig):
            captured.append(x.detach().movedim(dim, -1).reshape(-1, x.shape[dim]).float().cpu())
            return orig(x, dim)

        originals.append((m, orig))
        m.apply_softmax = spy
    try:
        with torch.no_grad():
            model.eval()
            for i, (x, _) in enumerate(loader):
                if i >= max_batches:
                    break
                model(x.to(device))
    finally:
        for m, _ in originals:
            del m.apply_softmax          # back to the class method
    rows = torch.cat([c for c in captured if c.shape[-1] == captured[0].shape[-1]])
    if rows.shape[0] > max_rows:
        rows = rows[torch.linspace(0, rows.shape[0] - 1, max_rows).long()]
    return rows


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(float((a.double() - b.double()).pow(2).mean()))
