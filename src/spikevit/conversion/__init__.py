"""SIT-conversion: ANN-to-SNN conversion of transformers with a spiking softmax (SIT paper).

* :func:`si_exp_parameters` -- shipped SI-exp neuron parameters (K = 4..16), spike when ``v >= T``.
* :func:`fit_few_spike` -- fit a few-spike neuron (exp, sigmoid, SiLU, GELU) to 10,000 points.
* :func:`convert` -- SIT-convert the attention blocks of torchvision / timm / own ViTs, block by block, at a
  ``spiking`` level: ``"softmax"`` (SpikingSoftmax), ``"attention"`` (+ Q, K, V out of spiking neurons) or
  ``"all"`` (+ spike-coded inputs of every linear layer / convolution in the blocks, few-spike activations).
* :func:`run` -- ``run(ConversionParams(...)) -> Report``: the pipeline behind ``spikevit convert run`` (model
  resolver, checks, layer-by-layer tables, energy from the profile).
* :class:`SpikeCounter` -- per-layer spikes and MACs with forward hooks (energy: spikevit.energy.sit).
* :func:`quantisation_aware` -- the model to fine-tune (QCFS / MST-style quantisers at the rate-coded
  neurons, learnable thresholds) before a lossless rate-coded conversion; :func:`neuron_state` its neurons.
"""
from spikevit.conversion.converter import (LEVELS, ExplicitMultiheadAttention, SpikingAttention, attention_modules,
                                           calibrate, convert, explicit_mha, find_attention)
from spikevit.conversion.fitting import FewSpikeFit, evaluate_fit, fit_few_spike
from spikevit.conversion.measure import (SpikeCounter, capture_attention_logits, evaluate_classifier, softmax_error,
                                         softmax_error_sweep)
from spikevit.conversion.params import ConversionParams, available, few_spike_parameters, si_exp_parameters, store_fit
from spikevit.conversion.pipeline import resolve_model, run
from spikevit.conversion.qcfs import ann_state_dict, neuron_state, quantisation_aware

__all__ = [
                                           "LEVELS",
                                           "ConversionParams",
                                           "ExplicitMultiheadAttention",
                                           "FewSpikeFit",
                                           "SpikeCounter",
                                           "SpikingAttention",
                                           "ann_state_dict",
                                           "attention_modules",
                                           "available",
                                           "calibrate",
                                           "capture_attention_logits",
                                           "convert",
                                           "evaluate_classifier",
                                           "evaluate_fit",
                                           "explicit_mha",
                                           "few_spike_parameters",
                                           "find_attention",
                                           "fit_few_spike",
                                           "neuron_state",
                                           "quantisation_aware",
                                           "resolve_model",
                                           "run",
                                           "si_exp_parameters",
                                           "softmax_error",
                                           "softmax_error_sweep",
                                           "store_fit",
]
