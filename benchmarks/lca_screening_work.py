"""Work counters of the exact LCA backends on real features: why screening does not pay off here.

    python benchmarks/lca_screening_work.py                       # CIFAR-10 EfficientNet-Lite0, M = 50,000
    python benchmarks/lca_screening_work.py --size 20000 --queries 64

Same inputs for every backend (dictionary and queries from benchmarks/lca_encode.py's loader). Reports,
per sample: full (N x M) products, the exactly computed atom-steps of the `screened` backend's shared set
(in units of full products), tracked / active pairs, the FLOPs each backend reports (stats["flops"]), the time,
and the max code difference to `factored`.  `active` and `screened` are research backends (not offered by
spikevit.lca.encode); they are registered here to be compared.
Also `screened` on two half batches, as drawn and sorted by the label of each query's strongest-drive
exemplar, to see whether grouping similar inputs shrinks the shared set. Counts are deterministic; times are noisy on a shared CPU.
Then the throughput of `factored` (whole batch, timed twice) and `screened` at half and quarter batches.
Writes results/lca_encode/screening_work.{json,md,csv}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from lca_encode import FEATURES, load_problem  # noqa: E402

from spikevit.functional.lca.active import lca_active  # noqa: E402
from spikevit.functional.lca.screened import lca_screened  # noqa: E402
from spikevit.lca import encode_trace  # noqa: E402
from spikevit.lca.encode import BACKENDS, register_backend  # noqa: E402
from spikevit.reports import write_report  # noqa: E402

for _name, _fn in (("active", lca_active), ("screened", lca_screened)):  # research backends, compared here
    if _name not in BACKENDS:
        register_backend(_name, _fn)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="cifar10_effnet", choices=sorted(FEATURES))
    ap.add_argument("--size", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/work/cache/features")
    ap.add_argument("--out", default=str(REPO / "results" / "lca_encode" / "screening_work.json"))
    args = ap.parse_args(argv)
    atoms, labels, queries, _, desc = load_problem(args.features, Path(args.cache), args.size, args.queries,
                                                   args.seed, None)
    m, b = atoms.shape[1], queries.shape[0]
    kw = dict(lam=2.0, tau=100.0, steps=100)
    by_drive = torch.argsort(labels[(queries @ atoms).argmax(1)], stable=True)
    half = b // 2
    runs = [("factored", "as drawn", 1), ("active", "as drawn", 1), ("screened", "as drawn", 1),
            ("screened", "as drawn, two half batches", 2),
            ("screened", "sorted by strongest-drive exemplar label, two half batches", 2)]
    ref, rows = None, []
    for backend, order, parts in runs:
        perm = by_drive if order.startswith("sorted") else torch.arange(b)
        chunks = [perm] if parts == 1 else [perm[:half], perm[half:]]
        t = time.perf_counter()
        outs = [encode_trace(atoms, queries[c], backend=backend, **kw) for c in chunks]
        dt = time.perf_counter() - t
        st = {k: sum(float(o.stats.get(k, 0.0)) for o in outs)
              for k in ("full_products", "union_atom_steps", "tracked_pair_steps", "refreshes", "flops")}
        codes = outs[0].codes.new_empty(b, m)
        for c, o in zip(chunks, outs):
            codes[c] = o.codes
        if backend == "factored":
            ref = codes
        rows.append({"backend": backend, "batch_order": order, "ms_per_sample": 1e3 * dt / b,
                     "full_products_per_sample": st["full_products"] / b,
                     "shared_set_full_product_equivalents_per_sample": st.get("union_atom_steps", 0.0) / b / m,
                     "tracked_pairs_per_sample": st.get("tracked_pair_steps", 0.0) / b,
                     "refreshes": st.get("refreshes", 0.0),
                     "GFLOP_per_sample": st["flops"] / b / 1e9,
                     "max_code_diff_vs_factored": float((codes - ref).abs().max())})
        print(rows[-1], flush=True)
    # throughput of factored vs screened at smaller batches (the shared set shrinks with the batch)
    speed = []
    for backend, bs in (("factored", b), ("screened", b // 2), ("screened", b // 4), ("factored", b)):
        t = time.perf_counter()
        for i in range(0, b, bs):
            encode_trace(atoms, queries[i:i + bs], backend=backend, **kw)
        speed.append({"backend": backend, "batch": bs, "samples_per_s": b / (time.perf_counter() - t)})
        print(speed[-1], flush=True)
    write_report(args.out, "python benchmarks/lca_screening_work.py " + " ".join(sys.argv[1:]),
                 vars(args), {"features": desc, "M": m, "queries": b},
                 tables={"work per sample": rows, "throughput by batch size": speed}, title="LCA backends: work counters on real features",
                 notes="One full product = one (N x M) matrix-vector product per sample. `screened` computes a "
                       "batch-shared set of atoms exactly each step; its size, in full-product units, is the "
                       "shared_set column. Times were measured on a shared 2-core CPU: compare counts.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
