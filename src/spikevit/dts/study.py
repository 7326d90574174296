"""The ablation study of Tables III-V at any scale: fixed-T Spikformer baselines, DTS runs over lambda_m
and mask-loss groupings, all with the same training budget; one table, plots, Table-V energies and Fig. 2.

Every run lives in ``work_dir/<run name>`` (a resumable training directory plus ``measure.json``), so
the study can be killed and rerun, or split over processes with ``select`` and reported afterwards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spikevit.dts.fig2 import input_histograms, plot_histograms
from spikevit.dts.loss import MASK_GROUPS, parse_groups
from spikevit.dts.metrics import DTSMeasurement, measure
from spikevit.dts.train import DTSSpec, train_dts
from spikevit.energy.dts import MembraneOps, SynapticOps, ann_energy, normalised_energy, snn_energy
from spikevit.errors import SpikevitError, require
from spikevit.reports import write_report
from spikevit.runtime import pick_device
from spikevit.train import TrainConfig, build_datasets, load_trained_model
from spikevit.train.data import make_loader


@dataclass
class StudyRun:
    name: str
    spec: DTSSpec


def _lam_name(lam: float) -> str:
    return f"{lam:.0e}".replace("e-0", "e-").replace("e+0", "e")


def study_runs(arch: str, tmax: int = 4, init_steps: int | None = None, fixed_ts=(1, 2, 4),
               lambdas=(1e-4, 1e-2), groupings=("qkv,mlp", "all"), no_mask: bool = True,
               min_steps: int = 1, model_args: dict | None = None) -> list[StudyRun]:
    """Fixed-T baselines, DTS runs for every (grouping, lambda_m), and optionally DTS without mask loss."""
    model_args = dict(model_args or {})
    runs = [StudyRun(f"fixed-T{t}", DTSSpec(arch, t, dts=False, model_args=model_args)) for t in fixed_ts]
    for grouping in groupings:
        groups = parse_groups(grouping)
        gname = "all" if set(groups) == set(MASK_GROUPS) else "+".join(groups)
        for lam in lambdas:
            runs.append(StudyRun(f"dts-{gname}-lam{_lam_name(lam)}",
                                 DTSSpec(arch, tmax, True, init_steps, min_steps, lam, groups, model_args)))
    if no_mask:
        runs.append(StudyRun("dts-nomask", DTSSpec(arch, tmax, True, init_steps, min_steps, 0.0, (), model_args)))
    names = [r.name for r in runs]
    require(len(set(names)) == len(names), f"duplicate study run names {names}")
    return runs


def _save_measurement(path: Path, meas: DTSMeasurement) -> None:
    doc = {"summary": meas.summary(), "lif": meas.lif, "layers": meas.layer_rows(),
           "synaptic": [vars(s) for s in meas.synaptic], "membranes": [vars(m) for m in meas.membranes],
           "samples": meas.samples, "tmax": meas.tmax, "acc1": meas.acc1, "loss": meas.loss}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _load_measurement(path: Path) -> DTSMeasurement:
    doc = json.loads(path.read_text())
    return DTSMeasurement(doc["samples"], doc["tmax"], doc["acc1"], doc["loss"], doc["lif"],
                          [SynapticOps(**s) for s in doc["synaptic"]], [MembraneOps(**m) for m in doc["membranes"]])


def run_study(runs: list[StudyRun], dataset: str, data_root: str | None, config: TrainConfig,
              work_dir: str | Path, out_json: str | Path | None = None, train_subset: int | None = None,
              test_subset: int | None = None, img_size: int | None = None, select: list[str] | None = None,
              report: bool = True, fig2_run: str | None = None, eval_batches: int | None = None,
              energy_model: str = "dts45nm", command: str = "spikevit dts study", train: bool = True) -> dict:
    """Train + measure every selected run (resuming / skipping finished ones), then write the report.

    ``train=False`` only writes the report of the runs already measured (while others may still train).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    known = {r.name for r in runs}
    select = list(select or known)
    unknown = [s for s in select if s not in known]
    require(not unknown, f"unknown study runs {unknown}; the study has {sorted(known)}")
    train_set, test_set = build_datasets(dataset, data_root, True, img_size, train_subset, test_subset, config.seed)
    data_info = {"dataset": dataset, "train_subset": train_subset, "test_subset": test_subset, "img_size": img_size}
    for run in runs:
        if run.name not in select or not train:
            continue
        out = work / run.name
        res = train_dts(run.spec, train_set, test_set, config, out, dataset, img_size, extra_run=data_info)
        mpath = out / "measure.json"
        if not mpath.exists() or mpath.stat().st_mtime < (out / "model.safetensors").stat().st_mtime:
            loader = make_loader(test_set, config.batch_size, 0, 1, False, config.seed, config.workers)
            _save_measurement(mpath, measure(res.model, loader, pick_device(config.device), eval_batches,
                                             desc=f"measure {run.name}"))
    if not report:
        return {}
    require(out_json is not None, "the study report needs an output path")
    return write_study_report(runs, work, Path(out_json), config, data_info, fig2_run, test_set, energy_model,
                              command)


