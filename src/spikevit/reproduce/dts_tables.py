"""DTS-SNN Tables I-V and Fig. 2 (papers/dts-snn-vit.txt) through :func:`spikevit.dts.run_study`.

Each table is a set of study runs trained with one budget and measured by :func:`spikevit.dts.measure`
(accuracy, T_avg, spiking activity, SOPs, energy); this module only chooses the runs, calls the study and
writes our numbers beside the paper's:

* ``table = "1"``: fixed-T Spikformers (Table I, "Spikformer" rows), the Table II baselines (TET / Hoyer at
  T = 2, ``baselines``) and the DTS rows ``dts_rows`` (``init:tmax:lambda_m`` items, mask loss qkv+mlp).
* ``table = "3"``: DTS with the mask loss on every group, on all but sps, on qkv+mlp, and without mask loss.
* ``table = "4"``: DTS (qkv+mlp) for every initial time step in ``table4_inits`` and ``lambda_m`` in
  ``table4_lambdas``, plus the ``table4_extra`` (``init:tmax``) rows at the largest lambda_m.
* ``table = "5"``: fixed-T Spikformers and one DTS run; compute / memory / total energy normalised to the
  DTS run (:func:`spikevit.energy.dts.normalised_energy`, via the study report).
* ``table = "fig2"``: a fixed-T model with ``fig2_t`` steps; LIF input histograms at step 1 vs steps 2..T and
  their cosine similarity per layer (:func:`spikevit.dts.input_histograms`).
* ``table = "3-5"``: the runs of Tables III, IV, V and Fig. 2 in one study.

Runs are named by their whole design (``dts-qkv+mlp-lam1e-2-init2-max4``) and live in one work folder per
training budget (``work_dir``; default ``<cache>/../dts-runs/<budget key>``), so entries sharing a budget
share runs, and a killed reproduction resumes (finished runs are skipped, unfinished ones resume from their
last epoch).  ``train_subset`` / ``test_subset`` 0 = the whole split.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from spikevit.errors import SpikevitError, require
from spikevit.reproduce.common import Context, report

PARAMS = {
    "table": "3",                   # fixed per registry entry: 1, 3, 4, 5, fig2 or 3-5
    "dataset": "mnist",
    "arch": "spikformer-1-64",
    "img_size": 0,                  # 0 = the dataset's own size
    "grouping": "paper",            # layer grouping of the LIF layers (DTS-SNN Eq. 7)
    "tmax": 4, "init_steps": 2, "min_steps": 1,
    "lambda_m": 1e-2,               # mask-loss weight of the Table III / V runs (paper: 1e-6)
    "table4_inits": "1,2,3,4",
    "table4_lambdas": "1e-2,1e-4",  # paper: 1e-4, 1e-6 (matched by rank: larger with larger)
    "table4_extra": "4:6",          # init:tmax rows at the largest lambda_m (paper: init 4, Tmax 6)
    "fixed_ts": "1,2,4",
    "baselines": "",                # Table II: "tet:2,hoyer:2"
    "dts_rows": "2:4:1e-2",         # Table I DTS rows, init:tmax:lambda_m items
    "fig2_t": 4,                    # time steps of the Fig. 2 model (paper: 6)
    "epochs": 3, "batch_size": 50, "lr": 4e-3, "min_lr": 1e-5, "warmup_epochs": 0.3, "weight_decay": 0.05,
    "train_subset": 3000, "test_subset": 2000,
    "eval_batches": 0,              # 0 = measure on the whole test subset
    "seed": 0,
    "workers": 0,
    "download": False,              # let torchvision download CIFAR-10/100 into --data-root first
    "work_dir": "",                 # "" = <cache>/../dts-runs/<budget key>
}
QUICK = {"epochs": 1, "train_subset": 2000, "test_subset": 1000, "table4_inits": "1,2,4", "warmup_epochs": 0.1}

# --------------------------------------------------------------------------- the paper's numbers (as printed)

# Table I: (method, T or T_avg, top-1 %); "This work" rows are DTS.  * = the authors' replicated setup.
TABLE1 = {
    "cifar10": [("CCT (ANN)", 1, 96.61), ("Spikformer", 1, 94.13), ("Spikformer", 2, 95.29),
                ("Spikformer", 4, 95.66), ("Spikformer", 6, 95.94), ("DTS", 1.15, 94.39), ("DTS", 4.79, 95.97)],
    "cifar100": [("CCT (ANN)", 1, 80.19), ("Spikformer", 1, 75.05), ("Spikformer", 2, 77.10),
                 ("Spikformer", 3, 77.61), ("Spikformer", 4, 78.14), ("Spikformer", 6, 78.85),
                 ("DTS", 2.73, 78.09), ("DTS", 3.81, 78.90)],
    "imagenet": [("Spikformer", 1, 63.12), ("Spikformer", 2, 66.03), ("Spikformer", 4, 73.38),
                 ("DTS", 1.30, 68.04)],
}
# Table II, Spikformer-4-384 rows (T = 2, the authors' replicated setup) and Hoyer-reg at T = 1 (CIFAR-100)
TABLE2 = {"cifar10": [("Hoyer", 2, 93.69), ("TET", 2, 94.08)],
          "cifar100": [("Hoyer", 1, 71.55), ("Hoyer", 2, 71.29), ("TET", 2, 74.88)]}
# Table III (CIFAR-100, Spikformer-4-384, init 2, lambda_m 1e-6): mask-loss groups -> acc, TS, SA %, SOPs (M)
TABLE3 = [("all", 74.64, 1.03, 2.90, 101.24), ("qkv+attn+mlp", 77.16, 1.96, 4.87, 181.50),
          ("qkv+mlp", 78.09, 2.73, 5.56, 185.31), ("no mask loss", 77.10, 3.93, 5.33, 182.69)]
# Table IV (CIFAR-100, qkv+mlp): init TS, max TS, lambda_m -> acc, TS, SA %, SOPs (M)
TABLE4 = [(1, 4, 1e-4, 74.45, 2.45, 3.73, 172.54), (1, 4, 1e-6, 73.90, 3.0, 20.97, 429.18),
          (2, 4, 1e-4, 76.96, 2.69, 5.41, 183.65), (2, 4, 1e-6, 78.09, 2.73, 5.33, 185.31),
          (3, 4, 1e-4, 78.16, 3.36, 7.70, 254.39), (3, 4, 1e-6, 78.07, 3.36, 7.71, 255.78),
          (4, 4, 1e-4, 78.69, 4.0, 9.85, 319.75), (4, 6, 1e-4, 78.90, 3.81, 6.54, 319.51)]
# Table V: type, TS, normalised compute / memory / total energy (DTS SNN = 1)
TABLE5 = {"cifar10": [("NS ViT", None, 22.57, 0.84, 16.12), ("Spik. SNN", 4, 2.79, 3.68, 2.98),
                      ("DTS SNN", 1.15, 1.0, 1.0, 1.0)],
          "cifar100": [("NS ViT", None, 25.7, 0.88, 17.15), ("Spik. SNN", 6, 1.70, 2.32, 1.89),
                       ("DTS SNN", 3.81, 1.0, 1.0, 1.0)]}
FIG2 = ("Fig. 2 (no numbers): LIF input distributions of a 6-step Spikformer at step 1 vs later steps; similar "
        "distributions (high cosine similarity) mark layers that need fewer steps, and the sensitivity differs "
        "by part (sps, qkv, attn, mlp)")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SpikevitError(f"{what}: expected a comma list of numbers, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    out = _floats(text, what)
    require(all(v == int(v) and v >= 1 for v in out), f"{what}: expected positive integers, got {text!r}")
    return [int(v) for v in out]


def _items(text: str, what: str, size: int) -> list[tuple]:
    """``"a:b[:c],..."`` -> tuples of numbers (the last of three may be a float)."""
    out = []
    for item in filter(None, (i.strip() for i in str(text).split(","))):
        parts = item.split(":")
        require(len(parts) == size, f"{what}: expected {size} ':'-separated numbers per item, got {item!r}")
        try:
            out.append(tuple(int(v) for v in parts[:2]) + tuple(float(v) for v in parts[2:]))
        except ValueError:
            raise SpikevitError(f"{what}: cannot read {item!r}") from None
    return out


# --------------------------------------------------------------------------- the runs of each table


def _dts(p: dict, groupings, lambdas, init: int, tmax: int, no_mask: bool = False) -> list:
    """DTS runs from :func:`spikevit.dts.study_runs`, renamed with their initial / maximum time steps."""
    from spikevit.dts import StudyRun, study_runs

    runs = study_runs(p["arch"], tmax=tmax, init_steps=init, fixed_ts=(), lambdas=tuple(lambdas),
                      groupings=tuple(groupings), no_mask=no_mask, min_steps=p["min_steps"], grouping=p["grouping"])
    return [StudyRun(f"{r.name}-init{init}-max{tmax}", r.spec) for r in runs]


def _fixed(p: dict, ts, baselines: str = "") -> list:
    from spikevit.dts import study_runs

    return study_runs(p["arch"], tmax=1, fixed_ts=tuple(ts), lambdas=(), groupings=(), no_mask=False,
                      grouping=p["grouping"], baselines=baselines)


def table_runs(p: dict) -> list:
    """The study runs of ``p["table"]`` (names unique, every name fixing its whole design)."""
    table = str(p["table"])
    tables = {"1", "3", "4", "5", "fig2", "3-5"}
    require(table in tables, f"table {table!r}: choose from {sorted(tables)}")
    init, tmax, lam = p["init_steps"], p["tmax"], p["lambda_m"]
    runs = []
    if table == "1":
        runs += _fixed(p, _ints(p["fixed_ts"], "fixed_ts"), p["baselines"])
        for i, t, lm in _items(p["dts_rows"], "dts_rows", 3):
            runs += _dts(p, ["qkv,mlp"], [lm], i, t)
    if table in ("3", "3-5"):
        runs += _dts(p, ["all", "qkv,attn,mlp", "qkv,mlp"], [lam], init, tmax, no_mask=True)
    if table in ("4", "3-5"):
        lams = sorted(_floats(p["table4_lambdas"], "table4_lambdas"), reverse=True)
        require(bool(lams), "table4_lambdas: give at least one lambda_m")
        for i in _ints(p["table4_inits"], "table4_inits"):
            require(i <= tmax, f"table4_inits: initial time step {i} exceeds tmax {tmax}")
            runs += _dts(p, ["qkv,mlp"], lams, i, tmax)
        for i, t in _items(p["table4_extra"], "table4_extra", 2):
            runs += _dts(p, ["qkv,mlp"], lams[:1], i, t)
    if table in ("5", "3-5"):
        runs += _fixed(p, _ints(p["fixed_ts"], "fixed_ts"))
        runs += _dts(p, ["qkv,mlp"], [lam], init, tmax)
    if table in ("fig2", "3-5"):
        require(p["fig2_t"] >= 2, "fig2_t: Fig. 2 compares step 1 with later steps, so it needs >= 2 steps")
        runs += _fixed(p, [p["fig2_t"]])
    unique = {}
    for r in runs:
        unique.setdefault(r.name, r)
    return list(unique.values())


def train_config(p: dict, device: str | None):
    from spikevit.train import TrainConfig

    return TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], min_lr=p["min_lr"],
                       warmup_epochs=p["warmup_epochs"], weight_decay=p["weight_decay"], seed=p["seed"],
                       eval_every=p["epochs"], workers=p["workers"], device=device or "auto")


def work_dir(ctx: Context, p: dict, config) -> Path:
    """Folder of the study runs: one per training budget (data, model, optimisation, seed)."""
    if p["work_dir"]:
        return Path(p["work_dir"])
    budget = {k: p[k] for k in ("dataset", "arch", "img_size", "grouping", "train_subset", "test_subset", "seed")}
    budget["config"] = {k: v for k, v in config.to_dict().items() if k not in config.RESUME_FREE}
    key = hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:10]
    return Path(ctx.cache).parent / "dts-runs" / f"{p['dataset']}-{p['arch']}-{key}"


# --------------------------------------------------------------------------- ours beside the paper


def _paper_dataset(dataset: str) -> str:
    """The paper's dataset our rows are compared with (its ablations are CIFAR-100 only)."""
    return dataset if dataset in TABLE1 else "cifar100"


