"""The ablation study of Tables III-V at any scale: fixed-T Spikformer baselines, DTS runs over lambda_m
and mask-loss groupings, all with the same training budget; one table, plots, Table-V energies and Fig. 2.

:func:`run_study` takes a :class:`~spikevit.dts.params.StudyParams` (``spikevit dts study`` maps onto it).
Every run lives in ``params.out/<run name>`` (a resumable training directory plus ``measure.json``), so
the study can be killed and rerun, or split over processes with ``params.runs`` and reported afterwards.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from spikevit.dts.fig2 import input_histograms, plot_histograms
from spikevit.dts.loss import MASK_GROUPS, parse_groups
from spikevit.dts.metrics import DTSMeasurement, measure
from spikevit.dts.params import BASELINES, StudyParams, field_default, parse_baselines
from spikevit.dts.train import DTSSpec, train_dts
from spikevit.energy.dts import MembraneOps, SynapticOps, ann_energy, normalised_energy, snn_energy
from spikevit.errors import SpikevitError, require
from spikevit.reports import Report, pyplot, save_figure
from spikevit.runtime import pick_device
from spikevit.train import build_datasets, load_trained_model
from spikevit.train.data import make_loader

__all__ = [
    "BASELINES", "StudyRun", "evaluate_model_file", "parse_baselines", "replicate_rows", "run_study",
    "study_report", "study_runs"
]


@dataclass
class StudyRun:
    name: str
    spec: DTSSpec


def _lam_name(lam: float) -> str:
    return f"{lam:.0e}".replace("e-0", "e-").replace("e+0", "e")


_D = {f.name: field_default(StudyParams, f.name) for f in fields(StudyParams) if f.name != "out"}  # the defaults


def study_runs(arch: str = _D["arch"], *, tmax: int = _D["tmax"], init_steps: int | None = _D["init_steps"],
               fixed_ts=_D["fixed_t"], lambdas=_D["lambdas"], groupings=_D["groupings"], no_mask: bool = _D["nomask"],
               min_steps: int = _D["min_steps"], model_args: dict | None = None, grouping: str = _D["grouping"],
               baselines=_D["baselines"], tet_lambda: float = _D["tet_lambda"], tet_phi: float = _D["tet_phi"],
               hoyer_lambda: float = _D["hoyer_lambda"]) -> list[StudyRun]:
    """Fixed-T baselines, DTS runs for every (mask-loss grouping, lambda_m), optionally DTS without mask loss,
    and the Table II baselines (``"tet:2,hoyer:2"``: fixed-T Spikformers trained with the TET loss / the
    Hoyer regulariser).  ``grouping`` names the layer grouping (``paper`` / ``feeds``) of every run.
    Defaults: those of :class:`~spikevit.dts.params.StudyParams` (:meth:`StudyParams.study_runs` passes its
    fields)."""
    common = {"arch": arch, "model_args": dict(model_args or {}), "grouping": grouping}
    runs = [StudyRun(f"fixed-T{t}", DTSSpec(tmax=t, dts=False, **common)) for t in fixed_ts]
    for method, t in parse_baselines(baselines):
        extra = {"loss": "tet", "tet_lambda": tet_lambda, "tet_phi": tet_phi} if method == "tet" else \
            {"hoyer_lambda": hoyer_lambda}
        require(method != "hoyer" or hoyer_lambda > 0, "the hoyer baseline needs hoyer_lambda > 0")
        runs.append(StudyRun(f"{method}-T{t}", DTSSpec(tmax=t, dts=False, **common, **extra)))
    gated = {"tmax": tmax, "dts": True, "init_steps": init_steps, "min_steps": min_steps, **common}
    for mask_grouping in groupings:
        groups = parse_groups(mask_grouping)
        gname = "all" if set(groups) == set(MASK_GROUPS) else "+".join(groups)
        for lam in lambdas:
            runs.append(StudyRun(f"dts-{gname}-lam{_lam_name(lam)}", DTSSpec(lambda_m=lam, mask_groups=groups, **gated)))
    if no_mask:
        runs.append(StudyRun("dts-nomask", DTSSpec(lambda_m=0.0, mask_groups=(), **gated)))
    names = [r.name for r in runs]
    require(len(set(names)) == len(names), f"duplicate study run names {names}")
    return runs


def runs_of(params: StudyParams) -> list[StudyRun]:
    """The runs :class:`StudyParams` describes (:func:`study_runs` of its fields)."""
    return study_runs(params.arch, tmax=params.tmax, init_steps=params.init_steps, fixed_ts=params.fixed_t,
                      lambdas=params.lambdas, groupings=params.groupings, no_mask=params.nomask,
                      min_steps=params.min_steps, model_args=params.model_args, grouping=params.grouping,
                      baselines=params.baselines, tet_lambda=params.tet_lambda, tet_phi=params.tet_phi,
                      hoyer_lambda=params.hoyer_lambda)


def _save_measurement(path: Path, meas: DTSMeasurement) -> None:
    doc = {"summary": meas.summary(), "lif": meas.lif, "layers": meas.layer_rows(),
           "synaptic": [vars(s) for s in meas.synaptic], "membranes": [vars(m) for m in meas.membranes],
           "samples": meas.samples, "tmax": meas.tmax, "acc1": meas.acc1, "loss": meas.loss}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _load_measurement(path: Path) -> DTSMeasurement:
    doc = json.loads(path.read_text())
    return DTSMeasurement(doc["samples"], doc["tmax"], doc["acc1"], doc["loss"], doc["lif"],
                          [SynapticOps(**s) for s in doc["synaptic"]], [MembraneOps(**m) for m in doc["membranes"]])


def _data_info(p: StudyParams) -> dict:
    """The data settings stored with every run (a resumed run must match; keys appear only when they differ
    from the settings of the first studies, so their runs still resume)."""
    info = {"dataset": p.dataset, "train_subset": p.train_subset, "test_subset": p.test_subset, "img_size": p.img_size}
    if p.data_seed is not None and p.data_seed != p.train.seed:
        info["data_seed"] = p.data_seed
    if not p.augment:
        info["augment"] = False
    return info


def run_study(params: StudyParams, runs: list[StudyRun] | None = None, *, command: str | None = None,
              verbose: bool = True) -> Report:
    """Train + measure every selected run (resuming / skipping finished ones), then report on every finished one.

    ``runs`` replaces the runs ``params`` describes (:func:`runs_of`); the reproductions pass their own.
    ``params.data_seed`` picks the train / test subsets (default: the training seed), so replicate studies
    with another ``params.train.seed`` keep the same images; ``params.replicates`` are reported beside this
    study (see :func:`study_report`).  ``params.report_only`` trains nothing and reports the runs already
    measured (while others may still train).  Returns the :class:`~spikevit.reports.Report`, written to
    ``params.json`` when ``params.report``; without a report, one listing the runs measured now.
    ``command`` is recorded as the command that reproduces it (default: this call).
    """
    require(isinstance(params, StudyParams), f"run_study() takes a StudyParams, got {type(params).__name__}")
    p = params
    runs = runs_of(p) if runs is None else list(runs)
    command = command or f"spikevit.dts.run_study({p!r})"
    work = Path(p.out)
    known = {r.name for r in runs}
    select = list(p.runs or known)
    unknown = [s for s in select if s not in known]
    require(not unknown, f"runs: unknown study runs {unknown}; the study has {sorted(known)}")
    reps = {label: Path(d) for label, d in p.replicates.items()}
    for label, d in reps.items():
        require(d.is_dir(), f"replicates: study directory {d} ({label}) does not exist")
    work.mkdir(parents=True, exist_ok=True)
    data_seed = p.train.seed if p.data_seed is None else p.data_seed
    train_set, test_set = build_datasets(p.dataset, p.data_root, p.augment, p.img_size, p.train_subset,
                                         p.test_subset, data_seed, p.download, p.skip_bad_images)
    data_info = _data_info(p)
    measured = []
    for run in runs:
        if run.name not in select or p.report_only:
            continue
        out = work / run.name
        res = train_dts(run.spec, train_set, test_set, p.train, out, dataset=p.dataset, img_size=p.img_size,
                        extra_run=data_info, resume=p.resume)
        mpath = out / "measure.json"
        if not mpath.exists() or mpath.stat().st_mtime < (out / "model.safetensors").stat().st_mtime:
            loader = make_loader(test_set, p.train.batch_size, seed=p.train.seed, workers=p.train.workers)
            _save_measurement(mpath, measure(res.model, loader, pick_device(p.train.device), p.eval_batches,
                                             desc=f"measure {run.name}"))
        measured.append(run.name)
    if not p.report:
        return Report(command, {**p.to_dict(), "specs": {r.name: r.spec.to_dict() for r in runs}},
                      {"measured": measured}, title="DTS study (runs trained; no report asked for)")
    report = study_report(p, runs, test_set, command)
    report.write(p.json)
    if verbose:
        print(f"study report: {p.json}")
    return report


def _mean_steps(m: DTSMeasurement, groups: tuple[str, ...]) -> float | None:
    """Mean T_l over the LIF layers of ``groups`` (None when the model has none)."""
    steps = [r["T_l"] for r in m.lif if r["group"] in groups]
    return sum(steps) / len(steps) if steps else None


def _penalised_steps(m: DTSMeasurement, spec: DTSSpec) -> float | None:
    """Mean T_l over the layers the run's mask loss acts on (None for fixed-T and no-mask runs)."""
    if not spec.dts or spec.lambda_m <= 0 or not spec.mask_groups:
        return None
    return _mean_steps(m, tuple(spec.mask_groups))


