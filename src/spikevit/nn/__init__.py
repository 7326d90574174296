"""Spiking modules: thin stateful wrappers over :mod:`spikevit.functional`."""
from spikevit.nn.lif import LIF
from spikevit.nn.dtss import DTSS, DTSSLIF