def _log(work: Path, name: str) -> list[dict]:
    p = work / name / "log.json"
    return json.loads(p.read_text())["epochs"] if p.exists() else []


def write_study_report(runs, work: Path, out_json: Path, config: TrainConfig, data_info: dict,
                       fig2_run: str | None, test_set, energy_model: str, command: str) -> dict:
    done = [r for r in runs if (work / r.name / "measure.json").exists()]
    if not done:
        raise SpikevitError(f"no finished study runs under {work}")
    meas = {r.name: _load_measurement(work / r.name / "measure.json") for r in done}
    rows = []
    for r in done:
        m, s = meas[r.name], r.spec
        e = snn_energy(m.synaptic, m.membranes, energy_model)
        row = {"run": r.name, "type": "DTS" if s.dts else "fixed-T", "Tmax": s.tmax,
               "init_TS": s.init_steps if s.dts else s.tmax, "lambda_m": s.lambda_m if s.dts else None}
        row.update({f"{g}_loss": (g in s.mask_groups) if s.dts and s.lambda_m > 0 else False for g in MASK_GROUPS})
        row.update({"acc1": m.acc1, "T_avg": m.t_avg, "SA_percent": m.spiking_activity, "SOPs_M": m.sops / 1e6})
        row.update({f"T_{g}": v for g, v in m.group_steps().items()})
        row.update({"energy_uJ": e["total_J"] * 1e6})
        rows.append(row)
    # Table V: every DTS run against the non-spiking ViT of the same topology and every fixed-T Spikformer
    fixed = [r for r in done if not r.spec.dts]
    energy_rows = []
    for r in done:
        if not r.spec.dts:
            continue
        m = meas[r.name]
        energies = {"NS ViT": ann_energy(m.synaptic, m.membranes, energy_model)}
        for f in fixed:
            energies[f"{f.name}"] = snn_energy(meas[f.name].synaptic, meas[f.name].membranes, energy_model)
        energies[r.name] = snn_energy(m.synaptic, m.membranes, energy_model)
        acc = {f.name: meas[f.name].acc1 for f in fixed} | {r.name: m.acc1}
        steps = {f.name: meas[f.name].t_avg for f in fixed} | {r.name: m.t_avg}
        for row in normalised_energy(energies, r.name):
            energy_rows.append({"reference": r.name, "model": row["model"], "TS": steps.get(row["model"]),
                                "acc1": acc.get(row["model"]), "norm_CE": row["norm_compute"],
                                "norm_ME": row["norm_memory"], "norm_TE": row["norm_total"],
                                "total_uJ": row["total_uJ"]})
    epoch_rows = []
    for r in done:
        if r.spec.dts:  # the initial state: every layer keeps init_steps (at least min_steps)
            epoch_rows.append({"run": r.name, "epoch": 0, "T_avg": float(max(r.spec.init_steps, r.spec.min_steps)),
                               "train_loss": None, "mask_steps": None, "test_acc1": None})
        for e in _log(work, r.name):
            epoch_rows.append({"run": r.name, "epoch": e["epoch"], "T_avg": e.get("metrics", {}).get("T_avg"),
                               "train_loss": e["train"]["loss"], "mask_steps": e["train"].get("mask_steps"),
                               "test_acc1": e.get("test", {}).get("acc1")})
    figures = [str(_plot_study(rows, epoch_rows, out_json.with_suffix(".png")))]
    fig_rows = []
    if fig2_run is None and fixed:
        fig2_run = max(fixed, key=lambda f: f.spec.tmax).name
    if fig2_run is not None and (work / fig2_run / "model.safetensors").exists():
        model, _ = load_trained_model(work / fig2_run / "model.safetensors")
        if model.tmax >= 2:
            loader = make_loader(test_set, min(config.batch_size, 128), 0, 1, False, 0, 0)
            hists = input_histograms(model, loader, max_batches=2)
            fig = plot_histograms(hists, out_json.with_name(out_json.stem + "-fig2.png"),
                                  title=f"{fig2_run}: LIF inputs at step 1 vs steps 2..T")
            figures.append(str(fig))
            fig_rows = [{"layer": n, "group": h["group"], "cosine_step1_vs_later": h["cosine"]}
                        for n, h in hists.items()]
    tables = {"runs": rows, "energy (Table V shape)": energy_rows, "training trajectory": epoch_rows}
    if fig_rows:
        tables["Fig. 2 time-step sensitivity"] = fig_rows
    results = {"runs": {r.name: meas[r.name].summary(energy_model) for r in done},
               "per_layer": {r.name: meas[r.name].layer_rows() for r in done}}
    config_doc = {**config.to_dict(), **data_info, "specs": {r.name: r.spec.to_dict() for r in runs},
                  "energy_model": energy_model}
    write_report(out_json, command, config_doc, results, tables, title="DTS study (Tables III-V, Fig. 2 shape)",
                 notes=_notes(rows), figures=figures)
    return {"rows": rows, "energy": energy_rows, "figures": figures}


