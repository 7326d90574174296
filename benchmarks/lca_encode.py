"""Side-by-side LCA encoding benchmark: dense Gramian (authors' formulation) vs spikevit's exact backends vs Lasso solvers.

One run, same inputs.  For each (features, M, K): per-sample time, peak extra
memory (sampled RSS), speed-up over the dense Gramian measured in the same run
(the dense form is timed on a slice of the batch), max code difference to the
dense float32 and to a float64 reference, identical-prediction checks, top-1
accuracy (max-sum / max-activation decoders), FLOPs each backend performed
(its own ``stats["flops"]``, see spikevit.functional.lca.core) and the machine's
matmul FLOP rate measured in the same run (so the distance to the hardware limit
is visible).  The research backend ``active`` (not in spikevit's public registry)
is registered here to keep it in the comparison.

    python benchmarks/lca_encode.py --quick                      # minutes, for development
    python benchmarks/lca_encode.py --features mnist_pixels --sizes 5000 20000 50000 --steps 100 10
    python benchmarks/lca_encode.py --features cifar10_effnet --sizes 5000 20000 50000

Results: results/lca_encode/<name>.json + .md + .csv + scaling PNG.  Each
finished configuration is appended to a JSON-lines log first, so a killed run
resumes where it stopped.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from spikevit.data.features import load_features  # noqa: E402
from spikevit.functional.lca.active import lca_active  # noqa: E402
from spikevit.lca.decoders import class_sums, max_activation  # noqa: E402
from spikevit.lca.dictionary import normalize_atoms  # noqa: E402
from spikevit.lca.encode import BACKENDS, choose_backend, encode_trace, register_backend  # noqa: E402
from spikevit.reports import write_report  # noqa: E402

FEATURES = {
    # name: (train folder, test folder, description)
    "mnist_pixels": ("mnist/pixels/train", "mnist/pixels/test", "MNIST raw pixels (normalised), N = 784"),
    "cifar10_effnet": ("cifar10/efficientnet_lite0/train", "cifar10/efficientnet_lite0/test",
                       "EfficientNet-Lite0 pooled features of CIFAR-10, N = 1280"),
    # dictionary and queries from disjoint parts of the test split (while the train split is not extracted)
    "cifar10_effnet_testsplit": (None, "cifar10/efficientnet_lite0/test",
                                 "EfficientNet-Lite0 CIFAR-10 test split: exemplars and queries disjoint rows, N = 1280"),
}


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms (whole process, honest upper view)."""

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def matmul_rate(n: int, m: int, rows: int, dtype=torch.float32, repeats: int = 3) -> float:
    """Measured GFLOP/s of a (rows, N) x (N, M) product, the factored backend's main operation."""
    a, b = torch.randn(rows, n, dtype=dtype), torch.randn(n, m, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * n * m * repeats / (time.perf_counter() - t) / 1e9


def load_problem(name: str, cache: Path, m: int, n_queries: int, seed: int, project: int | None):
    train_dir, test_dir, desc = FEATURES[name]
    test = load_features(cache / test_dir)
    g = torch.Generator().manual_seed(seed)
    if train_dir is None:
        perm = torch.randperm(test.features.shape[0], generator=g)
        q_idx, d_idx = perm[:n_queries], perm[n_queries:n_queries + m]
        if d_idx.numel() < m:
            raise SystemExit(f"{name}: only {d_idx.numel()} rows left for the dictionary, asked M = {m}")
        dict_x, dict_y = test.features[d_idx], test.labels[d_idx]
    else:
        train = load_features(cache / train_dir)
        d_idx = torch.randperm(train.features.shape[0], generator=g)[:m]
        dict_x, dict_y = train.features[d_idx], train.labels[d_idx]
        q_idx = torch.randperm(test.features.shape[0], generator=g)[:n_queries]
    queries, q_labels = test.features[q_idx].float(), test.labels[q_idx]
    if project:  # fixed random projection of the features (e.g. 784 -> 768)
        proj = torch.randn(dict_x.shape[1], project, generator=torch.Generator().manual_seed(1234)) / project ** 0.5
        dict_x, queries = dict_x.float() @ proj, queries @ proj
        desc += f", fixed random projection to N = {project}"
    atoms = normalize_atoms(dict_x.float())
    return atoms, dict_y.long(), queries, q_labels.long(), desc


def timed(fn):
    gc.collect()
    with PeakRSS() as mem:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    return out, dt, mem.mib


if "active" not in BACKENDS:  # research backend: compared here, not offered by spikevit.lca.encode
    register_backend("active", lca_active)


def gflop_per_sample(stats: dict, rows: int) -> tuple[float, float | None]:
    """(working-precision GFLOP, bfloat16 GFLOP or None) per sample from a backend's summed stats."""
    low = stats.get("flops_low_precision", 0.0)
    return (stats["flops"] - low) / rows / 1e9, (low / rows / 1e9 if low else None)


def energy(atoms, s, codes, lam):
    res = s.double() - codes.double() @ atoms.double().T
    return (0.5 * (res ** 2).sum(1) + lam * codes.double().abs().sum(1))


def lasso_codes(solver: str, atoms: torch.Tensor, s: torch.Tensor, lam: float) -> np.ndarray:
    """Exact non-negative Lasso argmin_a 1/2 ||s - phi a||^2 + lam ||a||_1 (LCA's energy, rectified)."""
    D = atoms.T.double().numpy()                                   # (M, N): sklearn's dictionary rows
    X = s.double().numpy()
    n = D.shape[1]
    if solver == "sklearn_lasso_lars":
        from sklearn.decomposition import sparse_encode
        # sparse_encode scales alpha by 1 / n_features internally (LassoLars minimises
        # 1/(2 n_features) ||x - D^T a||^2 + (alpha / n_features) ||a||_1), i.e. exactly
        # 1/2 ||x - D^T a||^2 + alpha ||a||_1: alpha = lam.
        return sparse_encode(X, D, algorithm="lasso_lars", alpha=lam, positive=True, max_iter=2000)
    if solver in ("skglm", "celer"):
        # sklearn-style Lasso: 1/(2 n_samples) ||y - X w||^2 + alpha ||w||_1 with n_samples = N rows of phi
        if solver == "skglm":
            from skglm import Lasso
            make = lambda: Lasso(alpha=lam / n, positive=True, fit_intercept=False, tol=1e-8, max_iter=200)  # noqa: E731
        else:
            from celer import Lasso
            make = lambda: Lasso(alpha=lam / n, positive=True, fit_intercept=False, tol=1e-8)  # noqa: E731
        out = []
        for x in X:
            est = make().fit(D.T, x)
            out.append(est.coef_)
        return np.stack(out)
    raise ValueError(solver)


def run_config(args, name, m, steps, project, log_rows):
    torch.manual_seed(0)
    atoms, labels, s, y, desc = load_problem(name, Path(args.cache), m, args.queries, args.seed, project)
    n = atoms.shape[0]
    C = int(max(labels.max(), y.max())) + 1
    lam, tau = args.lam, args.tau
    kw = dict(lam=lam, tau=tau, steps=steps)
    slice_ = slice(0, min(args.dense_slice, s.shape[0]))
    rows_out = []
    rate32 = matmul_rate(n, m, min(256, s.shape[0]))
    rate16 = matmul_rate(n, m, min(256, s.shape[0]), torch.bfloat16)
    base = {"features": name, "N": n, "M": m, "K": steps, "queries": int(s.shape[0]), "description": desc,
            "matmul_GFLOPs_fp32": rate32, "matmul_GFLOPs_bf16": rate16}

    # float64 ground truth on the slice (factored form, float64 everywhere)
    ref64 = encode_trace(atoms.double(), s[slice_].double(), backend="factored", potentials=False, **kw).codes
    scale = float(ref64.abs().max()) or 1.0

    def acc(codes, yy):
        return (100.0 * float((class_sums(codes, labels, C).argmax(1) == yy).double().mean()),
                100.0 * float((max_activation(codes, labels) == yy).double().mean()))

    # ---- dense Gramian, authors' formulation: G once ("training"), G a every step, on the slice
    gram, t_gram, mem_gram = timed(lambda: atoms.T @ atoms)
    out, t_dense, mem_dense = timed(lambda: encode_trace(atoms, s[slice_], backend="gramian", gram=gram,
                                                          potentials=False, **kw))
    dense_codes = out.codes
    n_slice = dense_codes.shape[0]
    dense_ms = 1e3 * t_dense / n_slice
    del gram
    gc.collect()
    a_ms, a_act = acc(dense_codes, y[slice_])
    rows_out.append(base | {
        "method": "dense Gramian (authors')", "ms_per_sample": dense_ms, "timed_on": n_slice,
        "samples_per_s": 1e3 / dense_ms, "speedup_vs_dense": 1.0, "peak_extra_MiB": mem_gram + mem_dense,
        "gramian_build_s": t_gram, "GFLOP_per_sample": out.stats["flops"] / n_slice / 1e9,
        "max_rel_diff_vs_dense32": 0.0, "max_rel_diff_vs_float64": float((dense_codes.double() - ref64).abs().max()) / scale,
        "same_maxsum_pred_as_dense": True, "top1_maxsum_%": a_ms, "top1_maxact_%": a_act, "accuracy_on": n_slice})
    rows_out[-1]["achieved_GFLOPs"] = rows_out[-1]["GFLOP_per_sample"] / (dense_ms / 1e3)

    # ---- spikevit backends on the whole query batch
    default = choose_backend(n, m)
    base["default_backend"] = default
    variants = [("factored", "factored", {}), ("active", "active", {}), ("mixed", "mixed", {}),
                ("factored bf16 (opt-in, inexact)", "factored", {"matmul_dtype": torch.bfloat16})]
    variants = [((lab + " (default)") if (be == default and not ex) else lab, be, ex) for lab, be, ex in variants]
    preds_fac = None
    for label, backend, extra in variants:
        if args.quick and "bf16" in label and m > 20000:
            continue
        codes_all, times, mems, stats_sum = [], 0.0, 0.0, {}
        for start in range(0, s.shape[0], args.batch):
            out, dt, mem = timed(lambda: encode_trace(atoms, s[start:start + args.batch], backend=backend,
                                                      potentials=False, **kw, **extra))
            codes_all.append(out.codes)
            times += dt
            mems = max(mems, mem)
            for k_, v_ in (out.stats or {}).items():
                if isinstance(v_, float):
                    stats_sum[k_] = stats_sum.get(k_, 0.0) + v_
        codes = torch.cat(codes_all)
        ms = 1e3 * times / s.shape[0]
        head = codes[slice_]
        pred = class_sums(codes, labels, C).argmax(1)
        if backend == "factored" and not extra:
            preds_fac = pred
        if stats_sum.get("refreshes") is not None:
            stats_sum["refreshes"] /= s.shape[0]
        a_ms, a_act = acc(codes, y)
        gflop, gflop_low = gflop_per_sample(stats_sum, s.shape[0])
        row = base | {
            "method": label, "ms_per_sample": ms, "timed_on": int(s.shape[0]), "samples_per_s": 1e3 / ms,
            "speedup_vs_dense": dense_ms / ms, "peak_extra_MiB": mems, "gramian_build_s": None,
            "GFLOP_per_sample": gflop, "achieved_GFLOPs": gflop / (ms / 1e3),
            "GFLOP_bf16_per_sample": gflop_low,
            "max_rel_diff_vs_dense32": float((head - dense_codes).abs().max()) / scale,
            "max_rel_diff_vs_float64": float((head.double() - ref64).abs().max()) / scale,
            "same_maxsum_pred_as_dense": bool(torch.equal(class_sums(head, labels, C).argmax(1),
                                                          class_sums(dense_codes, labels, C).argmax(1))),
            "same_maxsum_pred_as_factored_all": None if preds_fac is None else bool(torch.equal(pred, preds_fac)),
            "top1_maxsum_%": a_ms, "top1_maxact_%": a_act, "accuracy_on": int(s.shape[0]),
            "full_products_per_sample": stats_sum.get("full_products", 0.0) / s.shape[0],
            "tracked_pairs_per_sample_step": stats_sum.get("tracked_pair_steps", stats_sum.get("tracked_pairs", 0.0))
            / s.shape[0] / steps,
            "refreshes_per_sample": stats_sum.get("refreshes"),
            "active_per_sample_step": stats_sum.get("active_pair_steps", 0.0) / s.shape[0] / steps}
        rows_out.append(row)
        del codes_all, codes
        gc.collect()

    # ---- exact Lasso solvers on the same objective (converged: a different solution than LCA at K steps)
    lcodes = encode_trace(atoms, s[: args.lasso_slice], backend="factored", potentials=False, **kw).codes
    e_lca = energy(atoms, s[: args.lasso_slice], lcodes, lam)
    for solver in args.lasso:
        if solver == "sklearn_lasso_lars" and m > args.lars_max_m:
            continue  # sparse_encode forms the M x M Gram matrix in float64
        try:
            if solver == "skglm":  # numba compilation outside the timing
                lasso_codes(solver, atoms[:, :50], s[:1, :], lam)
            codes_np, dt, mem = timed(lambda: lasso_codes(solver, atoms, s[: args.lasso_slice], lam))
        except ImportError as exc:
            print(f"skip {solver}: {exc}")
            continue
        codes = torch.from_numpy(codes_np).float()
        ms = 1e3 * dt / codes.shape[0]
        e_l = energy(atoms, s[: args.lasso_slice], codes, lam)
        a_ms, a_act = acc(codes, y[: args.lasso_slice])
        rows_out.append(base | {
            "method": f"Lasso: {solver}", "ms_per_sample": ms, "timed_on": int(codes.shape[0]),
            "samples_per_s": 1e3 / ms, "speedup_vs_dense": dense_ms / ms, "peak_extra_MiB": mem,
            "max_rel_diff_vs_float64": float((codes.double() - ref64[: codes.shape[0]]).abs().max()) / scale,
            "lasso_energy_over_lca_energy": float((e_l / e_lca).mean()),
            "active_atoms_per_sample": float((codes != 0).sum(1).float().mean()),
            "top1_maxsum_%": a_ms, "top1_maxact_%": a_act, "accuracy_on": int(codes.shape[0])})
    for r in rows_out:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                          if k not in ("description",)}), flush=True)
        log_rows.append(r)
    return rows_out


