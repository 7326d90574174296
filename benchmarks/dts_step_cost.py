"""What one DTS / fixed-T Spikformer training step costs, to size a study to the machine at hand.

For each (architecture, batch, T, DTS or fixed) one AdamW step on seeded random 32x32 images: forward,
cross-entropy (+ the mask loss for DTS), backward, optimiser step.  One warm-up step, then the median of
``--reps`` timed steps, all in one process, side by side.  Reported per step and per image, and projected
to one epoch over 50,000 CIFAR-10 training images (data loading not included).

    python benchmarks/dts_step_cost.py                         # CPU, one thread
    python benchmarks/dts_step_cost.py --device cuda --threads 0 --out results/dts/step-cost-cuda.json

Results: results/dts/step-cost.json (+ .md, .csv).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from spikevit.dts.loss import mask_loss
from spikevit.functional.dts import default_init_steps
from spikevit.models import create_model
from spikevit.reports import write_report
from spikevit.runtime import pick_device

CASES = [  # (arch, batch, T, dts)
    ("spikformer-4-384", 16, 1, False), ("spikformer-4-384", 16, 4, False), ("spikformer-4-384", 16, 4, True),
    ("spikformer-2-128", 64, 1, False), ("spikformer-2-128", 64, 2, False), ("spikformer-2-128", 64, 4, False),
    ("spikformer-2-128", 64, 4, True),
    ("spikformer-1-64", 64, 1, False), ("spikformer-1-64", 64, 2, False), ("spikformer-1-64", 64, 4, False),
    ("spikformer-1-64", 64, 4, True),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(arch: str, batch: int, tmax: int, dts: bool, device: torch.device, reps: int) -> list[float]:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, tmax=tmax, dts=dts, **({"init_steps": default_init_steps(tmax)} if dts else {}))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    times = []
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if dts:
            loss = loss + mask_loss(model, 1e-2, ("qkv", "mlp")).to(loss.device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i:                                    # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--archs", default=None, help="comma list: only these architectures")
    p.add_argument("--out", default=str(REPO / "results" / "dts" / "step-cost.json"))
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = []
    keep = set(args.archs.split(",")) if args.archs else None
    for arch, batch, tmax, dts in CASES:
        if keep is not None and arch not in keep:
            continue
        t = step_seconds(arch, batch, tmax, dts, device, args.reps)
        med = statistics.median(t)
        rows.append({"arch": arch, "batch": batch, "T": tmax, "kind": "DTS (Tmax, init Tmax/2)" if dts else "fixed-T",
                     "step_s": med, "step_s_min": min(t), "step_s_max": max(t), "per_image_ms": 1e3 * med / batch,
                     "epoch_50k_min": 50000 / batch * med / 60})
        print(f"{arch} b{batch} T{tmax} {'DTS' if dts else 'fixed'}: {med:.2f} s/step", flush=True)
    notes = (f"One training step (forward, loss, backward, AdamW) on seeded random 32x32 images, {device.type}, "
             f"{torch.get_num_threads()} intra-op thread(s); median of {args.reps} steps after one warm-up step "
             "(min and max beside it). epoch_50k_min projects one CIFAR-10 epoch (50,000 images) without data "
             "loading." + (" The machine was shared with other jobs, so single steps can be slower than on an idle one."
                           if device.type == "cpu" else ""))
    write_report(args.out, "python benchmarks/dts_step_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 {"device": str(device), "threads": torch.get_num_threads(), "reps": args.reps}, {"rows": rows},
                 {"training step cost": rows}, title="DTS / fixed-T Spikformer: one training step", notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
