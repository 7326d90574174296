"""Dynamic time-step spiking ViTs (DTS-SNN): mask loss, training, T_l / T_avg / spikes / SOPs / energy, Fig. 2.

    from spikevit.dts import DTSRunParams, DTSSpec, run
    spec = DTSSpec("spikformer-4-384", tmax=4, init_steps=2, lambda_m=1e-6, mask_groups=("qkv", "mlp"))
    report = run(DTSRunParams("runs/dts", spec=spec, dataset="cifar10", data_root="data"))
    report.results["summary"]          # acc1, T_avg, SA, SOPs, energy

Settings live in :mod:`spikevit.dts.params` (defaults written once; ``spikevit dts`` maps onto them);
:func:`run` is ``spikevit dts train``, :func:`run_study` is ``spikevit dts study``.
"""
from spikevit.dts.fig2 import cosine_similarity, input_histograms, plot_histograms
from spikevit.dts.loss import DEFAULT_MASK_GROUPS, MASK_GROUPS, gated_layers, mask_loss, mask_steps, parse_groups
from spikevit.dts.metrics import DTSMeasurement, measure
from spikevit.dts.params import (DTS_DEFAULTS, DTS_TRAIN_DEFAULTS, STUDY_TRAIN_DEFAULTS, DTSRunParams, DTSSpec,
                                 StudyParams)
from spikevit.dts.pipeline import run
from spikevit.dts.study import StudyRun, run_study, runs_of, study_report, study_runs
from spikevit.dts.train import build_dts_model, dts_hooks, time_step_metrics, train_dts

__all__ = [
    "DEFAULT_MASK_GROUPS", "DTS_DEFAULTS", "DTS_TRAIN_DEFAULTS", "MASK_GROUPS", "STUDY_TRAIN_DEFAULTS",
    "DTSMeasurement", "DTSRunParams", "DTSSpec", "StudyParams", "StudyRun", "build_dts_model",
    "cosine_similarity", "dts_hooks", "gated_layers", "input_histograms", "mask_loss", "mask_steps", "measure",
    "parse_groups", "plot_histograms", "run", "run_study", "runs_of", "study_report", "study_runs",
    "time_step_metrics", "train_dts"
]