def plot_scaling(rows, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    keys = sorted({(r["features"], r["N"], r["K"]) for r in rows})
    markers = {"dense Gramian (authors')": "s", "factored": "o", "active": "^"}
    for (feat, n, k) in keys:
        for method, mk in markers.items():
            pts = sorted((r["M"], r["ms_per_sample"]) for r in rows
                         if (r["features"], r["N"], r["K"], r["method"]) == (feat, n, k, method))
            if pts:
                ax.loglog(*zip(*pts), marker=mk, label=f"{method}, N={n}, K={k}")
    ax.set_xlabel("dictionary size M")
    ax.set_ylabel("LCA encoding time per sample (ms)")
    ax.set_title("Exact LCA encoding on this CPU: time vs M")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", nargs="+", default=["mnist_pixels"], choices=list(FEATURES))
    p.add_argument("--project", type=int, nargs="+", default=[0],
                   help="0: features as they are; d: also a fixed random projection to d dims (e.g. 768)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    p.add_argument("--steps", type=int, nargs="+", default=[100, 10])
    p.add_argument("--queries", type=int, default=256, help="test samples encoded by the fast backends")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dense-slice", type=int, default=8, help="samples timed with the dense Gramian")
    p.add_argument("--lasso-slice", type=int, default=4)
    p.add_argument("--lasso", nargs="*", default=["sklearn_lasso_lars", "skglm", "celer"])
    p.add_argument("--lars-max-m", type=int, default=20000)
    p.add_argument("--lam", type=float, default=2.0)
    p.add_argument("--tau", type=float, default=100.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/work/cache/features")
    p.add_argument("--out", default=str(REPO / "results" / "lca_encode" / "lca_encode.json"))
    p.add_argument("--quick", action="store_true", help="small sizes, few queries (development)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.queries, args.dense_slice, args.lasso_slice = [2000, 5000], [100], 64, 4, 2
        args.out = str(Path(args.out).with_name("lca_encode_quick.json"))
    out = Path(args.out)
    log = out.with_suffix(".jsonl")
    done = []
    if log.exists():
        done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for r in done:  # rows logged before "auto" was set to factored
            r["method"] = "active" if r["method"] == "active (default)" else r["method"]
    key = lambda r: (r["features"], r["N"], r["M"], r["K"])  # noqa: E731
    finished = {key(r) for r in done}
    rows = list(done)
    for name in args.features:
        for proj in args.project:
            for m in args.sizes:
                for k in args.steps:
                    probe = FEATURES[name]
                    n_guess = proj or (784 if name == "mnist_pixels" else 1280)
                    if (name, n_guess, m, k) in finished:
                        continue
                    new = []
                    run_config(args, name, m, k, proj or None, new)
                    with open(log, "a") as fh:
                        for r in new:
                            fh.write(json.dumps(r) + "\n")
                    rows += new
                    del probe
    fig = plot_scaling(rows, out.with_name(out.stem + "-scaling.png"))
    cols = ["features", "N", "M", "K", "method", "ms_per_sample", "samples_per_s", "speedup_vs_dense",
            "peak_extra_MiB", "GFLOP_per_sample", "GFLOP_bf16_per_sample", "achieved_GFLOPs", "matmul_GFLOPs_fp32",
            "matmul_GFLOPs_bf16",
            "max_rel_diff_vs_dense32", "max_rel_diff_vs_float64", "same_maxsum_pred_as_dense",
            "same_maxsum_pred_as_factored_all", "top1_maxsum_%", "top1_maxact_%", "accuracy_on",
            "full_products_per_sample", "tracked_pairs_per_sample_step", "active_per_sample_step",
            "refreshes_per_sample",
            "lasso_energy_over_lca_energy", "timed_on"]
    table = [{c: r.get(c) for c in cols} for r in rows]
    notes = ("Dense Gramian = authors' formulation (G = Phi^T Phi built once, 'training', then G a every step, "
             "no step skipping), timed on `timed_on` samples of the same batch; spikevit backends on all queries "
             "(batches of %d). max_rel_diff = max |a - a_ref| / max |a_ref| on the dense slice. Lasso solvers "
             "minimise the same energy 1/2||s - Phi a||^2 + lam ||a||_1 (a >= 0) to convergence: LCA at tau = 100, "
             "K = 100 runs one time constant and is not converged, so its codes and accuracy differ by design. "
             "Timings on a shared 2-core CPU: compare rows of the same configuration (measured in the same run), "
             "and the matmul GFLOP/s measured alongside. FLOPs are each backend's own stats['flops'] (2 per "
             "multiply-add of every matrix product it ran); GFLOP_bf16_per_sample is the bfloat16 share, "
             "GFLOP_per_sample the rest. `mixed` = exact backend whose per-step screening product runs in "
             "bfloat16 with a proven rounding-error bound, float32 for tracked atoms; `factored bf16` = the "
             "whole product in bfloat16, inexact. `active` = research backend (not offered by spikevit.lca.encode). "
             "`(default)` marks the backend `backend='auto'` picks on this machine." % args.batch)
    write_report(out, "python benchmarks/lca_encode.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 vars(args), {"rows": table, "machine_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
                 {"LCA encoding, side by side": table}, title="LCA encoding: dense Gramian vs spikevit backends vs Lasso",
                 notes=notes, figures=[str(fig)])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
