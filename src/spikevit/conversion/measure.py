"""Spike and operation counts of a converted model (an adapter over :func:`spikevit.energy.profile`),
accuracy/loss evaluation, and the spiking-softmax error measures.

:class:`SpikeCounter` opens one :func:`spikevit.energy.profiling` session on a (converted) model and
reports, per layer, from the operator-level profile:

* spiking neuron layers (:class:`SpikingSoftmax`, :class:`FewSpikeActivation`): spikes over all time
  steps and neurons (one neuron per input element);
* every product (linear / conv layers, functional matmuls): dense MACs and whether an operand is the
  output of a spiking layer (the profile tracks which spiking module produced each operand, through views,
  Dropout and Identity);
* the attention products of every :class:`SpikingAttention`: ``QK^T`` (``.qk``) and ``A V`` (``.av``, the
  product whose operand comes from a softmax, spiking when the block is converted).

``layers()`` gives the per-sample list that :func:`spikevit.energy.sit.sit_energy` turns into energy;
``profile`` is the underlying :class:`spikevit.energy.Profile` (operand kinds, ACs / MACs, purity).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Self

import torch
from torch import nn

from spikevit.conversion.attention import SpikingAttention
from spikevit.energy.profile import profiling
from spikevit.errors import require
from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax
from spikevit.train.evaluate import evaluate


def _neuron_kind(m: nn.Module) -> str:
    if isinstance(m, SpikingSoftmax):
        return f"SI-exp softmax (K={m.steps})"
    if isinstance(m, FewSpikeActivation):
        return f"few-spike {m.function} (K={m.steps})"
    return type(m).__name__


class SpikeCounter:
    """Context manager: ``with SpikeCounter(model) as sc: model(x)``; then ``sc.layers()``, ``sc.spikes()``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._session = None
        self.profile = None
        self._modules = dict(model.named_modules())
        self._attention = [n for n, m in self._modules.items() if isinstance(m, SpikingAttention)]

    @property
    def samples(self) -> int:
        return self.profile.samples if self.profile is not None else 0

    def __enter__(self) -> Self:
        self._session = profiling(self.model)
        self.profile = self._session.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._session is not None:
            self._session.__exit__(*exc)
            self._session = None

    # -- results -------------------------------------------------------------------------------------------
    @property
    def neuron_stats(self) -> OrderedDict[str, dict]:
        out: OrderedDict[str, dict] = OrderedDict()
        for name, s in (self.profile.spiking.items() if self.profile is not None else ()):
            m = self._modules.get(name)
            out[name] = {"layer": name, "kind": _neuron_kind(m) if m is not None else s.kind, "time_steps": s.steps,
                         "spikes": s.spikes,
                         "neurons": s.neurons}
        return out

    def spikes(self) -> list[dict]:
        """Per spiking layer: neurons and spikes per sample, spikes per neuron (all time steps)."""
        n = max(self.samples, 1)
        return [{"layer": r["layer"], "kind": r["kind"], "time_steps": r["time_steps"],
                 "neurons_per_sample": r["neurons"] / n, "spikes_per_sample": r["spikes"] / n,
                 "spikes_per_neuron": r["spikes"] / r["neurons"] if r["neurons"] else 0.0}
                for r in self.neuron_stats.values()]

    def _attention_of(self, module: str) -> str | None:
        for a in self._attention:
            if module == a or module.startswith(a + "."):
                return a
        return None

    @property
    def ops(self) -> OrderedDict[str, dict]:
        """Per layer (summed over calls): ``name``, ``kind``, dense ``macs`` and the spiking ``source``."""
        out: OrderedDict[str, dict] = OrderedDict()
        if self.profile is None:
            return out
        stats = self.profile.spiking
        for r in self.profile.ops:
            mod = self._modules.get(r.module)
            attn = self._attention_of(r.module)
            if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                name, kind = r.module, type(mod).__name__
            elif attn is not None:
                from_softmax = any(s is not None and (s.endswith(":softmax") or s in stats) for s in r.sources) \
                    or r.part == "attn@v"
                part = "av" if from_softmax else "qk"
                name, kind = f"{attn}.{part}", f"attention {part}"
            else:
                name, kind = f"{r.module}:{r.op}" if r.module else r.op, r.op
            rec = out.setdefault(name, {"name": name, "kind": kind, "macs": 0, "source": None})
            rec["macs"] += r.dense
            src = next((s for s in r.sources if s is not None and s in stats), None)
            if src is not None:
                rec["source"] = src
        return out

    def layers(self) -> list[dict]:
        """Per-sample layer list for :func:`spikevit.energy.sit.sit_energy`."""
        n = max(self.samples, 1)
        stats = self.neuron_stats
        out = []
        for r in self.ops.values():
            src = stats.get(r["source"]) if r["source"] else None
            row = {"name": r["name"], "kind": r["kind"], "macs": r["macs"] / n, "spiking": src is not None}
            if src is not None:
                row.update(spikes=src["spikes"] / n, neurons=src["neurons"] / n, source=r["source"])
            out.append(row)
        return out


def evaluate_classifier(model: nn.Module, loader, device: torch.device, counter: SpikeCounter | None = None,
                        max_batches: int | None = None, desc: str = "eval") -> dict:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (the shared
    :func:`spikevit.train.evaluate.evaluate`)."""
    res = evaluate(model, loader, device, max_batches=max_batches, desc=desc)
    require(res["samples"] > 0, "evaluation saw no samples")
    return {"acc1": res["acc1"], "loss": res["loss"], "samples": res["samples"]}


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
    from spikevit.conversion.attention import attention_modules

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