def _method(spec: DTSSpec) -> str:
    """DTS, fixed-T (cross-entropy), or a Table II baseline (TET, Hoyer)."""
    if spec.dts:
        return "DTS"
    if spec.loss == "tet":
        return "TET"
    return "Hoyer" if spec.hoyer_lambda > 0 else "fixed-T"


def _grouping(spec: DTSSpec) -> str:
    if not spec.dts:
        return "fixed-T"
    if spec.lambda_m <= 0 or not spec.mask_groups:
        return "no mask loss"
    return "all" if set(spec.mask_groups) == set(MASK_GROUPS) else "+".join(spec.mask_groups)


def replicate_rows(runs: list[StudyRun], dirs: dict[str, Path]) -> list[dict]:
    """Per run, the measured accuracy / T_avg of every replicate directory (same run names, other seeds),
    with mean and range over the replicates found (a run missing from a directory is left out)."""
    import statistics

    rows = []
    for r in runs:
        found = {label: _load_measurement(d / r.name / "measure.json") for label, d in dirs.items()
                 if (d / r.name / "measure.json").exists()}
        if len(found) < 2:
            continue
        acc = [m.acc1 for m in found.values()]
        tav = [m.t_avg for m in found.values()]
        tqm = [_mean_steps(m, ("qkv", "mlp")) for m in found.values()]
        rows.append({"run": r.name, "type": _method(r.spec), "seeds": ",".join(found), "n": len(found),
                     "acc1": " / ".join(f"{a:.2f}" for a in acc), "acc1_mean": statistics.fmean(acc),
                     "acc1_sd": statistics.stdev(acc), "acc1_min": min(acc), "acc1_max": max(acc),
                     "acc1_range": max(acc) - min(acc),
                     "T_avg": " / ".join(f"{t:.3f}" for t in tav), "T_avg_mean": statistics.fmean(tav),
                     "T_avg_range": max(tav) - min(tav),
                     "T_qkv_mlp": " / ".join(f"{t:.2f}" for t in tqm), "T_qkv_mlp_mean": statistics.fmean(tqm)})
    return rows


