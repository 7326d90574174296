"""Exemplar LCA decoder (ViT-LCA / D-SELD).

``encode(dictionary (N, M), inputs (B, N)) -> codes (B, M)`` runs SPEC Eq. 2;
``Dictionary`` holds exemplar atoms + labels; ``decoders`` turns codes into
classes; ``ExemplarLCAClassifier`` is the scikit-learn estimator.
``run(LCARunParams(...)) -> Report`` is the whole ``spikevit lca run`` / ``lca evaluate`` job
(features -> dictionary -> codes -> decoders).
"""
from spikevit.lca.decoders import ShallowDecoder, class_sums, max_activation, max_sum
from spikevit.lca.dictionary import Dictionary, extend_gramian, normalize_atoms, select_exemplars
from spikevit.lca.encode import encode, encode_batches, encode_trace
from spikevit.lca.params import LCA_DEFAULTS, LCA_RUN_DEFAULTS, LCAParams, LCARunParams


def __getattr__(name):
    if name == "ExemplarLCAClassifier":  # scikit-learn imported only when asked for
        from spikevit.lca.estimator import ExemplarLCAClassifier
        return ExemplarLCAClassifier
    if name == "run":                    # the pipeline (data loading, reports) imported only when asked for
        from spikevit.lca.pipeline import run
        return run
    raise AttributeError(name)


__all__ = ["encode", "encode_trace", "encode_batches", "LCAParams", "LCA_DEFAULTS", "LCARunParams", "LCA_RUN_DEFAULTS",
           "run", "Dictionary", "normalize_atoms", "select_exemplars", "extend_gramian", "ShallowDecoder",
           "class_sums", "max_activation", "max_sum", "ExemplarLCAClassifier"]
