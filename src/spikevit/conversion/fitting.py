"""Fitting few-spike neurons (SI-exp and friends) to an elementwise function.

Problem: choose ``T, h`` (``[K]`` each) and ``d`` so that the neuron of
:func:`spikevit.functional.fewspike.fs_neuron` approximates ``f`` on ``n``
evenly spaced points of ``[lo, hi]`` (the SIT paper: exp, 10,000 points in [-1, 1]),
minimising the root-mean-square error.

The output is ``sum_t d[t] z[t]`` with binary spikes, so the error is a
piecewise-constant function of ``T, h``; we make it searchable as follows.

* **Exact leaf form.** Follow every spike pattern through the K steps: at step t
  an input interval ``[a, b)`` whose prefix has discharged ``H = sum_{s<t} h_s z_s``
  splits at ``s = clamp(T[t] + H, a, b)`` (``x >= s`` spikes).  After K steps there
  are ``2^K`` intervals (most of them empty), leaf ``m`` having the spike pattern
  given by the bits of ``m``.  With per-leaf point counts and target sums, the
  Gram matrix ``Z^T Z`` and ``Z^T y`` are ``2^K``-term sums instead of ``n``-term ones.
* **Exact least squares for d.** For fixed ``T, h`` the best ``d`` solves the
  ``K x K`` normal equations (float64, tiny ridge for steps that never fire).
* **Relaxed counts, exact gradients.** Point counts and prefix sums of the
  target are linearly interpolated between grid points, which makes the
  optimal-d error a continuous, piecewise-smooth function of the split points;
  its gradient (envelope theorem: ``d`` held at its optimum) drives Adam on
  ``T, h`` for a whole population at once.  At grid-aligned split points it is
  the exact discrete error; every reported RMSE is recomputed by simulating the
  neuron (:func:`evaluate_fit`).
* **Global search.** Structured initialisations (binary expansion, beta
  expansions with 1.2 < beta < 2, perturbed binary, random), then rounds of
  basin hopping: keep the best quarter, mutate (Gaussian moves on ``T, h``,
  re-randomise / insert / delete one time step), re-optimise.  Fits for ``K``
  are seeded with the best ``K - 1`` solution plus one step (growth).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from spikevit.errors import SpikevitError, require
from spikevit.functional.fewspike import fs_neuron, fs_spikes
from spikevit.nn.spiking_softmax import EXACT_FUNCTIONS, FewSpikeActivation
from spikevit.runtime import progress

DT = torch.float64

FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = EXACT_FUNCTIONS
# fitting interval per function: exp as in the SIT paper; activations over the range that LayerNorm'd
# transformer pre-activations occupy (outside it the neuron saturates)
DEFAULT_DOMAINS: dict[str, tuple[float, float]] = {
    "exp": (-1.0, 1.0), "sigmoid": (-6.0, 6.0), "silu": (-6.0, 6.0), "gelu": (-6.0, 6.0)}


def target_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in FUNCTIONS:
        raise SpikevitError(f"unknown function {name!r} for a few-spike neuron; choose from {sorted(FUNCTIONS)}")
    return FUNCTIONS[name]


@dataclass
class FewSpikeFit:
    """A fitted few-spike neuron. ``T, h, d``: ``[K]`` float64; ``rmse`` measured by simulation."""

    function: str
    steps: int
    domain: tuple[float, float]
    n_points: int
    T: torch.Tensor
    h: torch.Tensor
    d: torch.Tensor
    rmse: float
    max_abs_error: float
    seconds: float = 0.0
    evaluations: int = 0
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"function": self.function, "steps": self.steps, "domain": list(self.domain),
                "n_points": self.n_points, "rmse": self.rmse, "max_abs_error": self.max_abs_error,
                "T": self.T.tolist(), "h": self.h.tolist(), "d": self.d.tolist(), "seconds": self.seconds,
                "evaluations": self.evaluations, "config": self.config}


class LeafGrid:
    """``f`` on ``n`` evenly spaced points of ``[lo, hi]`` and relaxed prefix sums over it.

    With ``sample`` (``[N]`` inputs, e.g. a layer's calibrated pre-activations) every grid point is weighted
    by the fraction of the sample nearest to it (weights summing to ``n``), so the objective is the mean
    squared error over the sample's distribution instead of over the interval.
    """

    def __init__(self, f: Callable, lo: float, hi: float, n: int, sample: torch.Tensor | None = None):
        require(n >= 2 and hi > lo, f"need n >= 2 points and lo < hi, got n={n}, [{lo}, {hi}]")
        self.x = torch.linspace(lo, hi, n, dtype=DT)
        self.y = f(self.x)
        self.lo, self.hi, self.n = lo, hi, n
        self.delta = (hi - lo) / (n - 1)
        self.c0 = None                   # cumulative weights (None: every point weighs 1)
        w = torch.ones(n, dtype=DT)
        if sample is not None:
            idx = ((sample.detach().to(DT).flatten() - lo) / self.delta).round().clamp(0, n - 1).long()
            w = torch.bincount(idx, minlength=n).to(DT) * (n / idx.numel())
            self.c0 = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(w, 0)])
        self.w = w
        self.c1 = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(w * self.y, 0)])
        self.y2 = float((w * self.y ** 2).sum())

    def count_below(self, s: torch.Tensor) -> torch.Tensor:
        """Relaxed position of ``s``: the number of grid points ``< s`` (exact half-way between two points)."""
        return ((s - self.lo) / self.delta + 0.5).clamp(0, self.n)

    def weight_below(self, u: torch.Tensor) -> torch.Tensor:
        """Relaxed total weight of the grid points below position ``u`` (``u`` itself without a sample)."""
        return u if self.c0 is None else self._interp(self.c0, u)

    def sum_below(self, u: torch.Tensor) -> torch.Tensor:
        return self._interp(self.c1, u)

    def _interp(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        i = u.detach().floor().clamp(max=self.n - 1).long()
        w = u - i
        return c[i] * (1 - w) + c[i + 1] * w


_BITS: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def leaf_bits(K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``B: [2^K, K]`` spike pattern of each leaf, ``BB: [2^K, K*K]`` its outer products."""
    if K not in _BITS:
        m = torch.arange(1 << K)
        B = ((m[:, None] >> torch.arange(K)) & 1).to(DT)
        _BITS[K] = (B, (B[:, :, None] * B[:, None, :]).reshape(1 << K, K * K))
    return _BITS[K]


def leaf_intervals(T: torch.Tensor, h: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Input intervals of every spike pattern. ``T, h: [P, K]`` -> ``a, b: [P, 2^K]``.

    Leaf ``m`` collects the inputs ``x in [a_m, b_m)`` whose spike train is the bits of ``m``
    (bit t = spike at step t); empty patterns have ``a_m = b_m``.
    """
    P, K = T.shape
    a = torch.full((P, 1), lo, dtype=T.dtype)
    b = torch.full((P, 1), hi, dtype=T.dtype)
    H = torch.zeros(P, 1, dtype=T.dtype)
    for t in range(K):
        s = torch.minimum(torch.maximum(T[:, t:t + 1] + H, a), b)
        a, b = torch.cat([a, s], 1), torch.cat([s, b], 1)
        H = torch.cat([H, H + h[:, t:t + 1]], 1)
    return a, b


def _objective(T: torch.Tensor, h: torch.Tensor, grid: LeafGrid, ridge: float = 1e-10
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error with least-squares optimal ``d`` for each of ``P`` parameter sets.

    ``T, h: [P, K]`` -> ``(mse [P], d [P, K])``; differentiable in ``T, h`` (``d`` enters at its optimum).
    """
    P, K = T.shape
    a, b = leaf_intervals(T, h, grid.lo - grid.delta, grid.hi + grid.delta)
    ua, ub = grid.count_below(a), grid.count_below(b)
    count, ysum = grid.weight_below(ub) - grid.weight_below(ua), grid.sum_below(ub) - grid.sum_below(ua)
    B, BB = leaf_bits(K)
    G = (count @ BB).reshape(P, K, K)
    r = ysum @ B
    with torch.no_grad():
        scale = 1.0 + G.diagonal(dim1=1, dim2=2).mean(-1)
        d = torch.linalg.solve(G + ridge * scale[:, None, None] * torch.eye(K, dtype=DT), r)
    mse = (grid.y2 - 2 * (d * r).sum(-1) + torch.einsum("pk,pkl,pl->p", d, G, d)) / grid.n
    return mse, d


def _adam(T, h, grid, iters: int, lr: float):
    """Adam on ``T, h`` for the whole population; returns each member's best point seen."""
    T = T.clone().requires_grad_(True)
    h = h.clone().requires_grad_(True)
    opt = torch.optim.Adam([T, h], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=lr * 0.01)
    best_e = best_T = best_h = None
    for _ in range(iters):
        e, _ = _objective(T, h, grid)
        with torch.no_grad():
            if best_e is None:
                best_e, best_T, best_h = e.clone(), T.detach().clone(), h.detach().clone()
            else:
                m = e < best_e
                best_e = torch.where(m, e, best_e)
                best_T[m], best_h[m] = T.detach()[m], h.detach()[m]
        opt.zero_grad()
        e.sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        e, d = _objective(best_T, best_h, grid)
    return best_T, best_h, e, d


def initial_population(K: int, P: int, lo: float, hi: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Structured starting points ``T, h: [P, K]``: binary / beta expansions of ``x - lo``, perturbed, random."""
    width = hi - lo
    t = torch.arange(K, dtype=DT)
    Ts, hs = [], []
    for p in range(P):
        kind = p % 3
        if p == 0:              # exact binary expansion (successive approximation of x - lo)
            h = width * 0.5 ** (t + 1)
            T = lo + h
        elif kind == 0:         # beta expansion, 1.2 < beta < 2 (redundant codes)
            beta = 1.2 + 0.8 * float(torch.rand(1, generator=g))
            h = width * (beta - 1) * beta ** -t
            T = lo + h * (0.6 + 0.5 * torch.rand(K, generator=g, dtype=DT))
        elif kind == 1:         # perturbed binary
            s = 0.3 * float(torch.rand(1, generator=g))
            h = width * 0.5 ** (t + 1) * torch.exp(s * torch.randn(K, generator=g, dtype=DT))
            T = lo + h * (1 + s * torch.randn(K, generator=g, dtype=DT))
        else:                   # random, decreasing discharges
            h = (width / 2 * torch.exp(math.log(1e-3) * torch.rand(K, generator=g, dtype=DT))).sort(descending=True).values
            T = lo + 2 * torch.rand(K, generator=g, dtype=DT) * h.clamp(max=width / 2)
        Ts.append(T)
        hs.append(h)
    return torch.stack(Ts), torch.stack(hs)


def grow(T: torch.Tensor, h: torch.Tensor, K: int, P: int, lo: float, hi: float, g: torch.Generator
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds for ``K`` steps from one solution with ``K - 1``: a finer step appended or a step inserted."""
    require(T.shape[-1] == K - 1, "grow() needs a solution with K - 1 steps")
    width = hi - lo
    Ts, hs = [], []
    for p in range(P):
        pos = K - 1 if p % 2 == 0 else int(torch.randint(K, (1,), generator=g))
        hn = float(h.abs().min()) * (0.3 + 0.6 * float(torch.rand(1, generator=g)))
        if pos != K - 1:
            hn = width * 0.5 * math.exp(math.log(1e-2) * float(torch.rand(1, generator=g)))
        Tn = lo + width * float(torch.rand(1, generator=g)) * (0.05 if pos == K - 1 else 1.0) - 0.1 * width
        Ts.append(torch.cat([T[:pos], torch.tensor([Tn], dtype=DT), T[pos:]]))
        hs.append(torch.cat([h[:pos], torch.tensor([hn], dtype=DT), h[pos:]]))
    return torch.stack(Ts), torch.stack(hs)


def _mutate(T, h, e, P: int, lo: float, hi: float, g: torch.Generator):
    """Basin-hopping proposals from the best quarter: Gaussian moves, or re-randomise/insert/delete one step."""
    K = T.shape[1]
    width = hi - lo
    top = e.argsort()[:max(1, P // 4)]
    idx = top[torch.randint(len(top), (P,), generator=g)]
    T, h = T[idx].clone(), h[idx].clone()
    kind = torch.randint(4, (P,), generator=g)
    scale = torch.exp(math.log(0.2) + math.log(0.005 / 0.2) * torch.rand(P, 1, generator=g, dtype=DT))
    m = kind == 0
    n = int(m.sum())
    T[m] = T[m] + scale[m] * h[m].abs().clamp(min=1e-3 * width) * torch.randn(n, K, generator=g, dtype=DT)
    h[m] = h[m] * torch.exp(scale[m] * torch.randn(n, K, generator=g, dtype=DT))
    for p in torch.nonzero(kind >= 1).flatten().tolist():
        t = int(torch.randint(K, (1,), generator=g))
        new_T = lo + width * (1.25 * float(torch.rand(1, generator=g)) - 0.25)
        if kind[p] == 1:        # re-randomise step t
            h[p, t] = width * 0.5 * math.exp(math.log(2e-3) * float(torch.rand(1, generator=g)))
            T[p, t] = new_T
        elif kind[p] == 2:      # insert a random step at t, drop the last one
            T[p, t + 1:], h[p, t + 1:] = T[p, t:-1].clone(), h[p, t:-1].clone()
            h[p, t] = width * 0.5 * math.exp(math.log(2e-2) * float(torch.rand(1, generator=g)))
            T[p, t] = new_T
        elif K > 1:             # delete step t, append a finer step
            T[p, t:-1], h[p, t:-1] = T[p, t + 1:].clone(), h[p, t + 1:].clone()
            h[p, -1] = h[p, -2] * 0.5
            T[p, -1] = lo + 0.5 * width * float(torch.rand(1, generator=g)) - 0.25 * width
    return T, h


def evaluate_fit(function: str | Callable, T: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                 domain: tuple[float, float] = (-1.0, 1.0), n_points: int = 10000,
                 dtype: torch.dtype = DT) -> tuple[float, float]:
    """(RMSE, max |error|) of the simulated neuron on ``n_points`` evenly spaced points of ``domain``."""
    f = target_function(function) if isinstance(function, str) else function
    x = torch.linspace(domain[0], domain[1], n_points, dtype=dtype)
    err = fs_neuron(x, T.to(dtype), h.to(dtype), d.to(dtype)).double() - f(x.double())
    return float(err.pow(2).mean().sqrt()), float(err.abs().max())


def fit_few_spike(function: str, steps: int, *, domain: tuple[float, float] | None = None,
                  n_points: int = 10000, population: int = 48, rounds: int = 12, iters: int = 200,
                  seed: int = 0, init: tuple[torch.Tensor, torch.Tensor] | None = None,
                  time_budget: float | None = None, show_progress: bool = True) -> FewSpikeFit:
    """Fit ``T, h, d`` of a ``steps``-step few-spike neuron to ``function`` (see the module docstring).

    ``init``: ``(T, h)`` of a solution with ``steps`` or ``steps - 1`` steps to seed the population.
    ``time_budget``: stop basin hopping after this many seconds (at least one round runs).
    """
    f = target_function(function)
    require(1 <= steps <= 20, f"steps must lie in 1..20 (2^steps leaves are enumerated), got {steps}")
    require(population >= 4, f"population must be >= 4, got {population}")
    require(rounds >= 0 and iters >= 1, "rounds must be >= 0 and iters >= 1")
    lo, hi = domain or DEFAULT_DOMAINS[function]
    grid = LeafGrid(f, float(lo), float(hi), n_points)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    T, h = initial_population(steps, population, lo, hi, g)
    if init is not None:
        T0, h0 = (torch.as_tensor(v, dtype=DT).flatten() for v in init)
        if T0.numel() == steps:
            T[1], h[1] = T0, h0
        elif T0.numel() == steps - 1:
            n = population // 2
            T[1:1 + n], h[1:1 + n] = grow(T0, h0, steps, n, lo, hi, g)
        else:
            raise SpikevitError(f"init has {T0.numel()} steps; need {steps} or {steps - 1}")
    T, h, e, d = _adam(T, h, grid, iters, lr=0.03 * (hi - lo) / 2)
    evals = population * iters
    i = int(e.argmin())
    best = (float(e[i]), T[i].clone(), h[i].clone(), d[i].clone())
    history = [{"round": 0, "best_rmse": math.sqrt(max(best[0], 0)), "seconds": time.time() - t0}]
    bar = progress(range(rounds), desc=f"fit {function} K={steps}", **({} if show_progress else {"disable": True}))
    for r in bar:
        if time_budget is not None and time.time() - t0 > time_budget:
            break
        keep = e.argsort()[:max(1, population // 8)]
        Tn, hn = _mutate(T, h, e, population, lo, hi, g)
        Tn[:len(keep)], hn[:len(keep)] = T[keep], h[keep]
        T, h, e, d = _adam(Tn, hn, grid, iters, lr=0.01 * (hi - lo) / 2)
        evals += population * iters
        i = int(e.argmin())
        if float(e[i]) < best[0]:
            best = (float(e[i]), T[i].clone(), h[i].clone(), d[i].clone())
        history.append({"round": r + 1, "best_rmse": math.sqrt(max(best[0], 0)), "seconds": time.time() - t0})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(rmse=f"{history[-1]['best_rmse']:.5f}")
    _, Tb, hb, db = best
    rmse, maxerr = evaluate_fit(f, Tb, hb, db, (lo, hi), n_points)
    return FewSpikeFit(function, steps, (float(lo), float(hi)), n_points, Tb, hb, db, rmse, maxerr,
                       seconds=time.time() - t0, evaluations=evals, history=history,
                       config={"population": population, "rounds": rounds, "iters": iters, "seed": seed,
                               "time_budget": time_budget, "grown_from_init": init is not None})


# ----------------------------------------------------------------------------------------------------------
# fitting a shipped neuron to the inputs a layer actually receives (convert's calibration)
# ----------------------------------------------------------------------------------------------------------
SAMPLE_QUANTILES = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def map_to_interval(T: torch.Tensor, h: torch.Tensor, domain: tuple[float, float], lo, hi
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Thresholds and discharges of a neuron fitted on ``domain`` moved onto ``[lo, hi]`` (exactly).

    With ``s = (hi - lo) / (domain[1] - domain[0])``, the neuron ``(lo + s (T - domain[0]), s h)`` fed ``x``
    emits the spikes that ``(T, h)`` emits when fed ``domain[0] + (x - lo) / s``: every threshold test
    ``x - s H >= lo + s (T[t] - domain[0])`` is the original one multiplied by ``s``.
    ``T, h: [K]``, ``lo, hi``: floats or ``[P]`` -> ``[P, K]`` (``[1, K]`` for floats).
    """
    lo = torch.as_tensor(lo, dtype=T.dtype).reshape(-1, 1)
    hi = torch.as_tensor(hi, dtype=T.dtype).reshape(-1, 1)
    s = (hi - lo) / (domain[1] - domain[0])
    return lo + s * (T[None] - domain[0]), s * h[None]


def least_squares_d(x: torch.Tensor, y: torch.Tensor, T: torch.Tensor, h: torch.Tensor,
                    ridge: float = 1e-9) -> torch.Tensor:
    """Output weights minimising ``mean((sum_t d[t] z[t](x) - y)^2)`` for fixed ``T, h`` (``[K]``), by the
    K x K normal equations in float64 (a tiny ridge: a step that never fires on ``x`` gets ``d = 0``)."""
    Z = fs_spikes(x.to(DT), T.to(DT), h.to(DT)).T                # [N, K]
    G = Z.T @ Z
    scale = 1.0 + float(G.diagonal().mean())
    return torch.linalg.solve(G + ridge * scale * torch.eye(G.shape[0], dtype=DT), Z.T @ y.to(DT))


def fit_to_sample(function: str | Callable, sample: torch.Tensor, T: torch.Tensor, h: torch.Tensor,
                  d: torch.Tensor, domain: tuple[float, float], *, polish_iters: int = 0, population: int = 8,
                  n_bins: int = 4096) -> dict:
    """A few-spike neuron for ``function`` made accurate where its inputs live: ``sample`` (``[N]``, the
    layer's inputs recorded during calibration).

    Starting from a fitted neuron ``(T, h, d)`` (``[K]`` each, fitted on ``domain``):

    1. candidates: the neuron moved exactly onto intervals ``[lo, hi]`` (:func:`map_to_interval`) whose ends
       are sample quantiles (:data:`SAMPLE_QUANTILES` from each end, or 25 % of the range beyond it), plus the
       neuron as it is; for each, ``d`` is refitted by least squares on the sample's distribution (binned on
       ``n_bins`` points spanning the sample, :class:`LeafGrid` with ``sample``) and the best is kept;
    2. ``polish_iters > 0``: Adam on ``T, h`` of the best ``population`` candidates against the same
       distribution-weighted error (the fitter's relaxed leaf objective), seconds per layer at K = 12;
    3. ``d`` of the winner is refitted by least squares on the sample itself (:func:`least_squares_d`).

    The neuron given is returned unchanged if it is at least as accurate on the sample (so the result is
    never worse there).  Returns ``{"T", "h", "d"}`` (``[K]`` float64), ``"domain"`` (the interval the
    neuron was moved onto), ``"rmse"`` / ``"max_abs_error"`` (simulated on the sample), ``"rmse_before"``
    (the given neuron on the sample), ``"samples"``, ``"changed"`` and ``"polished"``.
    """
    f = target_function(function) if isinstance(function, str) else function
    x = sample.detach().to(DT).flatten().cpu()
    require(x.numel() >= 2, f"need at least 2 sample values to fit a few-spike neuron, got {x.numel()}")
    require(bool(torch.isfinite(x).all()), "the few-spike neuron's calibration sample holds NaN or infinite values")
    require(isinstance(polish_iters, int) and polish_iters >= 0, f"polish_iters must be >= 0, got {polish_iters!r}")
    T, h, d = (v.detach().to(DT).cpu().flatten() for v in (T, h, d))
    y = f(x)
    lo, hi = float(x.min()), float(x.max())
    if not hi - lo > 1e-6 * max(1.0, abs(lo), abs(hi)):          # (nearly) constant inputs: any small interval
        lo, hi = lo - 1e-3 * max(1.0, abs(lo)), hi + 1e-3 * max(1.0, abs(hi))
    width = hi - lo
    q = torch.quantile(x, torch.tensor(SAMPLE_QUANTILES[1:], dtype=DT))
    q_hi = torch.quantile(x, 1 - torch.tensor(SAMPLE_QUANTILES[1:], dtype=DT))
    lows = [lo - 0.25 * width, lo] + q.tolist()
    highs = [hi + 0.25 * width, hi] + q_hi.tolist()
    pairs = [(a, b) for a in lows for b in highs if b - a > 1e-3 * width]
    a = torch.tensor([p[0] for p in pairs], dtype=DT)
    b = torch.tensor([p[1] for p in pairs], dtype=DT)
    Tc, hc = map_to_interval(T, h, domain, a, b)
    Tc, hc = torch.cat([Tc, T[None]]), torch.cat([hc, h[None]])
    ends = torch.cat([torch.stack([a, b], 1), torch.tensor([list(domain)], dtype=DT)])
    grid = LeafGrid(f, lo, hi, n_bins, sample=x)
    with torch.no_grad():
        mse, _ = _objective(Tc, hc, grid)
    order = mse.argsort()
    best_T, best_h, best_dom = Tc[order[0]], hc[order[0]], tuple(ends[order[0]].tolist())
    if polish_iters:
        top = order[:population]
        span = float((ends[top, 1] - ends[top, 0]).min())
        with torch.enable_grad():                         # convert's calibration runs under no_grad
            Tp, hp, e, _ = _adam(Tc[top], hc[top], grid, polish_iters, lr=0.005 * span)
        i = int(e.argmin())
        best_T, best_h, best_dom = Tp[i].detach(), hp[i].detach(), tuple(ends[top[i]].tolist())
    best_d = least_squares_d(x, y, best_T, best_h)

    def err(T_, h_, d_):
        e_ = fs_neuron(x, T_, h_, d_) - y
        return float(e_.pow(2).mean().sqrt()), float(e_.abs().max())

    before, before_max = err(T, h, d)
    rmse, max_abs = err(best_T, best_h, best_d)
    changed = rmse < before
    if not changed:
        best_T, best_h, best_d, best_dom, rmse, max_abs = T, h, d, tuple(domain), before, before_max
    return {"T": best_T.clone(), "h": best_h.clone(), "d": best_d.clone(), "domain": tuple(float(v) for v in best_dom),
            "rmse": rmse, "max_abs_error": max_abs, "rmse_before": before, "samples": int(x.numel()),
            "changed": changed, "polished": bool(polish_iters) and changed}


ACTIVATION_FITS = ("shipped", "range", "polish")


def fit_activations(net: nn.Module, mode: str = "range", polish_iters: int = 150) -> dict[str, dict]:
    """Fit every :class:`~spikevit.nn.FewSpikeActivation` of ``net`` that recorded inputs during calibration
    to those inputs (:func:`fit_to_sample`) and install the result.

    ``mode``: ``"shipped"`` (keep the shipped neurons, only drop the records), ``"range"`` (move the shipped
    neuron onto the inputs' range and refit its output weights: a fraction of a second per layer) or
    ``"polish"`` (as ``"range"``, then ``polish_iters`` Adam steps on its thresholds and discharges: seconds
    per layer).  Returns ``{module path: what fit_to_sample measured}`` for the fitted layers.
    """
    require(mode in ACTIVATION_FITS, f"activation_fit={mode!r}: choose from {list(ACTIVATION_FITS)}")
    out = {}
    for name, m in net.named_modules():
        if not isinstance(m, FewSpikeActivation):
            continue
        sample = m.take_sample()
        if sample is None or mode == "shipped":
            continue
        r = fit_to_sample(m.function, sample, m.T, m.h, m.d, m.domain,
                          polish_iters=polish_iters if mode == "polish" else 0)
        info = {k: v for k, v in r.items() if k not in ("T", "h", "d")}
        m.set_neuron(r["T"], r["h"], r["d"], r["domain"], info)
        out[name] = info
    return out