def _log(work: Path, name: str) -> list[dict]:
    p = work / name / "log.json"
    return json.loads(p.read_text())["epochs"] if p.exists() else []


def study_report(params: StudyParams, runs: list[StudyRun], test_set, command: str) -> Report:
    """The report over the finished runs of the study folder ``params.out`` (its plots are written beside
    ``params.json``).  ``params.replicates`` ({label: folder}) adds a table of the same runs trained with
    other seeds (and their spread) next to this study's runs.

    tables: ``runs`` (one row per finished run: accuracy, T_avg, per-group T_l, SA, SOPs, energy),
    ``energy (Table V shape)``, ``training trajectory`` and, when there are, ``seed replicates`` and
    ``Fig. 2 time-step sensitivity``; results: each run's measurement summary and per-layer rows.
    """
    work, energy_model, fig2_run = Path(params.out), params.energy_model, params.fig2_run
    out_json = Path(params.json)
    replicates = {label: Path(d) for label, d in params.replicates.items()}
    done = [r for r in runs if (work / r.name / "measure.json").exists()]
    if not done:
        raise SpikevitError(f"no finished study runs under {work}")
    meas = {r.name: _load_measurement(work / r.name / "measure.json") for r in done}
    rows = []
    for r in done:
        m, s = meas[r.name], r.spec
        e = snn_energy(m.synaptic, m.membranes, energy_model)
        row = {"run": r.name, "type": _method(s), "layers": s.grouping, "grouping": _grouping(s), "Tmax": s.tmax,
               "init_TS": s.init_steps if s.dts else s.tmax, "lambda_m": s.lambda_m if s.dts else None}
        row.update({f"{g}_loss": (g in s.mask_groups) if s.dts and s.lambda_m > 0 else False for g in MASK_GROUPS})
        row.update({"acc1": m.acc1, "T_avg": m.t_avg, "SA_percent": m.spiking_activity, "SOPs_M": m.sops / 1e6})
        row.update({f"T_{g}": v for g, v in m.group_steps().items()})
        row.update({"T_qkv_mlp": _mean_steps(m, ("qkv", "mlp")), "T_avg_gated": _mean_steps(m, MASK_GROUPS),
                    "T_penalised": _penalised_steps(m, s)})
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
    others = []  # (run row of this study, acc1, T_avg) of the same run in every replicate directory
    for d in (replicates or {}).values():
        for row in rows:
            mp = d / row["run"] / "measure.json"
            if mp.exists():
                m = _load_measurement(mp)
                others.append((row, m.acc1, m.t_avg))
    figures = [str(_plot_study(rows, epoch_rows, out_json.with_suffix(".png"), others))]
    fig_rows = []
    if fig2_run is None and fixed:
        fig2_run = max(fixed, key=lambda f: f.spec.tmax).name
    if fig2_run is not None and (work / fig2_run / "model.safetensors").exists():
        model, _ = load_trained_model(work / fig2_run / "model.safetensors")
        if model.tmax >= 2:
            loader = make_loader(test_set, min(params.train.batch_size, 128))
            hists = input_histograms(model, loader, max_batches=2)
            fig = plot_histograms(hists, out_json.with_name(out_json.stem + "-fig2.png"),
                                  title=f"{fig2_run}: LIF inputs at step 1 vs steps 2..T")
            figures.append(str(fig))
            fig_rows = [{"layer": n, "group": h["group"], "cosine_step1_vs_later": h["cosine"]}
                        for n, h in hists.items()]
    tables = {"runs": rows, "energy (Table V shape)": energy_rows, "training trajectory": epoch_rows}
    if replicates:
        seed_rows = replicate_rows(runs, {f"seed{params.train.seed}": work, **replicates})
        if seed_rows:
            tables["seed replicates"] = seed_rows
            figures.append(str(_plot_seeds(seed_rows, out_json.with_name(out_json.stem + "-seeds.png"))))
    if fig_rows:
        tables["Fig. 2 time-step sensitivity"] = fig_rows
    results = {"runs": {r.name: meas[r.name].summary(energy_model) for r in done},
               "per_layer": {r.name: meas[r.name].layer_rows() for r in done}}
    config = {**params.to_dict(), "specs": {r.name: r.spec.to_dict() for r in runs}}
    return Report(command, config, results, tables, title="DTS study (Tables III-V, Fig. 2 shape)",
                  notes=_notes(rows, next(iter(meas.values())).samples), figures=figures)


