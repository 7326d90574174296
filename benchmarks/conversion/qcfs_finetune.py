"""Quantisation-aware (QCFS / MST-style) fine-tuning before a rate-coded conversion, measured side by side.

For one T (rate-coded IF pairs over T steps, SI-exp K = T, ``spiking="all"`` by default), in one run:

1. the ANN (the committed spikevit model file) on the test split;
2. its plain conversion: thresholds calibrated on ``--calibration-samples`` seeded training images;
3. a short quantisation-aware fine-tune (:func:`spikevit.conversion.qcfs.finetune`: the project's trainer,
   AdamW + warmup/cosine, one pass over ``--train-images`` seeded augmented training images; thresholds
   start from the same calibration and learn ``--theta-lr-scale`` x faster), wall time recorded;
4. the spiking model of the fine-tuned one (learned thresholds, no re-calibration):
   ``convert(qat, T, spiking=..., coding="rate")``;
5. ablations: the fine-tuned weights as a plain ANN (quantisers removed), and re-converted with plain
   calibration (fine-tuned weights, calibrated instead of learned thresholds).

Accuracy: top-1 / loss on the test split (all 10,000 CIFAR-10 images unless ``--test-subset``).  Energy: the
operator profile (:mod:`spikevit.energy.profile`, 45 nm E_MAC 4.6 pJ / E_AC 0.9 pJ) of each model on the
first ``--energy-batches`` test batches.  Writes ``<out>/qcfs_t<T>.{json,md,csv}``; the fine-tuned weights
(spikevit model file) and the neurons' parameters go to ``<out>/t<T>/``.  Resumable: finished rows are kept
in ``<out>/qcfs_t<T>.partial.json`` and a finished fine-tune is loaded from ``<out>/t<T>/``.
``--summary`` collects every ``qcfs_t*.json`` into ``<out>/summary.{json,md}``.

    flock /tmp/spikevit-heavy.lock nice -n 5 .venv/bin/python benchmarks/conversion/qcfs_finetune.py \\
        --data-root DATA --T 4 --out results/conversion/vit-cifar-tiny/qcfs
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from spikevit.cli.common import add_data_args, add_device_arg
from spikevit.validation import (
    arg_non_negative_int,
    arg_positive_float,
    arg_positive_int,
)

ROWS = ("ann", "plain", "qcfs", "finetuned_ann", "finetuned_recalibrated")
LABELS = {"ann": "ANN (committed weights)",
          "plain": "converted, calibrated thresholds (before)",
          "qcfs": "converted after QCFS fine-tune, learned thresholds (after)",
          "finetuned_ann": "ablation: fine-tuned weights as ANN (quantisers removed)",
          "finetuned_recalibrated": "ablation: fine-tuned weights, re-calibrated thresholds"}


def energy_of(model, loader, device, batches: int, energy_model) -> dict:
    """Energy per image (mJ), MACs, ACs and spikes per neuron from the operator profile of ``batches`` batches."""
    from spikevit.energy.profile import profiling

    model.eval()
    with torch.no_grad(), profiling(model) as prof:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device))
    n = max(prof.samples, 1)
    return {"energy_mJ": prof.energy(energy_model) / n * 1e3, "macs": prof.macs / n, "acs": prof.acs / n,
            "spikes_per_neuron": prof.spikes / prof.neurons if prof.neurons else 0.0, "images_profiled": n}


def logits_agree(a_model, b_model, x) -> dict:
    with torch.no_grad():
        a, b = a_model(x), b_model(x)
    cos = torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0)
    return {"max_abs_diff": float((a - b).abs().max()), "cosine": float(cos),
            "same_argmax_fraction": float((a.argmax(1) == b.argmax(1)).float().mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-cifar-tiny", help="registry name of the model in --checkpoint")
    ap.add_argument("--checkpoint", default="results/conversion/vit-cifar-tiny/tanh/model.safetensors")
    add_data_args(ap, "cifar10")
    ap.add_argument("--T", type=arg_positive_int, default=4, help="time steps of the rate code (and SI-exp K)")
    ap.add_argument("--spiking", default="all", choices=("attention", "all"))
    ap.add_argument("--train-images", type=arg_positive_int, default=25600,
                    help="seeded augmented training images of the one fine-tuning pass")
    ap.add_argument("--batch-size", type=arg_positive_int, default=128)
    ap.add_argument("--lr", type=arg_positive_float, default=2e-4)
    ap.add_argument("--theta-lr-scale", type=arg_positive_float, default=10.0)
    ap.add_argument("--calibration-samples", type=arg_positive_int, default=256)
    ap.add_argument("--energy-batches", type=arg_positive_int, default=2)
    ap.add_argument("--eval-batch-size", type=arg_positive_int, default=250)
    ap.add_argument("--test-subset", type=arg_positive_int, default=None)
    ap.add_argument("--seed", type=arg_non_negative_int, default=0)
    ap.add_argument("--no-ablation", action="store_true", help="skip the two ablation rows")
    ap.add_argument("--out", default="results/conversion/vit-cifar-tiny/qcfs")
    ap.add_argument("--summary", action="store_true", help="only collect <out>/qcfs_t*.json into a summary")
    add_device_arg(ap)
    args = ap.parse_args(argv)
    from spikevit.errors import SpikevitError

    try:
        if args.summary:
            summary(Path(args.out))
        else:
            measure(args)
    except SpikevitError as exc:
        print(f"qcfs_finetune: error: {exc}", file=sys.stderr)
        return 2
    return 0


def measure(args) -> None:
    from spikevit.conversion import convert
    from spikevit.conversion.qcfs import (
        ann_state_dict,
        finetune,
        load_neurons,
        neuron_state,
        quantisation_aware,
        save_neurons,
    )
    from spikevit.conversion.resolve import calibration_images, evaluation_split
    from spikevit.energy import get_energy_model
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device, seed_everything
    from spikevit.train import TrainConfig, build_datasets, load_trained_model, save_model
    from spikevit.train.evaluate import evaluate
    from spikevit.validation import atomic_write_text, check_input_file

    check_input_file(args.checkpoint, "--checkpoint")
    T, out = args.T, Path(args.out)
    stem = out / f"qcfs_t{T}"
    work = out / f"t{T}"
    partial_path = Path(f"{stem}.partial.json")
    partial = json.loads(partial_path.read_text()) if partial_path.exists() else {}

    def keep(key: str, value) -> None:
        partial[key] = value
        atomic_write_text(partial_path, json.dumps(partial, indent=2) + "\n")

    seed_everything(args.seed)
    dev = pick_device(args.device)
    em = get_energy_model("sit45nm")
    ann, run = load_trained_model(args.checkpoint)
    if run.get("model") != args.model:
        raise SystemExit(f"--checkpoint holds a {run.get('model')!r} model, not {args.model!r}")
    ann = ann.to(dev).eval()
    test = evaluation_split(args.dataset, args.data_root, args.test_subset, args.seed, download=args.download)
    loader = torch.utils.data.DataLoader(test, batch_size=args.eval_batch_size, shuffle=False)
    cal = calibration_images(args.dataset, args.data_root, args.calibration_samples, args.seed,
                             download=args.download).to(dev)
    probe = next(iter(loader))[0][:64].to(dev)
    kw = {"spiking": args.spiking, "coding": "rate"}

    def measure_row(key: str, model) -> None:
        if key in partial.get("rows", {}):
            print(f"{LABELS[key]}: done before ({partial['rows'][key]['acc1']:.2f}%)", flush=True)
            return
        t0 = time.perf_counter()
        r = evaluate(model, loader, dev, desc=key)
        e = energy_of(model, loader, dev, args.energy_batches, em)
        row = {"acc1": r["acc1"], "loss": r["loss"], "samples": r["samples"], **e,
               "eval_seconds": round(time.perf_counter() - t0, 1)}
        keep("rows", {**partial.get("rows", {}), key: row})
        print(f"{LABELS[key]}: {row['acc1']:.2f}% top-1, loss {row['loss']:.4f}, {row['energy_mJ']:.4f} mJ/image",
              flush=True)

    measure_row("ann", ann)
    plain = convert(ann, T, calibration=cal, **kw)
    measure_row("plain", plain)

    # -- quantisation-aware fine-tune (or the one finished before) ------------------------------------------
    model_file, neurons_file = work / "model.safetensors", work / "neurons.safetensors"
    qat = quantisation_aware(ann, T, calibration=cal, spiking=args.spiking)
    if "init_check" not in partial:
        keep("init_check", logits_agree(qat.eval(), plain, probe))      # same model before training
    trained_now = not (model_file.exists() and neurons_file.exists())
    if trained_now:
        train_set, small_test = build_datasets(args.dataset, args.data_root, augment=True,
                                               train_subset=args.train_images, test_subset=1000, seed=args.seed,
                                               download=args.download)
        config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=args.lr, min_lr=args.lr / 100,
                             warmup_epochs=0.05, weight_decay=0.05, label_smoothing=0.1, clip_grad=1.0,
                             seed=args.seed, device=str(dev))
        t0 = time.perf_counter()
        res = finetune(qat, train_set, small_test, config, theta_lr_scale=args.theta_lr_scale)
        seconds = time.perf_counter() - t0
        info = {"T": T, "spiking": args.spiking, "init_from": args.checkpoint, "train_images": len(train_set),
                "optimizer_steps": len(train_set) // args.batch_size, "train_seconds": round(seconds, 1),
                "threads": torch.get_num_threads(), "device": str(dev), "config": config.to_dict(),
                "theta_lr_scale": args.theta_lr_scale, "history": res.history}
        ann_ft, _ = load_trained_model(args.checkpoint)
        ann_ft.load_state_dict(ann_state_dict(qat))
        save_model(model_file, ann_ft, {**run, "init_from": args.checkpoint,
                                        "qcfs": {k: v for k, v in info.items() if k != "history"}},
                   {"quantisation_aware_test_subset": res.final})
        save_neurons(neurons_file, neuron_state(qat), {k: v for k, v in info.items() if k != "history"})
        keep("finetune", info)
        print(f"fine-tuned {info['optimizer_steps']} steps in {seconds:.0f} s", flush=True)
    # the spiking model, rebuilt from the files: architecture + fine-tuned weights + the neurons' parameters
    ann_ft, _ = load_trained_model(model_file)
    ann_ft = ann_ft.to(dev).eval()
    neurons, _ = load_neurons(neurons_file)
    snn = convert(ann_ft, T, neurons=neurons, **kw)
    if trained_now:                  # the in-memory fine-tuned model against the spiking model from the files
        keep("lossless_check", logits_agree(qat.eval(), snn, probe))
    measure_row("qcfs", snn)
    if not args.no_ablation:
        measure_row("finetuned_ann", ann_ft)
        measure_row("finetuned_recalibrated", convert(ann_ft, T, calibration=cal, **kw))

    # -- report ----------------------------------------------------------------------------------------------
    rows = partial["rows"]
    base, e_ann = rows["ann"]["acc1"], rows["ann"]["energy_mJ"]
    table = [{"model": LABELS[k], "T": T, "spiking": "ANN" if k in ("ann", "finetuned_ann") else args.spiking,
              "acc1": rows[k]["acc1"], "change_points": rows[k]["acc1"] - base, "loss": rows[k]["loss"],
              "energy_mJ": rows[k]["energy_mJ"], "energy_change_percent": 100 * (rows[k]["energy_mJ"] - e_ann) / e_ann,
              "spikes_per_neuron": rows[k]["spikes_per_neuron"], "images": rows[k]["samples"]}
             for k in ROWS if k in rows]
    ftinfo = partial.get("finetune", {})
    history = [{"epoch": h["epoch"], "train_loss": h["train"].get("loss"), "train_acc1": h["train"].get("acc1"),
                "test_subset_acc1": h.get("test", {}).get("acc1")} for h in ftinfo.get("history", [])]
    results = {"T": T, "spiking": args.spiking, "rows": rows, "finetune": {k: v for k, v in ftinfo.items()
                                                                         if k != "history"},
               "init_check": partial.get("init_check"), "lossless_check": partial.get("lossless_check"),
               "before_points": rows["plain"]["acc1"] - base, "after_points": rows["qcfs"]["acc1"] - base}
    cmd = ("flock /tmp/spikevit-heavy.lock nice -n 5 .venv/bin/python benchmarks/conversion/qcfs_finetune.py "
           + " ".join(a if a != args.data_root else "DATA" for a in sys.argv[1:])).strip()
    write_report(f"{stem}.json", cmd, {k: (v if k != "data_root" else "DATA") for k, v in vars(args).items()},
                 results, tables={"accuracy_energy": table, "finetune": history,
                                  "checks": [{"check": "QCFS model at start vs plain conversion",
                                              **(partial.get("init_check") or {})},
                                             {"check": "fine-tuned QCFS model vs its conversion",
                                              **(partial.get("lossless_check") or {})}]},
                 title=f"QCFS fine-tuning before rate-coded conversion: {args.model}, spiking = {args.spiking}, T = {T}",
                 notes=notes(args, ftinfo))
    partial_path.unlink()
    print(f"wrote {stem}.json", flush=True)


def notes(args, ftinfo: dict) -> str:
    steps = ftinfo.get("optimizer_steps", "?")
    secs = ftinfo.get("train_seconds", "?")
    return (f"Rate coding at spiking = '{args.spiking}' with T = {args.T} steps (SI-exp K = {args.T}; GELU as the "
            "nearest shipped few-spike neuron, fitted to the calibration inputs' range).  'before': thresholds "
            f"calibrated on {args.calibration_samples} seeded training images.  'after': {steps} AdamW steps "
            f"(batch {args.batch_size}, lr {args.lr:g} warmup/cosine, thresholds x{args.theta_lr_scale:g}) of "
            "quantisation-aware fine-tuning with the project's trainer over seeded augmented training images, "
            f"{secs} s wall time on this machine; the spiking model takes the learned thresholds (no "
            "re-calibration).  The quantisation-aware model's forward is the converted model's (signed QCFS "
            "quantiser = decoded IF pair at every encoder point, spiking softmax, few-spike GELU) with "
            "straight-through gradients, so its conversion is lossless by construction (table checks: logits "
            "of the two on 64 test images).  Energy: operator profile of each model on the first "
            f"{args.energy_batches} test batches of {args.eval_batch_size} images (45 nm: E_MAC 4.6 pJ, "
            "E_AC 0.9 pJ); change relative to the ANN.")


def summary(out: Path) -> None:
    from spikevit.reports import write_report

    rows = []
    for f in sorted(out.glob("qcfs_t*.json")):
        if f.name.endswith(".partial.json"):
            continue
        doc = json.loads(f.read_text())
        r = doc["results"]
        rr = r["rows"]
        rows.append({"T": r["T"], "spiking": r["spiking"], "ann_acc1": rr["ann"]["acc1"],
                     "before_acc1": rr["plain"]["acc1"], "after_acc1": rr["qcfs"]["acc1"],
                     "before_points": r["before_points"], "after_points": r["after_points"],
                     "finetuned_ann_acc1": rr.get("finetuned_ann", {}).get("acc1"),
                     "finetuned_recalibrated_acc1": rr.get("finetuned_recalibrated", {}).get("acc1"),
                     "energy_ann_mJ": rr["ann"]["energy_mJ"], "energy_before_mJ": rr["plain"]["energy_mJ"],
                     "energy_after_mJ": rr["qcfs"]["energy_mJ"], "train_steps": r["finetune"].get("optimizer_steps"),
                     "train_seconds": r["finetune"].get("train_seconds"), "images": rr["qcfs"]["samples"],
                     "report": f.name})
    write_report(out / "summary.json", "python benchmarks/conversion/qcfs_finetune.py --summary --out " + str(out),
                 {"out": str(out)}, {"configurations": len(rows)}, tables={"qcfs_vs_plain": rows},
                 title="QCFS fine-tuning before rate-coded conversion: before / after by T",
                 notes="One row per qcfs_t<T>.json in this folder; accuracy on the test split, energy from the "
                       "operator profile (45 nm).")
    print(f"wrote {out / 'summary.json'} ({len(rows)} rows)")


if __name__ == "__main__":
    sys.exit(main())
