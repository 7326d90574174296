"""One FLOPs / spikes / energy accounting module for every method.

Each paper's constants are an :class:`EnergyModel` in :data:`ENERGY_MODELS`; operations, spikes and
energy of any model come from one operator-level engine, :func:`profile` (rules in
:mod:`spikevit.energy.rules`), so "energy" means the same thing everywhere and the constants are
swappable.  The LCA closed-form workload (ViT-LCA Eq. 8-10) is :func:`lca_workload`.
"""
from spikevit.energy.lca import lca_inference_flops, lca_training_flops, lca_workload
from spikevit.energy.models import ENERGY_MODELS, EnergyModel, get_energy_model
from spikevit.energy.profile import OpRecord, Profile, SpikeRecord, merge, profile, profiling, snn_flops

__all__ = [
    "ENERGY_MODELS",
    "EnergyModel",
    "OpRecord",
    "Profile",
    "SpikeRecord",
    "get_energy_model",
    "lca_inference_flops",
    "lca_training_flops",
    "lca_workload",
    "merge",
    "profile",
    "profiling",
    "snn_flops",
]