def compare_table1(rows: list[dict], dataset: str) -> list[dict]:
    """Table I / II: each of our fixed-T, TET, Hoyer and DTS runs beside the paper's row of the same method
    and T (DTS: the paper's DTS rows in order of T_avg, ours likewise)."""
    ref = _paper_dataset(dataset)
    paper = {("Spikformer" if m == "Spikformer" else m, t): a for m, t, a in TABLE1[ref] + TABLE2.get(ref, [])}
    paper_dts = sorted((t, a) for m, t, a in TABLE1[ref] if m == "DTS")
    ours_dts = sorted((r for r in rows if r["type"] == "DTS"), key=lambda r: r["T_avg"])
    out = []
    for r in rows:
        method = {"fixed-T": "Spikformer"}.get(r["type"], r["type"])
        row = {"run": r["run"], "method": method, "T_avg": r["T_avg"], "acc1": r["acc1"],
               "SOPs_M": r["SOPs_M"], "energy_uJ": r["energy_uJ"], "paper_dataset": ref}
        if method == "DTS":
            k = ours_dts.index(r)
            t, a = paper_dts[k] if k < len(paper_dts) else (None, None)
        else:
            t, a = (r["Tmax"], paper.get((method, r["Tmax"])))
        row |= {"paper_T": t if a is not None else None, "paper_acc1": a}
        out.append(row)
    for m, t, a in TABLE1[ref]:
        if m.startswith("CCT"):
            out.append({"run": None, "method": m, "T_avg": None, "acc1": None, "paper_dataset": ref,
                        "paper_T": t, "paper_acc1": a})
    return out


