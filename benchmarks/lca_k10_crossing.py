"""Why K = 10 codes are empty at lambda = 2, tau = 100: the first step at which any neuron can cross the threshold.

    python benchmarks/lca_k10_crossing.py --features CACHE/cifar10/efficientnet_lite0 [--test test-n1000 --train train-n5000]

While every code is zero, u[k] = (1 - (1 - 1/tau)^k) b exactly, so a neuron of a row can first be active at the
smallest k with (1 - (1 - 1/tau)^k) max_i b_i >= lambda (spikevit.functional.lca.first_crossing_steps).  This
script reports, per feature set, the largest drive max_i b_i of each test row (unit-norm training atoms), the
drive a row needs to cross by step K, and the distribution of first possible crossing steps.  Writes
results/lca/k10_crossing.{json,md}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spikevit.data.features import load_features
from spikevit.functional.lca import first_crossing_steps
from spikevit.lca import LCA_DEFAULTS
from spikevit.reports import write_report

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", required=True, help="a feature-cache folder holding the train and test splits")
    p.add_argument("--train", default="train", help="train split folder (atoms)")
    p.add_argument("--test", default="test", help="test split folder (inputs)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 100])
    p.add_argument("--json", default=str(ROOT / "results" / "lca" / "k10_crossing.json"))
    a = p.parse_args()
    base = Path(a.features)
    train, test = load_features(base / a.train), load_features(base / a.test)
    atoms = train.features / train.features.norm(dim=1, keepdim=True)
    drive = (test.features @ atoms.T).amax(1)                       # max_i b_i per test row
    lam, tau = LCA_DEFAULTS.lam, LCA_DEFAULTS.tau
    first = first_crossing_steps(drive, lam, tau, max(a.steps))
    rows = [{"K": K, "drive needed to cross by K": lam / (1 - (1 - 1 / tau) ** K),
             "rows that can cross by K (%)": 100.0 * float((first < K).double().mean())} for K in a.steps]
    results = {"atoms": atoms.shape[0], "test_rows": drive.numel(), "lam": lam, "tau": tau,
               "max_drive_median": float(drive.median()), "max_drive_max": float(drive.max()),
               # max_i b_i <= ||s|| for unit atoms: a bound for ANY exemplar dictionary of these features
               "input_norm_max": float(test.features.norm(dim=1).max()),
               "first_crossing_step_min": int(first.min()), "first_crossing_step_median": float(first.float().median())}
    write_report(a.json, f"python benchmarks/lca_k10_crossing.py --features FEATURES --train {a.train} --test {a.test}",
                 {"backbone": test.backbone, "dataset": test.meta.get("dataset")}, results, {"crossing": rows},
                 title="First possible threshold crossing at lambda = 2, tau = 100",
                 notes="While every code is zero u[k] = (1 - (1 - 1/tau)^k) b exactly, so no neuron of a row can be "
                       "active before its first crossing step; at K steps below it the code a[K] is all zero.")
    print(results, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
