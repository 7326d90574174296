"""DTS measurements of trained Spikformers: the engine (``spikevit.dts.measure``) against the hand formulas
it replaced, on the same models and test images.

For each training directory (``spikevit dts train --out DIR``) the test subset is measured once by the
engine; the hand formulas (S_in x dense MACs per conv, exact pair counts for attention, token-averaged
head; see ``benchmarks/profile_spikformer.py``) run over the same batches.  Zero checks and membrane
accesses are the same in both, so energies differ only through the SOPs; the table shows accuracy,
T_avg, spiking activity, SOPs and energy both ways and, per layer, every SOP difference.

    python benchmarks/profile_dts_measure.py --runs RUNS/fixed-T4 RUNS/dts-qkv+mlp-lam1e-2 --data-root DATA

Results: results/profile/dts_measure.json (+ .md, .csv).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from profile_spikformer import hand_counts

from spikevit.data import load_dataset
from spikevit.dts import measure
from spikevit.energy import get_energy_model
from spikevit.energy.dts import snn_energy
from spikevit.reports import write_report
from spikevit.train import build_transforms, seeded_subset
from spikevit.train.checkpoint import load_trained_model


def hand_sops(model, loader, device) -> dict[str, float]:
    """Per layer: the hand formulas' SOPs (or encoding MACs), summed over the loader (masked steps skipped)."""
    model.eval().set_skip_masked(True)
    total: dict[str, float] = {}
    for x, _ in loader:
        for name, r in hand_counts(model, x.to(device)).items():
            total[name] = total.get(name, 0.0) + r["sops"]
    return total


def _calibrated(spec: str, args):
    """A random DTS / fixed-T Spikformer whose batch norms hold the statistics of 500 training images."""
    from torch import nn

    from spikevit.train import build_model

    tmax, _, init = spec.partition(":")
    dts = bool(init)
    extra = {"tmax": int(tmax), "dts": dts, **({"init_steps": int(init)} if dts else {})}
    model, run = build_model(args.arch, args.dataset, None, extra, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    for m in model.spiking_layers().values():
        if m.dtss is not None:                               # gates: random kept-step prefixes
            m.dtss.tp.data.copy_(torch.randn(m.dtss.tp.shape, generator=g))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    size = run["model_kwargs"].get("img_size")
    train = seeded_subset(load_dataset(args.dataset, args.data_root, "train",
                                       build_transforms(args.dataset, False, False, size)), 500, args.seed)
    model.train()
    with torch.no_grad():
        for x, _ in torch.utils.data.DataLoader(train, batch_size=100):
            model(x)
    name = f"calibrated-{'dts' if dts else 'fixed'}-T{tmax}" + (f"-init{init}" if dts else "")
    return name, model.eval(), run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=[], help="training directories holding model.safetensors")
    ap.add_argument("--calibrated", nargs="*", default=None, metavar="TMAX[:INIT]",
                    help="instead of trained runs: random spikformer-1-64 models (4:2 = DTS, tmax 4, 2 kept steps "
                         "to start, random gates; 4 = fixed T 4) with batch-norm statistics of training images")
    ap.add_argument("--arch", default="spikformer-1-64")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--energy-model", default="dts45nm")
    ap.add_argument("--out", default=str(REPO / "results" / "profile" / "dts_measure.json"))
    args = ap.parse_args()
    device = torch.device("cpu")
    em = get_energy_model(args.energy_model)
    summary_rows, layer_rows, results = [], [], {}
    models = [(Path(r).name, *load_trained_model(Path(r) / "model.safetensors")) for r in args.runs]
    for spec in args.calibrated or []:
        models.append(_calibrated(spec, args))
    for name, model, run in models:
        size = run.get("model_kwargs", {}).get("img_size")
        test = load_dataset(args.dataset, args.data_root, "test", build_transforms(args.dataset, False, False, size))
        test = seeded_subset(test, args.test_subset, args.seed)
        loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, shuffle=False)
        meas = measure(model, loader, device, desc=f"measure {name}")
        hand = hand_sops(model, loader, device)
        old = copy.deepcopy(meas)
        for s in old.synaptic:
            if s.kind == "spiking":
                s.sops = hand[s.name] / meas.samples
        e_new = snn_energy(meas.synaptic, meas.membranes, em)
        e_old = snn_energy(old.synaptic, old.membranes, em)
        row = {"run": name, "acc1": meas.acc1, "samples": meas.samples, "T_avg": meas.t_avg,
               "SA_percent": meas.spiking_activity, "SOPs_M_engine": meas.sops / 1e6, "SOPs_M_hand": old.sops / 1e6,
               "SOPs_change_percent": 100 * (meas.sops - old.sops) / old.sops if old.sops else None,
               "energy_uJ_engine": 1e6 * e_new["total_J"], "energy_uJ_hand": 1e6 * e_old["total_J"],
               "energy_change_percent": 100 * (e_new["total_J"] - e_old["total_J"]) / e_old["total_J"]}
        summary_rows.append(row)
        results[name] = row
        for s_new, s_old in zip(meas.synaptic, old.synaptic):
            if s_new.kind != "spiking":
                continue
            same = abs(s_new.sops - s_old.sops) <= 1e-9 * max(1.0, s_old.sops)
            layer_rows.append({"run": name, "layer": s_new.name, "group": s_new.group, "steps": s_new.steps,
                               "SOPs_engine": s_new.sops, "SOPs_hand": s_old.sops,
                               "ratio": s_new.sops / s_old.sops if s_old.sops else None,
                               "same": same})
        print(f"{name}: SOPs {row['SOPs_M_hand']:.4f} M (hand) -> {row['SOPs_M_engine']:.4f} M (engine), "
              f"energy {row['energy_uJ_hand']:.4f} -> {row['energy_uJ_engine']:.4f} uJ", flush=True)
    notes = ("Same models (trained runs, or random ones with data batch-norm statistics where named 'calibrated'), same test images, masked steps skipped. Engine: spikevit.dts.measure (the "
             "operator-level profile). Hand: the formulas the DTS measurements used before. Differences: 3x3 SPS "
             "convs (the hand formula charged kernel taps on the zero padding; the engine counts the accumulates "
             "performed) and the classifier (token-averaged spikes are graded: one accumulate per spike and "
             "class; the hand formula divided the spike count by the number of tokens). 1x1 convs and the "
             "attention products agree exactly. Zero checks and membrane accesses are unchanged.")
    cmd = "python benchmarks/profile_dts_measure.py" + \
        (" --runs " + " ".join(f"RUNS/{Path(r).name}" for r in args.runs) if args.runs else "") + \
        (" --calibrated " + " ".join(args.calibrated) if args.calibrated else "") + \
        f" --data-root DATA --dataset {args.dataset} --test-subset {args.test_subset} --batch-size {args.batch_size}"
    write_report(args.out, cmd, {k: v for k, v in vars(args).items() if k not in ("runs", "data_root", "out")},
                 results, tables={"runs": summary_rows, "layers": layer_rows},
                 title="DTS measurements: engine vs hand formulas on the same models", notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
