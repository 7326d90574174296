"""Inference wall time of SIT-converted models against their ANN, side by side in one run (CPU by default).

For each configuration (ANN; spiking = softmax / attention / all with rate and few-spike coding) the same
batch is run ``--reps`` times, configurations interleaved round-robin so that machine load hits all of them
alike; the median is reported with its ratio to the ANN's median.  Writes ``<out>.json`` / ``.md``.

    flock /tmp/spikevit-heavy.lock nice -n 5 .venv/bin/python benchmarks/conversion/speed.py \
        --checkpoint results/conversion/vit-cifar-tiny/tanh/model.safetensors --out results/conversion/speed/vit-cifar-tiny
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-cifar-tiny")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--codings", default="rate,fewspike", help="codings of the attention / all configurations")
    ap.add_argument("--out", required=True, help="report path without extension")
    args = ap.parse_args()

    from spikevit.conversion import convert, resolve_model
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device

    torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    net, _ = resolve_model(args.model, args.checkpoint)
    net = net.to(dev).eval()
    g = torch.Generator().manual_seed(0)
    img = getattr(net, "pos_embed", None)
    size = 32 if img is None else int(round((img.shape[1]) ** 0.5)) * 4
    x = torch.randn(args.batch_size, 3, size, size, generator=g).to(dev)
    cal = torch.randn(64, 3, size, size, generator=g).to(dev)
    K = args.steps
    models = {"ANN": net, "softmax": convert(net, K)}
    for coding in args.codings.split(","):
        for level in ("attention", "all"):
            models[f"{level} ({coding})"] = convert(net, K, spiking=level, calibration=cal, coding=coding)
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(x[:8])                                               # warm-up
        for _ in range(args.reps):
            for k, m in models.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                m(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t)
    ann = statistics.median(times["ANN"])
    rows = [{"configuration": k, "K": K, "median_s": statistics.median(v), "min_s": min(v),
             "images_per_s": args.batch_size / statistics.median(v), "x_ann": statistics.median(v) / ann,
             "reps": len(v)} for k, v in times.items()]
    for r in rows:
        print(f"{r['configuration']:22s} {r['median_s']:.3f} s  {r['x_ann']:.2f}x ANN", flush=True)
    write_report(f"{args.out}.json", "benchmarks/conversion/speed.py " + " ".join(
                 f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), vars(args),
                 {"ann_median_s": ann, "all_rate_x_ann": next(r["x_ann"] for r in rows
                                                                if r["configuration"] == "all (rate)")},
                 tables={"speed": rows}, title=f"Converted-model inference time vs the ANN ({args.model}, K = {K})",
                 notes=f"One batch of {args.batch_size} images (random pixels; the work does not depend on them "
                       f"beyond spike counts), {args.threads} CPU thread(s), {args.reps} interleaved repetitions, "
                       "median.  Rate coding: every spike-coded product runs once on the stacked spike counts of "
                       "the positive and negative IF neurons (2x the ANN's multiplies in dense arithmetic); "
                       "few-spike coding: once on the 2K stacked binary spike trains (2K x).  The few-spike "
                       "neurons (SI-exp, activations) are evaluated by table lookup of their pieces.")


if __name__ == "__main__":
    main()
