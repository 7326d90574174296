"""Independent global searches for few-spike fits (evidence for what a K-step neuron can reach).

:func:`spikevit.conversion.fitting.fit_few_spike` is basin hopping with a gradient-based local step on a
relaxed objective.  To test whether its plateau is a property of the search or of the neuron, this
module minimises the **exact** grid error with derivative-free optimisers that share nothing with it
except the problem statement:

* :func:`exact_mse` -- mean squared error on the ``n`` grid points with the least-squares optimal readout
  ``d`` for each of ``P`` parameter sets ``(T, h)``.  The leaf intervals of
  :func:`~spikevit.conversion.fitting.leaf_intervals` are turned into **integer** grid counts (the
  number of points ``x_i = lo + i delta`` with ``x_i < s`` is ``ceil((s - lo) / delta)``), so the value
  is the discrete objective itself, a piecewise-constant function of ``(T, h)``, not a relaxation.
* :func:`cma_search` -- CMA-ES (Hansen's reference implementation, package ``cma``) on ``x = (T, h)``,
  with IPOP restarts (population doubled after each stop), starting points drawn from the fitter's
  structured initial population or given.
* :func:`de_search` -- differential evolution (``scipy.optimize.differential_evolution``,
  ``best1bin``, vectorised population, no gradient polish) inside a box that contains every shipped fit.

Both record the best RMSE against the number of objective evaluations, for budget-saturation plots.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from spikevit.conversion.fitting import (
    DEFAULT_DOMAINS,
    LeafGrid,
    leaf_bits,
    evaluate_fit,
    initial_population,
    leaf_intervals,
    target_function,
)
from spikevit.errors import require

DT = torch.float64


class ExactGrid(LeafGrid):
    """The fitting grid with exact (integer) point counts below a split point."""

    def count_below_exact(self, s: torch.Tensor) -> torch.Tensor:
        """Number of grid points ``x_i < s`` (``x_i = lo + i delta``, ``i = 0..n-1``)."""
        return torch.ceil((s - self.lo) / self.delta - 1e-9).clamp(0, self.n).long()


LEAVES_MAX_STEPS = 13      # above this the 2^K leaf table costs more than simulating the grid


def exact_mse(T: torch.Tensor, h: torch.Tensor, grid: ExactGrid, ridge: float = 1e-12, method: str = "auto"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact grid MSE with optimal ``d``: ``T, h: [P, K]`` -> ``(mse [P], d [P, K])`` (no gradient).

    With piece counts ``c`` and target sums ``s`` per spike pattern (rows of ``B``) the normal equations
    are ``(B^T diag(c) B) d = B^T s``; the ridge (relative ``1e-12``) only matters for steps that never
    fire.  Two exact ways to get ``(c, s)``, chosen by ``method``:

    * ``"leaves"`` -- all ``2^K`` patterns with their input intervals (:func:`leaf_intervals`) turned into
      integer grid counts; cost ``O(2^K K^2)`` per parameter set, the fastest for small ``K``;
    * ``"pieces"`` -- simulate the neuron on the ``n`` grid points and collect the runs of equal patterns
      (far fewer than 2^K: ~100 at K = 12, ~1,200 at K = 32); cost ``O(n K + pieces K^2)``, any ``K`` (patterns are bit-packed, ``K <= 62``).

    ``"auto"`` uses leaves up to ``LEAVES_MAX_STEPS`` steps.  Both give the same value (tests compare them).
    """
    require(method in ("auto", "leaves", "pieces"), f"unknown method {method!r}: use auto, leaves or pieces")
    with torch.no_grad():
        P, K = T.shape
        T, h = T.to(DT), h.to(DT)
        if method == "pieces" or (method == "auto" and K > LEAVES_MAX_STEPS):
            G, r = _normal_equations_pieces(T, h, grid)
        else:
            a, b = leaf_intervals(T, h, grid.lo - grid.delta, grid.hi + grid.delta)
            ia, ib = grid.count_below_exact(a), grid.count_below_exact(b)
            ib = torch.maximum(ib, ia)
            count = (ib - ia).to(DT)
            ysum = grid.c1[ib] - grid.c1[ia]
            B, BB = leaf_bits(K)
            G = (count @ BB).reshape(P, K, K)
            r = ysum @ B
        scale = 1.0 + G.diagonal(dim1=1, dim2=2).mean(-1)
        d = torch.linalg.solve(G + ridge * scale[:, None, None] * torch.eye(K, dtype=DT), r)
        mse = (grid.y2 - 2 * (d * r).sum(-1) + torch.einsum("pk,pkl,pl->p", d, G, d)) / grid.n
        return mse.clamp(min=0), d


