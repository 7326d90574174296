"""Fully spiking SIT-conversion study: layer-by-layer tables at K = 12 for the three ``spiking`` levels, then
accuracy / energy vs K (SI-exp K = coding T) -- one ``spikevit.conversion.run`` per configuration.

Resumable: a configuration whose JSON exists is skipped (run the same command again after a kill); each
configuration is one process-sized piece of work.  ``--summary`` only collects the finished JSONs into
``<out>/summary.{json,md}``.

    flock /tmp/spikevit-heavy.lock nice -n 5 .venv/bin/python benchmarks/conversion/levels_study.py \
        --model vit-cifar-tiny --checkpoint results/conversion/vit-cifar-tiny/tanh/model.safetensors \
        --data-root DATA --out results/conversion/vit-cifar-tiny/levels --part tables
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

LEVELS = ("softmax", "attention", "all")


def configs(part: str, ks: list[int], coding: str, out_dir: Path) -> list[dict]:
    """Layer-by-layer runs at K = 12 ("tables"), whole-model runs at each K ("sweep"; K = 12 only if no
    layer-by-layer report of that level exists: its last row is the whole model)."""
    out = []
    if part in ("tables", "both"):
        out += [{"spiking": lv, "steps": 12, "layer_by_layer": True, "coding": coding} for lv in LEVELS]
    if part in ("sweep", "both"):
        for k in ks:
            for lv in LEVELS:
                lbl = {"spiking": lv, "steps": 12, "layer_by_layer": True, "coding": coding}
                if k == 12 and (part == "both" or (out_dir / f"{name_of(lbl)}.json").exists()):
                    continue
                out.append({"spiking": lv, "steps": k, "layer_by_layer": False, "coding": coding})
    return out


def name_of(c: dict) -> str:
    tag = "" if c["coding"] == "rate" or c["spiking"] == "softmax" else f"_{c['coding']}"
    return f"{c['spiking']}{tag}_k{c['steps']}" + ("_lbl" if c["layer_by_layer"] else "")


def summary(out: Path) -> None:
    from spikevit.reports import write_report

    rows, tables = [], []
    for f in sorted(out.glob("*.json")):
        if f.name.startswith("summary"):
            continue
        doc = json.loads(f.read_text())
        r = doc["results"]
        rows.append({"spiking": r["spiking"], "coding": r.get("coding"), "K": r["steps"],
                     "ann_acc1": r["ann"]["acc1"], "snn_acc1": r["snn"]["acc1"],
                     "change_points": r["conversion_loss_points"], "snn_loss": r["snn"]["loss"],
                     "energy_ann_mJ": r["energy"]["energy_ann_mJ"], "energy_snn_mJ": r["energy"]["energy_snn_mJ"],
                     "energy_change_percent": r["energy"]["energy_change_percent"],
                     "spikes_per_neuron": r.get("spikes_per_neuron"), "images": r["snn"]["samples"],
                     "report": f.name})
        if len(doc["tables"]["layer_by_layer"]) > 2:
            for t in doc["tables"]["layer_by_layer"]:
                tables.append({"spiking": r["spiking"], "K": r["steps"], **t})
    rows.sort(key=lambda r: (LEVELS.index(r["spiking"]), r["K"]))
    write_report(out / "summary.json", "benchmarks/conversion/levels_study.py --summary", {"out": str(out)},
                 {"configurations": len(rows)}, tables={"levels_vs_K": rows, "layer_by_layer_K12": tables},
                 title="SIT-conversion by spiking level: accuracy and energy vs K",
                 notes="One row per spikevit.conversion.run report in this folder (full test split unless "
                       "'images' says otherwise).  Energy from spikevit.energy.profile on the first 500 test "
                       "images (45 nm: E_MAC 4.6 pJ, E_AC 0.9 pJ).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", default="both", choices=["tables", "sweep", "both"])
    ap.add_argument("--ks", default="4,8,12,16")
    ap.add_argument("--coding", default="rate", choices=["rate", "fewspike"])
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--only", default=None, help="comma list of levels to run")
    ap.add_argument("--summary", action="store_true", help="only collect finished reports")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.summary:
        from spikevit.conversion import ConversionParams, run

        for c in configs(args.part, [int(k) for k in args.ks.split(",")], args.coding, out):
            if args.only and c["spiking"] not in args.only.split(","):
                continue
            if c["spiking"] == "softmax" and c["coding"] != "rate":
                continue
            path = out / f"{name_of(c)}.json"
            if path.exists():
                print(f"skip {path} (done)", flush=True)
                continue
            cmd = (f"spikevit convert run --model {args.model} --checkpoint {args.checkpoint} --dataset "
                   f"{args.dataset} --data-root DATA --steps {c['steps']} --spiking {c['spiking']} --coding "
                   f"{c['coding']}" + ("" if c["layer_by_layer"] else " --no-layer-by-layer")
                   + (f" --test-subset {args.test_subset}" if args.test_subset else "")
                   + (f" --img-size {args.img_size}" if args.img_size else "") + f" --json {path}")
            run(ConversionParams(args.model, args.checkpoint, dataset=args.dataset, data_root=args.data_root,
                                 steps=c["steps"], spiking=c["spiking"], coding=c["coding"],
                                 layer_by_layer=c["layer_by_layer"], batch_size=args.batch_size,
                                 test_subset=args.test_subset, img_size=args.img_size,
                                 sweep_steps=tuple(range(4, 17)) if c["layer_by_layer"] else (), json=str(path)),
                command=cmd)
    summary(out)


if __name__ == "__main__":
    main()
