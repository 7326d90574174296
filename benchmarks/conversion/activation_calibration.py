"""Few-spike activations at ``spiking="all"``: the shipped neuron (fitted once on a fixed domain) against the
neuron fitted to each layer's calibrated inputs (``convert(..., activation_fit="range" | "polish")``), on a
trained model and a seeded test subset, side by side in one run.

Per variant (coding x activation fit): top-1 and loss of the converted model, its fidelity to the ANN on the
same images (agreement of the top-1 predictions, mean cosine of the logits), and per few-spike activation
layer the RMSE of the neuron against the exact function on the layer's calibrated inputs, before (shipped
neuron) and after the fit.  Resumable: each variant's result is written to ``<out>/runs/<variant>.json`` and
skipped when present.

    flock /tmp/spikevit-heavy.lock nice -n 5 .venv/bin/python benchmarks/conversion/activation_calibration.py \\
        --model vit-cifar-tiny --checkpoint results/conversion/vit-cifar-tiny/tanh/model.safetensors \\
        --data-root DATA --test-subset 1000 --out results/conversion/fewspike/activation_fit_vit-cifar-tiny
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spikevit.conversion import convert
from spikevit.conversion.resolve import calibration_images, evaluation_split, resolve_model
from spikevit.data import dataset_spec
from spikevit.reports import write_report
from spikevit.runtime import pick_device, seed_everything
from spikevit.validation import arg_device, arg_positive_int

FITS = ("shipped", "range", "polish")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--img-size", type=arg_positive_int, default=None)
    ap.add_argument("--steps", type=arg_positive_int, default=12)
    ap.add_argument("--codings", default="rate,fewspike")
    ap.add_argument("--fits", default=",".join(FITS))
    ap.add_argument("--test-subset", type=arg_positive_int, default=1000)
    ap.add_argument("--calibration-samples", type=arg_positive_int, default=256)
    ap.add_argument("--batch-size", type=arg_positive_int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", type=arg_device, default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    codings = [c for c in args.codings.split(",") if c]
    fits = [f for f in args.fits.split(",") if f]
    bad = [f for f in fits if f not in FITS] + [c for c in codings if c not in ("rate", "fewspike")]
    if bad:
        ap.error(f"unknown --fits / --codings entries {bad}")
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    # the pipeline's seeded subsets (spikevit.conversion.run): test subset seed + 1, calibration seed + 2
    seed_everything(args.seed)
    dev = pick_device(args.device)
    spec = dataset_spec(args.dataset)
    net, _ = resolve_model(args.model, args.checkpoint, num_classes=spec.num_classes, img_size=args.img_size)
    net = net.to(dev).eval()
    test = evaluation_split(args.dataset, args.data_root, args.test_subset, args.seed, img_size=args.img_size)
    loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, shuffle=False, num_workers=0)
    cal = calibration_images(args.dataset, args.data_root, args.calibration_samples, args.seed, img_size=args.img_size)

    def cached(name: str, work) -> dict:
        path = out / "runs" / f"{name}.json"
        if path.exists():
            row = json.loads(path.read_text())
            if "agreement" in row:
                print(f"{name}: done ({path})", flush=True)
                return row
        row = work()
        path.write_text(json.dumps(row, indent=1) + "\n")
        return row

    @torch.no_grad()
    def logits_of(model) -> tuple[torch.Tensor, torch.Tensor]:
        outs, ys = [], []
        for xb, yb in loader:
            outs.append(model(xb.to(dev)).float().cpu())
            ys.append(yb)
        return torch.cat(outs), torch.cat(ys)

    ann_logits, labels = logits_of(convert(net, args.steps, blocks=0))

    def scores(lg: torch.Tensor) -> dict:
        pred = lg.argmax(1)
        return {"acc1": 100.0 * float((pred == labels).double().mean()),
                "loss": float(F.cross_entropy(lg.double(), labels)), "samples": int(labels.numel()),
                "agreement": 100.0 * float((pred == ann_logits.argmax(1)).double().mean()),
                "logit_cosine": float(F.cosine_similarity(lg.double(), ann_logits.double(), 1).mean())}

    rows = [cached("ann", lambda: {"variant": "ANN", **scores(ann_logits)})]
    print(f"ANN: {rows[0]['acc1']:.2f} %", flush=True)
    layers = []
    for coding in codings:
        for fit in fits:
            def work(coding=coding, fit=fit) -> dict:
                t0 = time.time()
                snn = convert(net, args.steps, spiking="all", calibration=cal, coding=coding, activation_fit=fit)
                seconds = time.time() - t0
                r = scores(logits_of(snn)[0])
                info = (snn.sit_conversion.get("activation_fit") or {}).get("layers", {})
                return {"variant": f"all/{coding}/{fit}", "coding": coding, "activation_fit": fit, **r,
                        "acc_change": None, "convert_seconds": round(seconds, 1),
                        "activation_steps": snn.sit_conversion["activation_steps"], "layers": info}
            row = cached(f"all_{coding}_{fit}", work)
            row["acc_change"] = row["acc1"] - rows[0]["acc1"]
            rows.append(row)
            print(f"all / {coding} / {fit}: {row['acc1']:.2f} % ({row['acc_change']:+.2f}), agreement with the "
                  f"ANN {row['agreement']:.1f} %, logit cosine {row['logit_cosine']:.5f}, "
                  f"convert {row['convert_seconds']} s", flush=True)
            if coding == codings[0]:
                for name, v in row["layers"].items():
                    layers.append({"layer": name, "fit": fit, "rmse_shipped": v["rmse_before"], "rmse": v["rmse"],
                                   "domain_lo": v["domain"][0], "domain_hi": v["domain"][1],
                                   "changed": v["changed"], "samples": v["samples"]})
    table = [{k: v for k, v in r.items() if k != "layers"} for r in rows]
    command = "python benchmarks/conversion/activation_calibration.py " + " ".join(
        shlex.quote("DATA" if a == args.data_root else a) for a in (argv if argv is not None else sys.argv[1:]))
    base = {r["variant"]: r for r in table}
    results = {"ann_acc1": rows[0]["acc1"], "samples": rows[0]["samples"],
               **{f"{r['variant']}_acc1": r["acc1"] for r in table[1:]},
               **{f"{r['variant']}_agreement": r["agreement"] for r in table[1:]}}
    notes = (f"{args.model} converted at spiking='all', K = {args.steps}, on a seeded class-balanced subset of "
             f"{rows[0]['samples']} {args.dataset} test images (the conversion pipeline's subset, seed "
             f"{args.seed} + 1); {len(cal)} seeded training images calibrate every neuron.  `shipped`: the "
             "few-spike activations use the shipped fit on its fixed domain (the behaviour before activation "
             "fitting); `range`: each layer's neuron is moved onto its inputs' range and its output weights "
             "refitted by least squares on them (the default); `polish`: also 150 Adam steps on its "
             "thresholds and discharges.  `agreement`: % of images whose top-1 prediction is the ANN's; "
             "`logit_cosine`: mean per-image cosine of the logits with the ANN's.  Layer RMSEs are measured on "
             "each layer's recorded calibration inputs (up to 65,536 values), for the first coding listed.")
    if "all/rate/shipped" in base and "all/rate/range" in base:
        results["range_minus_shipped_rate"] = base["all/rate/range"]["acc1"] - base["all/rate/shipped"]["acc1"]
    write_report(out / "activation_fit.json", command, vars(args), results,
                 {"accuracy": table, "activation_layers": layers},
                 title=f"Few-spike activations fitted to calibrated inputs: {args.model}", notes=notes)
    print(f"wrote {out / 'activation_fit.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
