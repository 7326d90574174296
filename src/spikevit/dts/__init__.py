"""Dynamic time-step spiking ViTs (DTS-SNN): mask loss, training, T_l / T_avg / spikes / SOPs / energy, Fig. 2.

    from spikevit.dts import DTSSpec, train_dts, measure
    spec = DTSSpec("spikformer-4-384", tmax=4, init_steps=2, lambda_m=1e-6, mask_groups=("qkv", "mlp"))
    result = train_dts(spec, train_set, test_set, TrainConfig(epochs=300, lr=4e-3, batch_size=256), "runs/dts",
                       dataset="cifar10")
    m = measure(result.model, test_loader);  m.summary()  # acc1, T_avg, SA, SOPs, energy
"""
from spikevit.dts.fig2 import cosine_similarity, input_histograms, plot_histograms
from spikevit.dts.loss import DEFAULT_MASK_GROUPS, MASK_GROUPS, gated_layers, mask_loss, mask_steps, parse_groups
from spikevit.dts.metrics import DTSMeasurement, measure
from spikevit.dts.study import StudyRun, run_study, study_runs, write_study_report
from spikevit.dts.train import DTSSpec, build_dts_model, dts_hooks, time_step_metrics, train_dts

__all__ = [
    "DTSSpec", "train_dts", "build_dts_model", "dts_hooks", "time_step_metrics", "mask_loss", "mask_steps",
    "parse_groups", "gated_layers", "MASK_GROUPS", "DEFAULT_MASK_GROUPS", "measure", "DTSMeasurement",
    "input_histograms", "plot_histograms", "cosine_similarity", "StudyRun", "study_runs", "run_study",
    "write_study_report",
]
