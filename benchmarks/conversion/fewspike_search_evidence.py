"""Is the SIT paper's SI-exp RMSE 0.0015 at K = 12 reachable?  Independent searches and a budget study.

    python benchmarks/conversion/fewspike_search_evidence.py --plan default          # run all units (resumable)
    python benchmarks/conversion/fewspike_search_evidence.py --report-only
    python benchmarks/conversion/fewspike_search_evidence.py --plan default --ship   # + store better fits
    python benchmarks/conversion/fewspike_search_evidence.py --plan reach --ship     # K = 13, 14, ... until 0.0015

Each unit is (method, K, seed, budget, init): CMA-ES with IPOP restarts or differential evolution
(:mod:`fewspike_research.search`) on the *exact* 10,000-point grid error with least-squares optimal
readout, run until ``budget`` objective evaluations are spent; its result and its best-so-far curve
(evaluations, RMSE) go to ``<out>/runs/<unit>.json`` and finished units are skipped.  ``init=shipped``
starts CMA-ES (step size 0.05) at the fit shipped for the same K *when the unit runs* (so it depends on
what earlier units shipped), ``shipped-local`` the same with step size 0.01; the start point is evaluated
too (the units run before that change, K = 8/12/13 ``shipped``, record only the points CMA-ES sampled);
``grown`` starts from the shipped K - 1 fit plus a step that does not fire (T = 1.02), step size 0.02.  ``--ship`` merges every unit that beats
the shipped parameters into the package file (same format and checks as ``fit_fewspike.py``; K <= 16 only).
``grown-pool`` (plans ``reach``, ``reach-s1``) starts from the best K - 1 neuron known when the unit runs (shipped
or any finished unit) plus one step added in 64 ways, best first; the plan stops at the first K that reaches
the paper's RMSE.

The report lists per unit the final RMSE (neuron simulated in float64) and the best RMSE reached after
1e4, 1e5, 1e6, ... evaluations (budget saturation), per K the best over all methods against the shipped
fit, and the piece-count requirement: the smallest number of constant pieces for which the rigorous
continuous bound of :func:`fewspike_research.bounds.piecewise_constant_lower_bound` allows a given RMSE,
next to the number of pieces the best neurons actually produce.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from fewspike_research import bounds
from spikevit.conversion.fitting import FewSpikeFit, evaluate_fit, grow
from spikevit.conversion.params import (
    PACKAGE_PARAMS,
    few_spike_parameters,
    read_params,
    store_fit,
)
from fewspike_research.search import ExactGrid, cma_search, de_search, exact_mse
from spikevit.reports import write_report

PAPER_RMSE_K12 = 0.0015413
CHECKPOINTS = [10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]

# (method, K, seed, budget, init)
PLANS = {
    "default": (
        [("cma", 8, s, 2_000_000, "none") for s in (0, 1, 2)]
        + [("de", 8, s, 2_000_000, "none") for s in (0, 1)]
        + [("cma", 8, 0, 1_000_000, "shipped")]
        + [("cma", K, 0, 1_000_000, "none") for K in (4, 5, 6, 7, 9, 10, 11)]
        + [("cma", 12, s, 1_000_000, "none") for s in (0, 1)]
        + [("cma", 12, 0, 1_000_000, "shipped"), ("de", 12, 0, 1_000_000, "none")]
        + [("cma", 13, 0, 300_000, "shipped")]
        + [("cma", 12, 2, 1_000_000, "none"), ("cma", 12, 3, 2_000_000, "none")]
        + [("cma", 12, 0, 500_000, "shipped-local"), ("cma", 13, 0, 200_000, "shipped-local")]
        + [("cma", 12, s, 1_000_000, "none") for s in (4, 5, 6, 7)]
        + [("cma", K, 0, 150_000, "shipped-local") for K in (14, 15)]
        + [("cma", 16, 0, 100_000, "grown")]
    ),
    "smoke": [("cma", 4, 0, 20_000, "none"), ("de", 4, 0, 20_000, "none")],
    # which K reaches the paper's RMSE?  Each K grows the best K - 1 neuron found so far; stops once reached
    "reach": [("cma", K, 0, 100_000, "grown-pool") for K in range(13, 41)],
    # a second chain (other grow() seeds and CMA-ES samples), run beside the first; both grow the best K - 1 so far
    "reach-s1": [("cma", K, 1, 100_000, "grown-pool") for K in range(13, 41)],
    # K = 12 reached by growth too: each K = 5..12 from the best K - 1 neuron plus one step (another route to K = 12)
    "grow-to-12": [("cma", K, 2, 100_000, "grown-pool") for K in range(5, 13)],
    # growth against a fresh global search at a large K (is the chain's slow-down the search or the neuron?)
    "fresh-K20": [("cma", 20, 0, 1_000_000, "none")],
    "fresh-K26": [("cma", 26, 0, 1_000_000, "none")],
    "fresh-K32": [("cma", 32, 0, 1_000_000, "none")],
}
STOP_WHEN_REACHED = {"reach", "reach-s1"}
SHIP_MAX_STEPS = 16       # the package ships K = 4..16; larger K stay in the run records


def unit_name(method, K, seed, budget, init) -> str:
    return f"{method}-K{K}-s{seed}-b{budget}" + ("" if init == "none" else f"-{init}")


def run_unit(unit, runs: Path, params_path: Path, ship: bool) -> dict:
    method, K, seed, budget, init = unit
    path = runs / (unit_name(*unit) + ".json")
    if path.exists():
        rec = json.loads(path.read_text())
        print(f"{path.name}: done (rmse {rec['rmse']:.6f}), skipping", flush=True)
    else:
        x0 = None
        if init in ("shipped", "shipped-local"):
            p = few_spike_parameters("exp", K, torch.float64, params_path)
            x0 = (p["T"], p["h"])
        elif init == "grown":          # the shipped K - 1 fit plus a last step that does not fire yet
            p = few_spike_parameters("exp", K - 1, torch.float64, params_path)
            x0 = plus_silent_step(p["T"], p["h"])
        kw = {}
        if init == "grown-pool":       # the best K - 1 neuron known plus one step, 64 ways; best first
            x0, kw["starts"] = grown_pool(K, seed, runs, params_path)
        fn = cma_search if method == "cma" else de_search
        if init != "none":
            kw["sigma0"] = {"shipped": 0.05, "shipped-local": 0.01, "grown": 0.02, "grown-pool": 0.02}[init]
        r = fn("exp", K, budget=budget, seed=seed, init=x0, **kw)
        rec = r.to_dict()
        rec["init"] = init
        path.write_text(json.dumps(rec, indent=1) + "\n")
        print(f"{path.name}: rmse {r.rmse:.6f} after {r.evaluations} evaluations ({r.seconds:.0f}s)", flush=True)
    if ship and K <= SHIP_MAX_STEPS:
        T, h, d = (torch.tensor(rec[k], dtype=torch.float64) for k in ("T", "h", "d"))
        rmse, maxerr = evaluate_fit("exp", T, h, d, (-1.0, 1.0), 10000)
        fit = FewSpikeFit("exp", K, (-1.0, 1.0), 10000, T, h, d, rmse, maxerr, rec["seconds"], rec["evaluations"],
                          [], {"method": rec["method"], "seed": seed, "budget": budget, "init": init,
                               "command": "benchmarks/conversion/fewspike_search_evidence.py"})
        if store_fit(fit, params_path):
            print(f"  shipped: exp K={K} rmse {rmse:.6f}", flush=True)
    return rec


def plus_silent_step(T: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The neuron ``(T, h)`` with one more last step that never fires on [-1, 1] (T = 1.02, h = 0)."""
    return torch.cat([T, T.new_tensor([1.02])]), torch.cat([h, h.new_tensor([0.0])])


