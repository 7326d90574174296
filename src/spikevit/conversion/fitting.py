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
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from spikevit.errors import SpikevitError, require
from spikevit.functional.fewspike import fs_neuron
from spikevit.runtime import progress

DT = torch.float64

FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "gelu": F.gelu,
}
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
    """``f`` on ``n`` evenly spaced points of ``[lo, hi]`` and relaxed prefix sums over it."""

    def __init__(self, f: Callable, lo: float, hi: float, n: int):
        require(n >= 2 and hi > lo, f"need n >= 2 points and lo < hi, got n={n}, [{lo}, {hi}]")
        self.x = torch.linspace(lo, hi, n, dtype=DT)
        self.y = f(self.x)
        self.lo, self.hi, self.n = lo, hi, n
        self.delta = (hi - lo) / (n - 1)
        self.c1 = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(self.y, 0)])
        self.y2 = float((self.y ** 2).sum())

    def count_below(self, s: torch.Tensor) -> torch.Tensor:
        """Relaxed number of grid points ``< s`` (exact half-way between two points)."""
        return ((s - self.lo) / self.delta + 0.5).clamp(0, self.n)

    def sum_below(self, u: torch.Tensor) -> torch.Tensor:
        i = u.detach().floor().clamp(max=self.n - 1).long()
        w = u - i
        return self.c1[i] * (1 - w) + self.c1[i + 1] * w


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
    count, ysum = ub - ua, grid.sum_below(ub) - grid.sum_below(ua)
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
