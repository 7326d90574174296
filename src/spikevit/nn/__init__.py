"""Spiking modules: thin stateful wrappers over :mod:`spikevit.functional`."""
from spikevit.nn.dtss import DTSS, DTSSLIF
from spikevit.nn.lif import LIF
from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax

__all__ = ["LIF", "DTSS", "DTSSLIF", "SpikingSoftmax", "FewSpikeActivation"]
