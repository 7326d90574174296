"""Evaluation of a (DTS) Spikformer: accuracy, T_l per layer, T_avg (Eq. 3), spiking activity, SOPs and
energy (through :mod:`spikevit.energy.dts`), measured in one pass over a loader by the shared
:func:`spikevit.train.evaluate.evaluate` under the operator-level profile (:func:`spikevit.energy.profile`).

Definitions (per inference, averaged over the evaluated images):

* T_l: kept time steps of LIF layer l (fixed-T models: T); T_avg = mean_l T_l.
* S_l: spikes per neuron of layer l over all its executed steps.
* SA (%): 100 * all spikes / (all LIF neurons * Tmax), the spiking activity of Tables III-IV (with
  this normalisation Table IV's SOPs / SA pairs are consistent between Tmax = 4 and 6).
* SOPs: the accumulates the profile counts for every product with a spike / graded operand (convs, the
  spike-by-spike products of Q (K^T V), the classifier on token-averaged spikes); zero checks: one per
  element of a spike / graded operand entering a product (:mod:`spikevit.energy.rules`).
* dense MACs per step (DNN FLOPs_l) come from one profiled pass in the masked form (all ``tmax`` steps).
Masked steps are skipped (eval mode), so all counts are those of the dynamic-time-step network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from spikevit.energy.dts import MembraneOps, SynapticOps, ann_energy, snn_energy
from spikevit.energy.profile import Profile, profile
from spikevit.errors import require
from spikevit.functional.dts import average_time_steps
from spikevit.nn.dtss import DTSSLIF
from spikevit.train.evaluate import evaluate


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


def _layer_of(name: str, modules: dict[str, nn.Module]) -> str:
    """A product inside ``X.conv`` of a :class:`ConvBN` belongs to layer ``X``."""
    from spikevit.models.spikformer import ConvBN

    parent, _, leaf = name.rpartition(".")
    return parent if leaf == "conv" and isinstance(modules.get(parent), ConvBN) else name


def _gate_arithmetic(name: str, modules: dict[str, nn.Module]) -> bool:
    """Products inside a DTSS-gated LIF compute its time mask from the gate parameters (a few multiplies,
    the same for every input): not a synaptic layer, left out of the DTS accounting."""
    parts = name.split(".")
    return any(isinstance(modules.get(".".join(parts[:i])), DTSSLIF) for i in range(1, len(parts) + 1))


def _layers(prof: Profile, modules: dict[str, nn.Module]) -> dict[str, dict]:
    """Per layer (forward order): dense MACs, ACs, zero checks (summed), the first product's shapes."""
    out: dict[str, dict] = {}
    for r in prof.ops:
        if _gate_arithmetic(r.module, modules):
            continue
        d = out.setdefault(_layer_of(r.module, modules), {"dense": 0, "macs": 0, "acs": 0, "zero_checks": 0,
                                                          "shapes": r.shapes})
        d["dense"] += r.dense
        d["macs"] += r.macs
        d["acs"] += r.acs
        d["zero_checks"] += r.zero_checks
    return out


def _first_batch(loader, device):
    x, _ = next(iter(loader))
    return x[:1].to(device)


def measure(model: nn.Module, loader, device=None, max_batches: int | None = None,
            desc: str = "measure") -> DTSMeasurement:
    """One eval pass (masked steps skipped) collecting accuracy, T_l, spikes and operation counts."""
    import torch

    from spikevit.models.spikformer import Spikformer

    require(isinstance(model, Spikformer), "DTS measurements need a Spikformer model")
    device = torch.device(device or "cpu")
    model.eval().to(device)
    # dense MACs per time step of every layer: one sample in the masked form (all tmax steps computed)
    model.set_skip_masked(False)
    try:
        reference = profile(model, _first_batch(loader, device))
    finally:
        model.set_skip_masked(True)
    res = evaluate(model, loader, device, max_batches=max_batches, profile=True, desc=desc)
    require(res["samples"] > 0, "no samples to measure")
    return from_profile(model, res["profile"], reference, res["samples"], res["acc1"], res["loss"])


def from_profile(model: nn.Module, prof: Profile, reference: Profile, samples: int, acc1: float,
                 loss: float) -> DTSMeasurement:
    """A :class:`DTSMeasurement` from the profile of the evaluated batches (``samples`` images) and the
    one-sample masked-form ``reference`` profile (dense MACs per step)."""
    from spikevit.models.spikformer import SpikeAttention

    modules = dict(model.named_modules())
    meas = DTSMeasurement(samples, model.tmax, acc1, loss)
    for name, rec in prof.spiking.items():
        m = modules.get(name)
        if not isinstance(m, DTSSLIF):
            continue
        neurons = rec.neurons / samples                     # per sample per step
        meas.lif.append({"name": name, "group": m.group, "T_l": int(rec.steps), "neurons": neurons,
                         "spikes": rec.spikes / samples})
        meas.membranes.append(MembraneOps(name, neurons, rec.steps, m.group))
    run, ref = _layers(prof, modules), _layers(reference, modules)
    for name, full in ref.items():
        got = run.get(name, {"dense": 0, "macs": 0, "acs": 0, "zero_checks": 0})
        m = modules.get(name)
        group = getattr(m, "group", "") or ("head" if name == "head" else "")
        if full["macs"] and not full["acs"]:                # analog input: the encoding layer, computed once
            meas.synaptic.append(SynapticOps(name, "encoding", full["dense"], 1, group=group or "sps"))
            continue
        per_step = full["dense"] / model.tmax
        steps = got["dense"] / samples / per_step if per_step else 0.0
        ann = None
        if isinstance(m, SpikeAttention):                   # softmax attention Q K^T, A V: 2 N^2 D per step
            d, n = full["shapes"][0][-2], full["shapes"][0][-1]   # first product K^T V: [.., d, N] @ [.., N, d]
            ann = per_step * n / d
        meas.synaptic.append(SynapticOps(name, "spiking", per_step, round(steps, 6), got["acs"] / samples,
                                         got["zero_checks"] / samples, ann, group))
    return meas