def compare_table3(rows: list[dict], p: dict) -> list[dict]:
    """Table III: our DTS runs at (init_steps, tmax, lambda_m) by mask-loss groups beside the paper's rows."""
    paper = {g: (a, ts, sa, sops) for g, a, ts, sa, sops in TABLE3}
    out = []
    for r in rows:
        g = r["grouping"]
        if r["type"] != "DTS" or g not in paper or (r["init_TS"], r["Tmax"]) != (p["init_steps"], p["tmax"]):
            continue
        if g != "no mask loss" and r["lambda_m"] != p["lambda_m"]:
            continue
        a, ts, sa, sops = paper[g]
        out.append({"mask_loss_groups": g, "run": r["run"], "lambda_m": r["lambda_m"], "acc1": r["acc1"],
                    "TS": r["T_avg"], "SA_percent": r["SA_percent"], "SOPs_M": r["SOPs_M"],
                    "paper_acc1": a, "paper_TS": ts, "paper_SA_percent": sa, "paper_SOPs_M": sops})
    order = [g for g, *_ in TABLE3]
    return sorted(out, key=lambda r: order.index(r["mask_loss_groups"]))


def compare_table4(rows: list[dict], lambdas: list[float]) -> list[dict]:
    """Table IV: our qkv+mlp runs by (init, tmax, rank of lambda_m) beside the paper's row of the same
    (init, tmax) and the paper's lambda_m of the same rank (1e-4 the larger, 1e-6 the smaller)."""
    lams = sorted(lambdas, reverse=True)
    paper_lams = sorted({r[2] for r in TABLE4}, reverse=True)
    paper = {(i, t, lm): (a, ts, sa, sops) for i, t, lm, a, ts, sa, sops in TABLE4}
    out = []
    for r in rows:
        if r["type"] != "DTS" or r["grouping"] != "qkv+mlp" or r["lambda_m"] not in lams:
            continue
        rank = lams.index(r["lambda_m"])
        plm = paper_lams[rank] if rank < len(paper_lams) else None
        a, ts, sa, sops = paper.get((r["init_TS"], r["Tmax"], plm), (None,) * 4)
        out.append({"init_TS": r["init_TS"], "max_TS": r["Tmax"], "lambda_m": r["lambda_m"], "run": r["run"],
                    "acc1": r["acc1"], "TS": r["T_avg"], "SA_percent": r["SA_percent"], "SOPs_M": r["SOPs_M"],
                    "paper_lambda_m": plm, "paper_acc1": a, "paper_TS": ts, "paper_SA_percent": sa,
                    "paper_SOPs_M": sops})
    return sorted(out, key=lambda r: (r["init_TS"], r["max_TS"], -r["lambda_m"]))


