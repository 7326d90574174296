"""spikevit: vision transformers and CNN features to spiking, neuromorphic form.

Sub-packages (import what you need):
  spikevit.lca         exemplar LCA decoder (ViT-LCA / D-SELD)
  spikevit.nn          spiking modules (LIF, DTSS gate, SpikingSoftmax)
  spikevit.conversion  SIT ANN-to-SNN conversion
  spikevit.energy      one FLOPs / spikes / energy accounting module
"""
from spikevit.errors import SpikevitError

__version__ = "0.1.0"
__all__ = ["SpikevitError", "__version__"]
