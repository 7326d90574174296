"""Evaluation of a (DTS) Spikformer: accuracy, T_l per layer, T_avg (Eq. 3), spiking activity, SOPs and
energy (through :mod:`spikevit.energy.dts`), measured in one pass over a loader with forward hooks.

Definitions (per inference, averaged over the evaluated images):

* T_l: kept time steps of LIF layer l (fixed-T models: T); T_avg = mean_l T_l.
* S_l: spikes per neuron of layer l over all its executed steps.
* SA (%): 100 * all spikes / (all LIF neurons * Tmax), the spiking activity of Tables III-IV (with
  this normalisation Table IV's SOPs / SA pairs are consistent between Tmax = 4 and 6).
* SOPs: accumulates of every spiking dot-product layer, S_in * DNN FLOPs_l (Sec. IV-E) for convs and
  the classifier, exact pair counts for the spike-by-spike products of Q (K^T V).
Masked steps are skipped (eval mode), so all counts are those of the dynamic-time-step network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spikevit.energy.dts import MembraneOps, SynapticOps, ann_energy, snn_energy
from spikevit.errors import require
from spikevit.functional.dts import average_time_steps
from spikevit.nn.dtss import DTSSLIF
from spikevit.runtime import progress


@dataclass
class _Acc:
    """Running sums for one layer (per-batch quantities summed; divided by samples at the end)."""

    name: str
    group: str
    kind: str
    per_step_macs: float = 0.0
    ann_macs: float | None = None
    input_neurons: float = 0.0     # per sample per step
    steps: float = 0.0             # executed steps (last seen; constant in eval)
    nonzero: float = 0.0           # summed over batches
    sops: float = 0.0              # summed over batches (exact counts) or derived at the end
    exact_sops: bool = False
    spikes: float = 0.0


@dataclass
class DTSMeasurement:
    samples: int
    tmax: int
    acc1: float
    loss: float
    lif: list[dict] = field(default_factory=list)
    synaptic: list[SynapticOps] = field(default_factory=list)
    membranes: list[MembraneOps] = field(default_factory=list)

    @property
    def t_avg(self) -> float:
        return average_time_steps([r["T_l"] for r in self.lif])

    @property
    def spiking_activity(self) -> float:
        neurons = sum(r["neurons"] for r in self.lif)
        return 100.0 * sum(r["spikes"] for r in self.lif) / (neurons * self.tmax)

    @property
    def firing_rate(self) -> float:
        """Spikes per neuron per executed step, over all LIF layers (%)."""
        den = sum(r["neurons"] * r["T_l"] for r in self.lif)
        return 100.0 * sum(r["spikes"] for r in self.lif) / den if den else 0.0

    @property
    def sops(self) -> float:
        return sum(s.sops for s in self.synaptic if s.kind == "spiking")

    def group_steps(self) -> dict[str, float]:
        groups: dict[str, list[int]] = {}
        for r in self.lif:
            groups.setdefault(r["group"], []).append(r["T_l"])
        return {g: sum(v) / len(v) for g, v in groups.items()}

    def energy(self, em=None) -> dict[str, dict]:
        return {"snn": snn_energy(self.synaptic, self.membranes, em),
                "ann": ann_energy(self.synaptic, self.membranes, em)}

    def summary(self, em=None) -> dict:
        e = self.energy(em)
        return {"acc1": self.acc1, "loss": self.loss, "samples": self.samples, "tmax": self.tmax,
                "T_avg": self.t_avg, "T_by_group": self.group_steps(), "SA_percent": self.spiking_activity,
                "firing_rate_percent": self.firing_rate, "SOPs_M": self.sops / 1e6,
                "encoding_MMACs": e["snn"]["macs"] / 1e6,
                "energy_uJ": {k: {kk[:-2] + "_uJ": v * 1e6 for kk, v in d.items() if kk.endswith("_J")}
                              for k, d in e.items()}}

    def layer_rows(self) -> list[dict]:
        return [{"layer": r["name"], "group": r["group"], "T_l": r["T_l"], "neurons": int(r["neurons"]),
                 "spikes_per_neuron": r["spikes"] / r["neurons"] if r["neurons"] else 0.0,
                 "rate_per_step_percent": 100.0 * r["spikes"] / (r["neurons"] * r["T_l"]) if r["T_l"] else 0.0}
                for r in self.lif]

    def synaptic_rows(self) -> list[dict]:
        return [{"layer": s.name, "group": s.group, "kind": s.kind, "steps": s.steps,
                 "dense_MMACs_per_step": s.dense_macs / 1e6, "SOPs_M": s.sops / 1e6} for s in self.synaptic]


def _prod(shape) -> int:
    return int(math.prod(shape)) if len(shape) else 1


@torch.no_grad()
def measure(model: nn.Module, loader, device: torch.device | str = "cpu", max_batches: int | None = None,
            desc: str = "measure") -> DTSMeasurement:
    """One eval pass (masked steps skipped) collecting accuracy, T_l, spikes and operation counts."""
    from spikevit.models.spikformer import ConvBN, Spikformer, SpikeAttention

    require(isinstance(model, Spikformer), "DTS measurements need a Spikformer model")
    device = torch.device(device)
    model.eval().to(device)
    model.set_skip_masked(True)
    accs: dict[str, _Acc] = {}
    lif_names = {m: n for n, m in model.named_modules() if isinstance(m, DTSSLIF)}
    handles = []

    def on_lif(m, args, out):
        name = lif_names[m]
        a = accs.setdefault("lif:" + name, _Acc(name, m.group, "lif"))
        a.input_neurons = _prod(args[0].shape[2:])
        a.steps = out.shape[0]
        a.spikes += float((out != 0).sum())

    def on_conv(name):
        def hook(m, args, out):
            s = args[0]
            steps = s.shape[0]
            conv = m.conv
            a = accs.setdefault(name, _Acc(name, m.group, "spiking"))
            spatial = _prod(s.shape[3:])
            a.per_step_macs = conv.out_channels * spatial * (conv.in_channels // conv.groups) * _prod(conv.kernel_size)
            a.input_neurons = _prod(s.shape[2:])
            a.steps = steps
            a.nonzero += float((s != 0).sum())
        return hook

    def on_attn(name):
        def hook(m, args, out):
            q, k, v = args[:3]
            steps = min(q.shape[0], k.shape[0], v.shape[0])
            _, b, dim, n = q.shape
            d = dim // m.heads
            a = accs.setdefault(name, _Acc(name, m.group, "spiking", exact_sops=True))
            a.per_step_macs = 2.0 * n * dim * d          # K^T V and Q (K^T V), per head summed
            a.ann_macs = 2.0 * n * n * dim               # softmax attention: Q K^T and A V
            a.input_neurons = 3 * dim * n
            a.steps = steps

            def heads(x):
                return (x[:steps] != 0).reshape(steps, b, m.heads, d, n).float()
            qh, kh, vh = heads(q), heads(k), heads(v)
            # K^T V: a product is needed only where both spikes are 1; Q M: one accumulate per Q spike and column
            a.sops += float((kh.sum(3) * vh.sum(3)).sum()) + float(qh.sum()) * d
            a.nonzero += float(qh.sum() + kh.sum() + vh.sum())
        return hook

    def on_encoding(m, args, out):
        a = accs.setdefault("sps.enc.0", _Acc("sps.enc.0", "encoding", "encoding"))
        x = args[0]
        a.per_step_macs = _prod(out.shape[1:]) * (m.in_channels // m.groups) * _prod(m.kernel_size)
        a.input_neurons = _prod(x.shape[1:])
        a.steps = 1

    def on_head(m, args, out):
        s = args[0]  # [T_h, B, D]: token-averaged spikes of the head LIF
        a = accs.setdefault("head", _Acc("head", "head", "spiking"))
        a.per_step_macs = m.in_features * m.out_features
        a.input_neurons = m.in_features
        a.steps = s.shape[0]
        a.nonzero += float(s.sum())  # = spikes / N: spikes per token-averaged input neuron

    for name, mod in model.named_modules():
        if isinstance(mod, DTSSLIF):
            handles.append(mod.register_forward_hook(on_lif))
        elif isinstance(mod, ConvBN):
            handles.append(mod.register_forward_hook(on_conv(name)))
        elif isinstance(mod, SpikeAttention):
            handles.append(mod.register_forward_hook(on_attn(name)))
    handles.append(model.sps.enc[0].register_forward_hook(on_encoding))
    handles.append(model.head.register_forward_hook(on_head))
    loss_sum, correct, samples = 0.0, 0, 0
    try:
        for i, (x, y) in enumerate(progress(loader, desc=desc, leave=False)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            samples += len(y)
    finally:
        for h in handles:
            h.remove()
    require(samples > 0, "no samples to measure")
    return _finish(model, accs, samples, 100.0 * correct / samples, loss_sum / samples)


def _finish(model, accs: dict[str, _Acc], samples: int, acc1: float, loss: float) -> DTSMeasurement:
    meas = DTSMeasurement(samples, model.tmax, acc1, loss)
    for key, a in accs.items():
        if a.kind == "lif":
            meas.lif.append({"name": a.name, "group": a.group, "T_l": int(a.steps), "neurons": a.input_neurons,
                             "spikes": a.spikes / samples})
            meas.membranes.append(MembraneOps(a.name, a.input_neurons, a.steps, a.group))
            continue
        if a.kind == "encoding":
            meas.synaptic.append(SynapticOps(a.name, "encoding", a.per_step_macs, 1, group="sps"))
            continue
        rate = a.nonzero / samples / a.input_neurons          # S_in: input spikes per neuron, all steps
        sops = a.sops / samples if a.exact_sops else rate * a.per_step_macs
        meas.synaptic.append(SynapticOps(a.name, "spiking", a.per_step_macs, a.steps, sops,
                                         a.input_neurons * a.steps, a.ann_macs, a.group))
    return meas