def compare_table5(energy_rows: list[dict], dataset: str) -> list[dict]:
    """Table V: energies normalised to each DTS run, beside the paper's rows (NS ViT, Spik. SNN at the
    paper's iso-accuracy T, DTS SNN)."""
    ref = dataset if dataset in TABLE5 else "cifar100"
    paper = {m: (ts, ce, me, te) for m, ts, ce, me, te in TABLE5[ref]}
    out = []
    for e in energy_rows:
        kind = ("NS ViT" if e["model"] == "NS ViT" else "DTS SNN" if e["model"] == e["reference"] else
                "Spik. SNN")
        ts, ce, me, te = paper[kind]
        out.append({"reference": e["reference"], "model": e["model"], "type": kind, "TS": e["TS"], "acc1": e["acc1"],
                    "norm_CE": e["norm_CE"], "norm_ME": e["norm_ME"], "norm_TE": e["norm_TE"],
                    "total_uJ": e["total_uJ"], "paper_dataset": ref, "paper_TS": ts, "paper_norm_CE": ce,
                    "paper_norm_ME": me, "paper_norm_TE": te})
    return out


def fig2_groups(study_json: Path) -> list[dict]:
    """Mean / min / max cosine similarity (step 1 vs later steps) per layer group of the Fig. 2 table."""
    doc = json.loads(study_json.read_text())
    rows = doc.get("tables", {}).get("Fig. 2 time-step sensitivity", [])
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["cosine_step1_vs_later"])
    return [{"group": g, "layers": len(v), "cosine_mean": statistics.fmean(v), "cosine_min": min(v),
             "cosine_max": max(v)} for g, v in groups.items()]