def _notes(rows: list[dict], samples: int | None = None) -> str:
    text = ("All runs share the training budget (epochs, batch, data subset, optimiser, schedule). "
            "T_avg is the mean of T_l over all LIF layers (Eq. 3); T_qkv_mlp the mean over the qkv and mlp LIF "
            "layers, T_avg_gated over the layers of the sps, qkv, attn and mlp groups (every LIF under the paper's "
            "layer grouping, all but the head LIF under 'feeds'), T_penalised over "
            "the layers of the run's own mask loss. SA = spikes / (neurons x Tmax); "
            "SOPs are accumulates per image; energy per image with the dts45nm model (AC 1.8 pJ, MAC 13.32 pJ, "
            "zero check 0.05 pJ, 5 pJ per membrane read/write).")
    accs = [r["acc1"] for r in rows]
    if samples and accs:
        p = sum(accs) / len(accs) / 100.0
        se = 100.0 * math.sqrt(p * (1 - p) / samples)
        text += (f" Test-sampling noise alone: a binomial standard error of {se:.2f} points on {samples} test images "
                 f"at {100 * p:.1f} % accuracy (training noise, seed to seed, comes on top: see the seed table "
                 "when there is one).")
    return text


def _plot_seeds(seed_rows: list[dict], path: Path) -> Path:
    """Mean test accuracy over seeds vs mean T_avg per run, bars from the lowest to the highest seed."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    style = {"fixed-T": ("o", "k"), "TET": ("*", "C9"), "Hoyer": ("X", "C8"), "DTS": ("s", "C0")}
    fixed = sorted([r for r in seed_rows if r["type"] == "fixed-T"], key=lambda r: r["T_avg_mean"])
    if fixed:
        ax.plot([r["T_avg_mean"] for r in fixed], [r["acc1_mean"] for r in fixed], "-", color="k", lw=1)
    seen = set()
    shift = {"TET": -0.06, "Hoyer": 0.06}   # drawn beside the fixed-T point of the same T, not on it
    for r in seed_rows:
        marker, color = style.get(r["type"], ("o", "C7"))
        label = None if r["type"] in seen else r["type"]
        seen.add(r["type"])
        x = r["T_avg_mean"] + shift.get(r["type"], 0.0)
        ax.errorbar(x, r["acc1_mean"], yerr=[[r["acc1_mean"] - r["acc1_min"]], [r["acc1_max"] - r["acc1_mean"]]],
                    fmt=marker, color=color, ms=8, capsize=4, label=label)
        ax.annotate(r["run"], (x, r["acc1_mean"]), fontsize=7, xytext=(5, 3), textcoords="offset points")
    ax.set_xlabel("T_avg (mean over seeds; TET / Hoyer drawn 0.06 left / right of their T)")
    ax.set_ylabel("test top-1 (%), mean over seeds")
    ax.set_title(f"{seed_rows[0]['n']} seeds: mean, bars from the lowest to the highest seed", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def _plot_study(rows: list[dict], epoch_rows: list[dict], path: Path, others: list | None = None) -> Path:
    """(a) accuracy vs T_avg with the fixed-T line, (b) T_avg (solid) and the mean T_l of the penalised
    layers (dashed) vs lambda_m per grouping, the no-mask DTS run at lambda_m = 0, (c) T_avg per epoch."""
    plt = pyplot()

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.6))
    fixed = sorted([r for r in rows if r["type"] == "fixed-T"], key=lambda r: r["T_avg"])
    if fixed:
        ax1.plot([r["T_avg"] for r in fixed], [r["acc1"] for r in fixed], "o-", color="k", label="fixed-T Spikformer")
        for r in fixed:
            ax1.annotate(r["run"], (r["T_avg"], r["acc1"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    for r in rows:
        if r["type"] in ("TET", "Hoyer"):
            ax1.plot(r["T_avg"], r["acc1"], "*" if r["type"] == "TET" else "X", color="C9" if r["type"] == "TET"
                     else "C8", ms=10, linestyle="none", label=f"{r['type']} (Table II baseline), T={r['Tmax']}")
    dts = [r for r in rows if r["type"] == "DTS"]
    groupings = list(dict.fromkeys(r["grouping"] for r in dts if r["grouping"] != "no mask loss"))
    colors = {g: f"C{i}" for i, g in enumerate(groupings)}
    colors["no mask loss"] = "C7"
    markers = {g: m for g, m in zip(groupings, "s^Dvp")} | {"no mask loss": "o"}
    for g in ["no mask loss", *groupings]:
        pts = sorted([r for r in dts if r["grouping"] == g], key=lambda r: r["lambda_m"] or 0.0)
        if not pts:
            continue
        ax1.plot([r["T_avg"] for r in pts], [r["acc1"] for r in pts], markers[g], color=colors[g], ms=7,
                 linestyle="none", label=f"DTS, mask loss: {g}")
        for r in pts:
            if r["lambda_m"]:
                ax1.annotate(f"{r['lambda_m']:g}", (r["T_avg"], r["acc1"]), fontsize=6, color=colors[g],
                             xytext=(4, 3), textcoords="offset points")
    for row, acc, tav in others or []:   # other seeds: hollow markers joined to this study's point
        g = row["grouping"]
        color, marker = ("k", "o") if g == "fixed-T" else (colors[g], markers[g])
        ax1.plot([row["T_avg"], tav], [row["acc1"], acc], "-", color=color, lw=0.6, alpha=0.5)
        ax1.plot(tav, acc, marker, color=color, mfc="none", ms=7)
    if others:
        ax1.plot([], [], "o", color="0.4", mfc="none", label="same run, other seed")
    ax1.set_xlabel("T_avg (time steps, Eq. 3)")
    ax1.set_ylabel("test top-1 (%)")
    ax1.set_title("accuracy vs T_avg (DTS points labelled with lambda_m)")
    ax1.legend(fontsize=7)
    lams = sorted({r["lambda_m"] for r in dts if r["lambda_m"]})
    zero_x = lams[0] / 10 if lams else 1e-4          # where lambda_m = 0 (no mask loss) is drawn
    nomask = [r for r in dts if r["grouping"] == "no mask loss"]
    for g in groupings:
        pts = sorted([r for r in dts if r["grouping"] == g], key=lambda r: r["lambda_m"])
        xs = [zero_x] * bool(nomask) + [r["lambda_m"] for r in pts]
        base = nomask[:1]
        ax2.plot(xs, [r["T_avg"] for r in base + pts], markers[g] + "-", color=colors[g], label=f"{g}: T_avg (all layers)")
        key = {"qkv+mlp": "T_qkv_mlp", "all": "T_avg_gated"}.get(g)
        if key is None:
            continue
        pen = [r[key] for r in base + pts]
        ax2.plot(xs, pen, markers[g] + "--", color=colors[g], alpha=0.6, mfc="none",
                 label=f"{g}: mean T_l of the penalised layers")
    ax2.set_xscale("log")
    if nomask:
        ax2.axvline(zero_x * 2, color="0.8", lw=0.8)
        ticks = [zero_x, *lams]
        ax2.set_xticks(ticks, ["0\n(no mask)", *[f"{v:g}" for v in lams]], fontsize=7)
        ax2.minorticks_off()
    ax2.set_xlabel("lambda_m")
    ax2.set_ylabel("time steps")
    ax2.set_title("T_avg under the mask loss (Tmax 4, init 2)")
    ax2.legend(fontsize=7)
    for name in dict.fromkeys(e["run"] for e in epoch_rows if e["run"].startswith("dts")):
        es = [e for e in epoch_rows if e["run"] == name and e["T_avg"] is not None]
        ax3.plot([e["epoch"] for e in es], [e["T_avg"] for e in es], "o-", ms=3, label=name)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("T_avg")
    ax3.set_title("T_avg during training (DTS runs)")
    ax3.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, dpi=110)


def evaluate_model_file(path: str | Path, test_set, batch_size: int = 128, device: str = "cpu",
                        max_batches: int | None = None) -> DTSMeasurement:
    model, _ = load_trained_model(path, device)
    loader = make_loader(test_set, batch_size)
    return measure(model, loader, device, max_batches)


