"""One-command reproductions of the ViT-LCA and D-SELD results (``spikevit reproduce NAME``).

``list_reproductions()`` describes every entry (paper table/figure, the
paper's numbers, whether it runs offline here); ``run_reproduction(name,
quick=..., data_root=..., cache=..., out=...)`` runs one and returns its JSON
report.  Study modules: reconstruction, dictionary_learning,
overcompleteness, sparsity, hyperparameters, workload, classification.
"""
from spikevit.reproduce.registry import (REPRODUCTIONS, Reproduction, get_reproduction, list_reproductions,
                                         resolve_params, run_reproduction)

__all__ = ["REPRODUCTIONS", "Reproduction", "get_reproduction", "list_reproductions", "resolve_params",
           "run_reproduction"]