def _notes(rows: list[dict]) -> str:
    return ("All runs share the training budget (epochs, batch, data subset, optimiser, schedule). "
            "T_avg is the mean of T_l over all LIF layers (Eq. 3); SA = spikes / (neurons x Tmax); "
            "SOPs are accumulates per image; energy per image with the dts45nm model (AC 1.8 pJ, MAC 13.32 pJ, "
            "zero check 0.05 pJ, 5 pJ per membrane read/write).")


def _plot_study(rows: list[dict], epoch_rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    fixed = sorted([r for r in rows if r["type"] == "fixed-T"], key=lambda r: r["T_avg"])
    if fixed:
        ax1.plot([r["T_avg"] for r in fixed], [r["acc1"] for r in fixed], "o-", color="k", label="fixed-T Spikformer")
        for r in fixed:
            ax1.annotate(r["run"], (r["T_avg"], r["acc1"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    for r in rows:
        if r["type"] == "DTS":
            ax1.plot(r["T_avg"], r["acc1"], "s", label=r["run"])
    ax1.set_xlabel("T_avg (time steps, Eq. 3)")
    ax1.set_ylabel("test top-1 (%)")
    ax1.set_title("accuracy vs time steps")
    ax1.legend(fontsize=7)
    for name in dict.fromkeys(e["run"] for e in epoch_rows if e["run"].startswith("dts")):
        es = [e for e in epoch_rows if e["run"] == name and e["T_avg"] is not None]
        ax2.plot([e["epoch"] for e in es], [e["T_avg"] for e in es], "o-", label=name)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("T_avg")
    ax2.set_title("T_avg during training (DTS runs)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_model_file(path: str | Path, test_set, batch_size: int = 128, device: str = "cpu",
                        max_batches: int | None = None) -> DTSMeasurement:
    model, _ = load_trained_model(path, device)
    loader = make_loader(test_set, batch_size, 0, 1, False, 0, 0)
    return measure(model, loader, device, max_batches)