def best_known(K: int, runs: Path, params_path: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(T, h, rmse)`` of the best K-step exp neuron among the shipped fits and the finished units."""
    cands = [json.loads(q.read_text()) for q in runs.glob(f"*-K{K}-*.json")]
    cands = [(torch.tensor(r["T"], dtype=torch.float64), torch.tensor(r["h"], dtype=torch.float64), r["rmse"])
             for r in cands if r["steps"] == K]
    _, entries = read_params(params_path)
    if f"exp/{K}" in entries:
        p = few_spike_parameters("exp", K, torch.float64, params_path)
        cands.append((p["T"], p["h"], float(p["rmse"])))
    if not cands:
        raise SystemExit(f"no {K}-step exp neuron to grow from: run K = {K} first")
    return min(cands, key=lambda c: c[2])


def grown_pool(K: int, seed: int, runs: Path, params_path: Path, size: int = 64):
    """Start point and restart points for K steps from the best K - 1 neuron, sorted by exact error.

    Candidates: the K - 1 neuron plus a last step that does not fire (T = 1.02), and ``size - 1`` seeds of
    :func:`spikevit.conversion.fitting.grow` (a finer last step, or a step inserted at a random place).
    """
    T, h, _ = best_known(K - 1, runs, params_path)
    Tg, hg = grow(T, h, K, size - 1, -1.0, 1.0, torch.Generator().manual_seed(seed))
    Ts1, hs1 = plus_silent_step(T, h)
    Ts, hs = torch.cat([Ts1[None], Tg]), torch.cat([hs1[None], hg])
    mse, _ = exact_mse(Ts, hs, ExactGrid(torch.exp, -1.0, 1.0, 10000))
    order = mse.argsort()
    return (Ts[order[0]], hs[order[0]]), (Ts[order[1:]], hs[order[1:]])


def best_at(history, evals: int) -> float | None:
    vals = [r for e, r in history if e <= evals]
    return min(vals) if vals else None


def report(runs: Path, out: Path, params_path: Path, command: str) -> None:
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    _, entries = read_params(params_path)
    rows = []
    for r in sorted(recs, key=lambda r: (r["steps"], r["method"], r["init"], r["seed"], r["evaluations"])):
        row = {"method": r["method"], "K": r["steps"], "seed": r["seed"], "init": r["init"],
               "evaluations": r["evaluations"], "rmse": r["rmse"]}
        for c in CHECKPOINTS:
            if c <= r["evaluations"] + 1000:
                row[f"best_after_{c:.0e}".replace("+0", "")] = best_at(r["history"], c)
        last_gain = [e for e, v in r["history"] if v <= r["rmse"] * 1.001]
        row["evals_to_within_0.1%_of_final"] = last_gain[0] if last_gain else None
        row["seconds"] = round(r["seconds"], 1)
        rows.append(row)
    per_k = []
    fexp = torch.exp
    for K in sorted({r["steps"] for r in recs}):
        rs = [r for r in recs if r["steps"] == K]
        b = min(rs, key=lambda r: (r["rmse"], r["init"] != "none"))
        T, h, d = (torch.tensor(b[k], dtype=torch.float64) for k in ("T", "h", "d"))
        gap = bounds.readout_gap(fexp, T, h, d, (-1.0, 1.0), 10000)
        fresh = [r["rmse"] for r in rs if r["init"] == "none"]
        per_k.append({"K": K, "units": len(rs), "best_rmse_search": b["rmse"], "best_method": f"{b['method']} ({b['init']})",
                      "worst_fresh_rmse_search": max(fresh) if fresh else None,
                      "shipped_rmse": entries.get(f"exp/{K}", {}).get("rmse"),
                      "shipped_by": entries.get(f"exp/{K}", {}).get("config", {}).get("method", "basin hopping (fit_fewspike.py)"),
                      "pieces_used_by_best": gap["pieces"], "rmse_same_pieces_free_values": gap["rmse_free_values"],
                      "best_2^K_piece_constant": bounds.best_piecewise_constant(fexp, 2 ** K)})
    structure = []
    for K in sorted(int(k.split("/")[1]) for k in entries if k.startswith("exp/")):
        p = few_spike_parameters("exp", K, torch.float64, params_path)
        m = bounds.cut_multiplicities(p["T"], p["h"])
        sb = bounds.structure_rmse_bound(p["T"], p["h"])
        gap = bounds.readout_gap(fexp, p["T"], p["h"], p["d"], (-1.0, 1.0), 10000)
        structure.append({"neuron": "shipped fit", "K": K, "rmse": p["rmse"], "pieces_1+sum_m": 1 + sum(m),
                          "cut_multiplicities_m_k": " ".join(map(str, m)),
                          "rmse_same_pieces_free_values": gap["rmse_free_values"],
                          "overlap_conflict_rmse_bound": sb["rmse_bound"], "bound_level": sb["level"]})
    for K in (8, 12):                  # reference: the binary expansion (all 2^K pieces, optimal readout)
        t = torch.arange(K, dtype=torch.float64)
        hb = 2.0 * 0.5 ** (t + 1)
        Tb = -1.0 + hb
        mse, db = exact_mse(Tb[None], hb[None], ExactGrid(fexp, -1.0, 1.0, 10000))
        m = bounds.cut_multiplicities(Tb, hb)
        sb = bounds.structure_rmse_bound(Tb, hb)
        gap = bounds.readout_gap(fexp, Tb, hb, db[0], (-1.0, 1.0), 10000)
        structure.append({"neuron": "binary expansion", "K": K, "rmse": math.sqrt(float(mse[0])),
                          "pieces_1+sum_m": 1 + sum(m), "cut_multiplicities_m_k": " ".join(map(str, m)),
                          "rmse_same_pieces_free_values": gap["rmse_free_values"],
                          "overlap_conflict_rmse_bound": sb["rmse_bound"], "bound_level": sb["level"]})
    reach = min((r["K"] for r in per_k if r["best_rmse_search"] <= PAPER_RMSE_K12), default=None)
    need = []
    for eps in (0.0127, 0.005, PAPER_RMSE_K12):
        P = bounds.min_pieces_for_rmse(eps)
        need.append({"target_rmse": eps, "min_pieces_continuous_bound": P,
                     "grid_lloyd_rmse_with_that_many_pieces": bounds.best_piecewise_constant(fexp, P),
                     "grid_lloyd_rmse_with_half_as_many": bounds.best_piecewise_constant(fexp, max(1, P // 2))})
    figures = []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
        ax = axes[2]
        ks = [r["K"] for r in per_k]
        ax.semilogy(ks, [r["best_rmse_search"] for r in per_k], "-", color="0.6", lw=1, label="best found (any search)")
        for label, pick, style in (("growth: best K-1 neuron + 1 step", lambda r: r["init"] == "grown-pool", "^"),
                                   ("other searches (fresh, refined)", lambda r: r["init"] != "grown-pool", "o")):
            best = {}
            for r in recs:
                if pick(r):
                    best[r["steps"]] = min(best.get(r["steps"], float("inf")), r["rmse"])
            ax.semilogy(sorted(best), [best[k] for k in sorted(best)], style, ms=5, label=label)
        ax.semilogy(ks, [r["shipped_rmse"] if r["shipped_rmse"] is not None else float("nan") for r in per_k],
                    "s", mfc="none", label="shipped in the package")
        ax.axhline(PAPER_RMSE_K12, color="r", ls=":", lw=1.5, label="paper 0.0015413")
        ax.axvline(12, color="gray", lw=0.8)
        ax.set_xlabel("time steps K")
        ax.set_ylabel("RMSE (10,000 points)")
        ax.set_title("best SI-exp RMSE per K")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        for ax, K in zip(axes[:2], (8, 12)):
            for r in [r for r in recs if r["steps"] == K]:
                e = [p[0] for p in r["history"]]
                v = [p[1] for p in r["history"]]
                ax.step(e, v, where="post", label=f"{r['method']} s{r['seed']} ({r['init']})", lw=1)
            basin = json.loads((out.parent / "runs" / f"exp-K{K}.json").read_text()) if (out.parent / "runs" / f"exp-K{K}.json").exists() else None
            if basin:
                ax.plot([basin["evaluations"]], [basin["rmse"]], "k*", ms=10,
                        label="basin hopping, fit_fewspike.py (final)")
            if K == 12:
                ax.axhline(PAPER_RMSE_K12, color="r", ls=":", lw=1.5, label="paper 0.0015413")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("objective evaluations")
            ax.set_ylabel("best RMSE so far (10,000 points)")
            ax.set_title(f"exp on [-1, 1], K = {K}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        png = out / "search_evidence.png"
        fig.savefig(png, dpi=120)
        plt.close(fig)
        figures.append(str(png))
    except ImportError:
        pass
    notes = ("Objective: exact mean squared error on 10,000 evenly spaced points of [-1, 1] with the least-squares "
             "optimal readout d (fewspike_research.search.exact_mse); rmse column: the best neuron simulated in "
             "float64.  best_after_N: best RMSE after N objective evaluations (budget saturation).  "
             "pieces table: min_pieces_continuous_bound is rigorous for the continuous L2 error on [-1, 1] "
             "(any function with fewer constant pieces has a larger RMSE); the grid Lloyd columns are reached values "
             "on the 10,000-point grid.  Structure table: a neuron cuts [-1, 1] into 1 + sum_k m_k pieces, m_k = number of "
             "level-k windows (residual ranges x - C_p of the prefixes p of the first k steps) that contain T[k+1]; "
             "overlap_conflict_rmse_bound: no readout d of that (T, h) has a smaller continuous RMSE "
             "(fewspike_research.bounds.overlap_conflict_bound: overlapping windows share the rest of the neuron "
             "but need slopes e^C_p != e^C_q); it is a bound for the given (T, h), not over all neurons.  "
             "K > 16 (plans reach / reach-s1): each K starts from the best K - 1 neuron known when the unit runs, plus one "
             "step in 64 ways (grown-pool), CMA-ES step 0.02 with IPOP restarts from those 64 points; "
             "smallest_K_reaching_paper_rmse is None when no K reached 0.0015413.  fresh-K20 / K26 / K32: CMA-ES from the "
             "structured pool with 10x the budget of one growth unit, to compare growth with a fresh search.")
    write_report(out / "search_evidence.json", command, {"runs": str(runs), "params_file": str(params_path)},
                 {"paper_rmse_K12": PAPER_RMSE_K12, "per_K": per_k, "pieces_needed": need,
                  "smallest_K_reaching_paper_rmse": reach,
                  "shipped_structure": structure},
                 tables={"per K": per_k, "units": rows, "pieces needed": need, "structure of the shipped fits": structure},
                 title="SI-exp fits: independent searches and budget saturation", notes=notes, figures=figures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="default", choices=sorted(PLANS))
    ap.add_argument("--out", default="results/conversion/fewspike/search")
    ap.add_argument("--params", default=str(PACKAGE_PARAMS))
    ap.add_argument("--ship", action="store_true", help="store units that beat the shipped fits")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for unit in PLANS[args.plan]:
            rec = run_unit(unit, runs, Path(args.params), args.ship)
            if args.plan in STOP_WHEN_REACHED and rec["rmse"] <= PAPER_RMSE_K12:
                print(f"K = {rec['steps']} reaches the paper's RMSE {PAPER_RMSE_K12}: plan stops here", flush=True)
                break
    report(runs, out, Path(args.params),
           "python benchmarks/conversion/fewspike_search_evidence.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
