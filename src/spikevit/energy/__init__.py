"""One FLOPs / spikes / energy accounting module for every method.

Each paper's constants are an :class:`EnergyModel` in :data:`ENERGY_MODELS`;
every method reports through the functions here, so "energy" means the same
thing everywhere and the constants are swappable.
"""
from spikevit.energy.models import ENERGY_MODELS, EnergyModel, get_energy_model
from spikevit.energy.counting import LayerOps, count_layer_ops, snn_flops
from spikevit.energy.lca import lca_inference_flops, lca_training_flops, lca_workload

__all__ = [
    "ENERGY_MODELS", "EnergyModel", "get_energy_model", "LayerOps", "count_layer_ops",
    "snn_flops", "lca_inference_flops", "lca_training_flops", "lca_workload",
]
