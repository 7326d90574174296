"""SIT-conversion: ANN-to-SNN conversion of transformers with a spiking softmax (SIT paper).

* :func:`si_exp_parameters` -- shipped SI-exp neuron parameters (K = 4..16), spike when ``v >= T``.
* :func:`fit_few_spike` -- fit a few-spike neuron (exp, sigmoid, SiLU, GELU) to 10,000 points.
* :func:`convert` -- softmax of every attention block (torchvision / timm / own ViTs) -> SpikingSoftmax,
  optionally few-spike activations, block by block.
* :class:`SpikeCounter` -- per-layer spikes and MACs with forward hooks (energy: spikevit.energy.sit).
"""
from spikevit.conversion.converter import (ExplicitMultiheadAttention, SpikingAttention, attention_modules,
                                           convert, explicit_mha, find_attention)
from spikevit.conversion.fitting import FewSpikeFit, evaluate_fit, fit_few_spike
from spikevit.conversion.measure import (SpikeCounter, capture_attention_logits, evaluate_classifier,
                                         softmax_error, softmax_error_sweep)
from spikevit.conversion.params import available, few_spike_parameters, si_exp_parameters, store_fit

__all__ = ["si_exp_parameters", "few_spike_parameters", "available", "store_fit", "FewSpikeFit",
           "fit_few_spike", "evaluate_fit", "convert", "find_attention", "attention_modules", "explicit_mha",
           "ExplicitMultiheadAttention", "SpikingAttention", "SpikeCounter", "evaluate_classifier",
           "softmax_error", "softmax_error_sweep", "capture_attention_logits"]
