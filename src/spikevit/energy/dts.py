"""DTS-SNN energy model (Sec. IV-E, Table V): compute from MACs / ACs / zero checks, memory from
membrane-potential reads and writes, and the same topology as a non-spiking network.

Inputs are per-inference counts measured on a model (see :mod:`spikevit.dts.metrics`):

* :class:`SynapticOps` per dot-product layer: ``dense_macs`` per time step (DNN FLOPs_l), the number of
  executed ``steps``, ``sops`` (accumulates actually needed: S_l x DNN FLOPs_l, with S_l the input
  spikes per neuron over all executed steps), ``zero_checks`` (one per input activation per executed
  step) and ``kind``: ``"encoding"`` (real-valued input, MACs, computed once because the directly
  encoded image is the same at every step) or ``"spiking"``.  ``ann_macs`` is the layer's cost in the
  non-spiking counterpart (e.g. softmax attention Q K^T, A V instead of Q (K^T V)).
* :class:`MembraneOps` per LIF layer: ``neurons`` per step and executed ``steps`` T_l.

Energy, with ``em`` an :class:`~spikevit.energy.EnergyModel` (default ``dts45nm``)::

    SNN compute = sum_enc dense_macs e_mac + sum_spk (sops e_ac + zero_checks e_zero_check)
    SNN memory  = sum_LIF 2 neurons T_l e_mem        (membrane read + write per executed step; skipped
                                                      steps are zero-gated, weight-stationary dataflow)
    ANN compute = sum ann_macs e_mac                 (one dense pass)
    ANN memory  = sum_LIF 2 neurons e_mem            (the activation at the same positions: write + read)

Weight traffic is left out (weight-stationary, amortised over inferences), as in the paper's argument
that membrane accesses dominate.  These are modelling assumptions; the paper does not publish its
memory model, so absolute ratios differ from Table V.
"""
from __future__ import annotations

from dataclasses import dataclass

from spikevit.energy.models import EnergyModel, get_energy_model
from spikevit.errors import require


@dataclass
class SynapticOps:
    name: str
    kind: str                 # "encoding" | "spiking"
    dense_macs: float         # per inference per time step
    steps: float              # executed time steps
    sops: float = 0.0         # accumulates per inference (spiking layers)
    zero_checks: float = 0.0  # per inference
    ann_macs: float | None = None
    group: str = ""


@dataclass
class MembraneOps:
    name: str
    neurons: float            # per inference per step
    steps: float              # executed time steps T_l
    group: str = ""


def snn_energy(synaptic: list[SynapticOps], membranes: list[MembraneOps],
               em: EnergyModel | str | None = None) -> dict:
    """Compute / memory / total energy (J per inference) and the operation counts behind them."""
    em = get_energy_model(em) if isinstance(em, str) else (em or get_energy_model("dts45nm"))
    for s in synaptic:
        require(s.kind in ("encoding", "spiking"), f"layer {s.name}: unknown kind {s.kind!r}")
    macs = sum(s.dense_macs for s in synaptic if s.kind == "encoding")
    acs = sum(s.sops for s in synaptic if s.kind == "spiking")
    checks = sum(s.zero_checks for s in synaptic if s.kind == "spiking")
    mem_acc = sum(2.0 * m.neurons * m.steps for m in membranes)
    compute = macs * em.e_mac + acs * em.e_ac + checks * em.e_zero_check
    memory = mem_acc * em.e_mem
    return {"compute_J": compute, "memory_J": memory, "total_J": compute + memory, "macs": macs, "acs": acs,
            "zero_checks": checks, "membrane_accesses": mem_acc, "energy_model": em.name}


def ann_energy(synaptic: list[SynapticOps], membranes: list[MembraneOps],
               em: EnergyModel | str | None = None) -> dict:
    """The same topology as a non-spiking network: every layer dense MACs once, activations read + written."""
    em = get_energy_model(em) if isinstance(em, str) else (em or get_energy_model("dts45nm"))
    macs = sum(s.dense_macs if s.ann_macs is None else s.ann_macs for s in synaptic)
    acts = sum(2.0 * m.neurons for m in membranes)
    compute, memory = macs * em.e_mac, acts * em.e_mem
    return {"compute_J": compute, "memory_J": memory, "total_J": compute + memory, "macs": macs, "acs": 0.0,
            "zero_checks": 0.0, "membrane_accesses": acts, "energy_model": em.name}


def normalised_energy(energies: dict[str, dict], reference: str) -> list[dict]:
    """Table V rows: each entry's compute / memory / total energy divided by the ``reference`` entry's."""
    require(reference in energies, f"reference {reference!r} not among {sorted(energies)}")
    ref = energies[reference]
    rows = []
    for name, e in energies.items():
        rows.append({"model": name, "norm_compute": e["compute_J"] / ref["compute_J"],
                     "norm_memory": e["memory_J"] / ref["memory_J"], "norm_total": e["total_J"] / ref["total_J"],
                     "compute_uJ": e["compute_J"] * 1e6, "memory_uJ": e["memory_J"] * 1e6,
                     "total_uJ": e["total_J"] * 1e6})
    return rows
