"""Two runs of the same seeded command give bit-identical final weights (CPU): ``train`` and ``dts train``.

    python benchmarks/seeded_reruns.py        # -> results/trust/seeded_reruns.{json,md,csv}

Each command is run twice in fresh processes (``spikevit ... --seed 0 --out A`` and ``--out B``); the final
``model.safetensors`` files are compared tensor by tensor (max |a - b| over every weight), and a third run
with ``--seed 1`` shows that the seed matters.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from spikevit.reports import write_report

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "train": "train --model vit-cifar-micro --dataset digits --epochs 3 --batch-size 64 --img-size 8 --device cpu",
    "dts train": "dts train --arch spikformer-1-64 --dataset digits --tmax 2 --epochs 2 --batch-size 64 "
                 "--img-size 8 --device cpu --eval-batches 2",
}


def _run(args: str, seed: int, out: Path) -> dict[str, torch.Tensor]:
    cmd = [sys.executable, "-m", "spikevit.cli.main", *shlex.split(args), "--seed", str(seed), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env={"SPIKEVIT_QUIET": "1", "PATH": "/usr/bin:/bin"})
    return load_file(str(out / "model.safetensors"))


def _max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in COMMANDS.items():
            first = _run(args, 0, Path(tmp) / f"{name}-a")
            again = _run(args, 0, Path(tmp) / f"{name}-b")
            other = _run(args, 1, Path(tmp) / f"{name}-c")
            rows.append({"command": f"spikevit {args} --seed S --out DIR", "tensors": len(first),
                         "parameters": sum(t.numel() for t in first.values()),
                         "max_abs_diff_same_seed": _max_abs_diff(first, again),
                         "max_abs_diff_seed_0_vs_1": _max_abs_diff(first, other)})
            print(rows[-1])
    write_report(ROOT / "results" / "trust" / "seeded_reruns.json", "python benchmarks/seeded_reruns.py",
                 {"commands": COMMANDS, "threads": torch.get_num_threads()},
                 {"identical": all(r["max_abs_diff_same_seed"] == 0.0 for r in rows)},
                 {"reruns": rows}, title="Seeded reruns: final weights of two runs with the same --seed")
    return 0 if all(r["max_abs_diff_same_seed"] == 0.0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
