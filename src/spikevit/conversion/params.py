"""Shipped and user-fitted few-spike neuron parameters: :mod:`spikevit.nn.fewspike_params` (the neurons'
own floor, so that :class:`~spikevit.nn.SpikingSoftmax` can load its defaults), handed on here."""
from spikevit.nn.fewspike_params import (KIND, PACKAGE_PARAMS, _package_params, available, few_spike_parameters,
                                         read_params, si_exp_parameters, store_fit)

__all__ = ["KIND", "PACKAGE_PARAMS", "_package_params", "available", "few_spike_parameters", "read_params",
           "si_exp_parameters", "store_fit"]