def _normal_equations_pieces(T: torch.Tensor, h: torch.Tensor, grid: ExactGrid
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``G = B^T diag(c) B: [P, K, K]`` and ``r = B^T s: [P, K]`` from the neuron simulated on the grid.

    Grid point ``i`` is ``x_i = lo + i delta`` and spikes when ``v >= T`` (the convention of
    :meth:`ExactGrid.count_below_exact`).  Runs of equal patterns are found on the flattened
    ``[P, n]`` pattern codes; their counts and target sums (prefix sums ``c1``) are exact.
    """
    P, K = T.shape
    require(K <= 62, f"the pieces method packs patterns into int64: K <= 62, got {K}")
    n = grid.n
    x = grid.lo + grid.delta * torch.arange(n, dtype=DT)
    v = x.expand(P, n).clone()
    code = torch.zeros(P, n, dtype=torch.int64)
    for t in range(K):
        z = v >= T[:, t:t + 1]
        code |= z.long() << (K - 1 - t)
        v -= h[:, t:t + 1] * z
    start = torch.ones(P, n, dtype=torch.bool)
    start[:, 1:] = code[:, 1:] != code[:, :-1]
    first = start.flatten().nonzero().flatten()                 # flat index of each run's first point
    after = torch.cat([first[1:], first.new_tensor([P * n])])   # runs never cross rows: every row starts one
    col = first % n
    count = (after - first).to(DT)
    ysum = grid.c1[col + (after - first)] - grid.c1[col]
    owner = first // n
    bits = ((code.flatten()[first, None] >> torch.arange(K - 1, -1, -1)) & 1).to(DT)   # [runs, K]
    G = torch.zeros(P, K, K, dtype=DT).index_add_(0, owner, (bits * count[:, None])[:, :, None] * bits[:, None, :])
    r = torch.zeros(P, K, dtype=DT).index_add_(0, owner, bits * ysum[:, None])
    return G, r


@dataclass
class SearchResult:
    method: str
    steps: int
    seed: int
    T: torch.Tensor
    h: torch.Tensor
    d: torch.Tensor
    rmse: float                      # by simulating the neuron (fs_neuron), float64
    objective_rmse: float            # sqrt of the exact grid objective at the best point
    evaluations: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)   # (evaluations, best objective rmse)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "steps": self.steps, "seed": self.seed, "rmse": self.rmse,
                "objective_rmse": self.objective_rmse, "evaluations": self.evaluations, "seconds": self.seconds,
                "T": self.T.tolist(), "h": self.h.tolist(), "d": self.d.tolist(),
                "history": [list(p) for p in self.history], "config": self.config}


class _Tracker:
    """Counts evaluations, keeps the best point, logs (evaluations, best rmse) at improvements."""

    def __init__(self, grid: ExactGrid, K: int, budget: int):
        self.grid, self.K, self.budget = grid, K, budget
        self.evals, self.best, self.best_x, self.history = 0, float("inf"), None, []

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float64).reshape(-1, 2 * self.K))
        mse, _ = exact_mse(Xt[:, :self.K], Xt[:, self.K:], self.grid)
        mse = mse.numpy()
        self.evals += len(mse)
        i = int(np.argmin(mse))
        if mse[i] < self.best:
            self.best, self.best_x = float(mse[i]), Xt[i].clone()
            self.history.append((self.evals, math.sqrt(self.best)))
        return mse

    @property
    def exhausted(self) -> bool:
        return self.evals >= self.budget


def _finish(method, tracker: _Tracker, function, domain, n_points, seed, t0, config) -> SearchResult:
    K = tracker.K
    T, h = tracker.best_x[:K].clone(), tracker.best_x[K:].clone()
    _, d = exact_mse(T[None], h[None], tracker.grid)
    rmse, _ = evaluate_fit(function, T, h, d[0], domain, n_points)
    tracker.history.append((tracker.evals, math.sqrt(tracker.best)))
    return SearchResult(method, K, seed, T, h, d[0], rmse, math.sqrt(tracker.best), tracker.evals,
                        time.time() - t0, tracker.history, config)


def cma_search(function: str, steps: int, *, budget: int = 200_000, seed: int = 0, sigma0: float = 0.25,
               popsize: int | None = None, init: tuple[torch.Tensor, torch.Tensor] | None = None,
               starts: tuple[torch.Tensor, torch.Tensor] | None = None,
               domain: tuple[float, float] | None = None, n_points: int = 10000) -> SearchResult:
    """CMA-ES with IPOP restarts on the exact grid objective until ``budget`` evaluations are spent.

    The first run starts at ``init`` (if given; it is evaluated too, so the result is never worse) or at
    the binary expansion; each restart starts at the next of ``starts`` (``T, h: [S, K]``, in order) or,
    without them, at a fresh member of the fitter's structured random population, with twice the
    population size.
    """
    import cma

    require(steps >= 1 and budget > 0, "steps >= 1 and budget > 0 needed")
    lo, hi = domain or DEFAULT_DOMAINS[function]
    grid = ExactGrid(target_function(function), float(lo), float(hi), n_points)
    K = steps
    track = _Tracker(grid, K, budget)
    g = torch.Generator().manual_seed(seed)
    if starts is not None:
        pool_T, pool_h = (torch.as_tensor(a, dtype=DT).reshape(-1, K) for a in starts)
        require(len(pool_T) == len(pool_h) and len(pool_T) > 0, "starts: T and h need the same number (>= 1) of rows")
    else:
        pool_T, pool_h = initial_population(K, 64, lo, hi, g)
    t0 = time.time()
    lam = popsize or (4 + int(3 * math.log(2 * K)))
    restarts = 0
    while not track.exhausted:
        if restarts == 0 and init is not None:
            x0 = torch.cat([torch.as_tensor(init[0], dtype=DT).flatten(), torch.as_tensor(init[1], dtype=DT).flatten()])
            track(x0.numpy()[None])       # the start point itself counts: the result is never worse than init
        else:
            # given starts are used in order from the first restart; the structured pool keeps its old
            # indexing (restart r takes member r), so earlier recorded runs stay reproducible
            j = (restarts - (init is not None) if starts is not None else restarts) % len(pool_T)
            x0 = torch.cat([pool_T[j], pool_h[j]])
        es = cma.CMAEvolutionStrategy(x0.numpy(), sigma0, {
            "popsize": lam, "seed": seed * 1000 + restarts + 1, "verbose": -9,
            "maxfevals": budget - track.evals, "tolfun": 1e-12, "tolflatfitness": 20})
        while not es.stop() and not track.exhausted:
            X = es.ask()
            es.tell(X, track(np.array(X)).tolist())
        restarts += 1
        lam *= 2
    return _finish("cma-es (ipop)", track, function, (lo, hi), n_points, seed, t0,
                   {"budget": budget, "sigma0": sigma0, "popsize0": popsize or (4 + int(3 * math.log(2 * K))),
                    "restarts": restarts, "init": "given" if init is not None else "binary / structured pool",
                    "restart_points": "given" if starts is not None else "structured pool"})


def de_search(function: str, steps: int, *, budget: int = 200_000, seed: int = 0, popsize: int = 15,
              init: tuple[torch.Tensor, torch.Tensor] | None = None,
              domain: tuple[float, float] | None = None, n_points: int = 10000) -> SearchResult:
    """Differential evolution (scipy, best1bin, dithered mutation) on the exact grid objective.

    Box: ``T in [lo - 0.3 w, hi + 0.1 w]``, ``h in [-0.125 w, 1.25 w]`` (``w = hi - lo``); every fit
    shipped for exp lies inside.  ``init`` (clipped into the box) replaces one member of the uniform random
    initial population.  When the population has converged before the budget is spent, DE restarts from a
    fresh random population that contains the best point so far.
    """
    from scipy.optimize import differential_evolution

    lo, hi = domain or DEFAULT_DOMAINS[function]
    w = hi - lo
    grid = ExactGrid(target_function(function), float(lo), float(hi), n_points)
    K = steps
    track = _Tracker(grid, K, budget)
    bnds = [(lo - 0.3 * w, hi + 0.1 * w)] * K + [(-0.125 * w, 1.25 * w)] * K
    n_pop = popsize * 2 * K
    rng = np.random.default_rng(seed)
    lows, highs = np.array([a for a, _ in bnds]), np.array([b for _, b in bnds])
    t0 = time.time()

    def f(X):          # scipy passes [dim, S] when vectorized
        return track(np.asarray(X).T)

    restarts = 0
    while track.budget - track.evals > 2 * n_pop:
        pop = rng.uniform(lows, highs, size=(n_pop, 2 * K))
        if restarts == 0 and init is not None:
            x0 = np.concatenate([np.asarray(init[0], dtype=np.float64).ravel(),
                                 np.asarray(init[1], dtype=np.float64).ravel()])
            pop[0] = np.clip(x0, lows, highs)
        elif restarts > 0:     # restart after convergence: fresh population plus the best point so far
            pop[0] = np.clip(track.best_x.numpy(), lows, highs)
        maxiter = max(1, (track.budget - track.evals) // n_pop - 1)
        differential_evolution(f, bnds, strategy="best1bin", maxiter=maxiter, popsize=popsize, init=pop,
                               mutation=(0.5, 1.0), recombination=0.9, seed=seed * 1000 + restarts, polish=False,
                               tol=0, atol=0, vectorized=True, updating="deferred")
        restarts += 1
    return _finish("differential evolution", track, function, (lo, hi), n_points, seed, t0,
                   {"budget": budget, "popsize": popsize, "population": n_pop, "restarts": restarts,
                    "box_T": list(bnds[0]), "box_h": list(bnds[-1]), "init": "given" if init is not None else "uniform random"})