# --------------------------------------------------------------------------- run


def run(ctx: Context, p: dict) -> Path:
    from spikevit.dts import StudyParams, run_study

    runs = table_runs(p)
    config = train_config(p, ctx.device)
    work = work_dir(ctx, p, config)
    if p["download"]:
        from spikevit.data import load_dataset

        for split in ("train", "test"):
            load_dataset(p["dataset"], ctx.data_root, split, None, True)
    table = str(p["table"])
    fig2_run = f"fixed-T{p['fig2_t']}" if table in ("fig2", "3-5") else None
    study_json = ctx.path("-study.json")
    study_json.parent.mkdir(parents=True, exist_ok=True)
    params = StudyParams(str(work), arch=p["arch"], tmax=p["tmax"], init_steps=p["init_steps"],
                         min_steps=p["min_steps"], grouping=p["grouping"], train=config, dataset=p["dataset"],
                         data_root=None if ctx.data_root is None else str(ctx.data_root),
                         train_subset=p["train_subset"] or None, test_subset=p["test_subset"] or None,
                         img_size=p["img_size"] or None, fig2_run=fig2_run, eval_batches=p["eval_batches"] or None,
                         data_seed=p["seed"], json=str(study_json))
    res = run_study(params, runs, command=ctx.command or f"spikevit reproduce {ctx.name}", verbose=False)
    rows, energy = res.tables["runs"], res.tables["energy (Table V shape)"]
    tables, results = {}, {"runs": len(rows), "study_report": study_json.name, "work_dir": str(work)}
    if table == "1":
        tables["Table I / II: ours beside the paper"] = compare_table1(rows, p["dataset"])
    if table in ("3", "3-5"):
        tables["Table III: ours beside the paper"] = compare_table3(rows, p)
    if table in ("4", "3-5"):
        tables["Table IV: ours beside the paper"] = compare_table4(rows, _floats(p["table4_lambdas"], "lambdas"))
    if table in ("5", "3-5"):
        tables["Table V: ours beside the paper"] = compare_table5(energy, p["dataset"])
    if table in ("fig2", "3-5"):
        groups = fig2_groups(study_json)
        require(bool(groups), f"the study wrote no Fig. 2 table (run fixed-T{p['fig2_t']} missing?)")
        tables["Fig. 2: cosine similarity of LIF inputs, step 1 vs later steps, per group"] = groups
        results["fig2_paper"] = FIG2
    tables["all runs (study)"] = rows
    for name, t in tables.items():
        results[name] = t
    paper_scale = p["arch"] in ("spikformer-4-384", "spikformer-8-512") and not p["train_subset"]
    notes = (f"{p['dataset']}, {p['arch']}, {p['epochs']} epochs, batch {p['batch_size']}, lr {p['lr']}, "
             f"{p['train_subset'] or 'all'} training / {p['test_subset'] or 'all'} test images, seed {p['seed']}; "
             f"every run of this table trained with the same budget by spikevit.dts.run_study (full study "
             f"report: {study_json.name}). The paper: CIFAR-10/100 with Spikformer-4-384 (32x32, AdamW lr 4e-3, "
             "batch 256) and ImageNet with Spikformer-8-512 (224x224, lr 1e-3, batch 168, 300 epochs); its "
             "ablations (Tables III-IV) and the Table V CIFAR-100 rows are CIFAR-100. "
             + ("" if paper_scale else
                "This is a small CPU-sized study, NOT the paper's scale: compare the shapes (which grouping keeps "
                "more steps, how T_avg moves with lambda_m and the initial step, how energy scales with T), not "
                "the absolute numbers. The paper's lambda_m (1e-6 / 1e-4) barely moves the time steps within "
                "a few epochs here, so larger values are used; Table IV rows are matched by rank of lambda_m. ")
             + "T = T_avg (Eq. 3); SA = spiking activity; SOPs per image; energy with the paper's 45 nm "
             "constants (AC 1.8 pJ, MAC 13.32 pJ, zero check 0.05 pJ) and membrane reads/writes.")
    figures = [Path(f) for f in res.figures]
    return report(ctx, p, results, tables, title=f"DTS-SNN {'Fig. 2' if table == 'fig2' else 'Table ' + table}: "
                  f"ours beside the paper", notes=notes, figures=figures)
