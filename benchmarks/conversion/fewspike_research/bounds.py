"""Reference points for few-spike fits: what a K-step neuron could at best reach, and simple baselines.

* A K-step neuron splits the input axis into at most ``2^K`` intervals with a constant output each
  (step t splits every interval of the steps before at most once), so no fit can beat the best
  piecewise-constant approximation with ``2^K`` pieces.  :func:`best_piecewise_constant` computes
  that approximation on the fitting grid (Lloyd iterations from the high-resolution optimal
  partition, i.e. a value that is actually reached), :func:`piecewise_constant_lower_bound` a
  closed-form lower bound for increasing ``f``.
* The output ``sum_t d[t] z[t]`` is additive in the spikes: leaves that differ in one spike differ by
  exactly ``d[t]``, wherever they sit.  :func:`readout_gap` compares a fitted neuron with the same
  partition given free per-interval values (the mean of ``f`` on each interval), which isolates the
  cost of the additive readout from the cost of the partition.
* :func:`min_pieces_for_rmse`: how many constant pieces a given RMSE needs at least (387 for 0.0015413).
* Windows: after ``k`` steps every prefix ``p`` maps its inputs ``S_p`` to the residual window
  ``W_p = S_p - C_p`` of the shared remaining neuron.  :func:`cut_multiplicities` gives the exact piece
  count ``1 + sum_k m_k`` (``m_k`` windows contain ``T[k+1]``), and :func:`overlap_conflict_bound` /
  :func:`structure_rmse_bound` the error that overlapping windows force on *every* readout of a given
  ``(T, h)`` (exp needs slope ``e^C_p`` in window ``p``, the shared rest of the neuron gives one slope).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from spikevit.errors import require
from spikevit.functional.fewspike import fs_spikes

DT = torch.float64


def _grid(f: Callable, domain: tuple[float, float], n_points: int):
    x = torch.linspace(domain[0], domain[1], n_points, dtype=DT)
    return x, f(x)


def best_piecewise_constant(f: Callable, pieces: int, domain: tuple[float, float] = (-1.0, 1.0),
                            n_points: int = 10000, iters: int = 200) -> float:
    """RMSE of a (locally) optimal ``pieces``-piece constant approximation of increasing ``f`` on the grid.

    Starts from the high-resolution optimal partition (piece density ~ |f'|^(2/3)) and runs Lloyd
    iterations (pieces are contiguous index ranges: boundary where f crosses the midpoint of the two means).
    """
    x, y = _grid(f, domain, n_points)
    if pieces >= n_points:
        return 0.0
    dens = (torch.diff(y).abs() + 1e-300) ** (2 / 3)
    cum = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(dens, 0)])
    cum = cum / cum[-1]
    cuts = torch.searchsorted(cum, torch.linspace(0, 1, pieces + 1, dtype=DT)[1:-1]).clamp(1, n_points - 1)
    c1 = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum(y, 0)])

    def means(cuts):
        edges = torch.cat([torch.tensor([0]), cuts, torch.tensor([n_points])])
        cnt = (edges[1:] - edges[:-1]).clamp(min=1).to(DT)
        return (c1[edges[1:]] - c1[edges[:-1]]) / cnt

    for _ in range(iters):
        cuts = torch.unique(cuts)
        m = means(cuts)
        new = torch.searchsorted(y, (m[:-1] + m[1:]) / 2).clamp(1, n_points - 1)
        if torch.equal(new, cuts):
            break
        cuts = new
    cuts = torch.unique(cuts)
    edges = torch.cat([torch.tensor([0]), cuts, torch.tensor([n_points])])
    m = means(cuts)
    approx = torch.repeat_interleave(m, edges[1:] - edges[:-1])
    return float((approx - y).pow(2).mean().sqrt())


def piecewise_constant_lower_bound(pieces: int, domain: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Lower bound on the RMSE (continuous L2 over ``domain``) of any ``pieces``-piece constant fit of exp.

    On a piece ``[a, a + w]`` exp has slope >= e^a, and a function whose slope is >= m has variance >= that
    of the line of slope m (Chebyshev's sum inequality), so the piece costs >= e^(2a) w^3 / 12.  Minimising
    ``sum e^(2 a_i) w_i^3`` by Hoelder over partitions with left ends ``a_i`` gives
    ``>= (sum e^(2 a_i / 3) w_i)^3 / P^2``; the left Riemann sum is bounded below by
    ``int e^(2x/3) dx - w_max (e^(2 hi/3) - e^(2 lo/3))``, and with ``w_max`` free we take the
    bound ``max`` over the two regimes: a wide piece alone costs >= e^(2 lo) w_max^3 / 12.
    """
    lo, hi = domain
    L = hi - lo
    integral = 1.5 * (math.exp(2 * hi / 3) - math.exp(2 * lo / 3))
    spread = math.exp(2 * hi / 3) - math.exp(2 * lo / 3)
    b1 = lambda w: max(integral - w * spread, 0.0) ** 3 / (12 * pieces ** 2)   # decreasing in w_max
    b2 = lambda w: math.exp(2 * lo) * w ** 3 / 12                               # increasing in w_max
    # sse >= min over w_max of max(b1, b2); on [w_i, w_(i+1)] that is >= max(b1(w_(i+1)), b2(w_i))
    ws = [L * i / 4000 for i in range(4001)]
    best = min(max(b1(ws[i + 1]), b2(ws[i])) for i in range(4000))
    return math.sqrt(best / L)


def leaf_partition(T: torch.Tensor, h: torch.Tensor, domain: tuple[float, float] = (-1.0, 1.0),
                   n_points: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated spike patterns on the grid: ``(codes [n], x [n])`` with codes = sum_t z[t] 2^t."""
    x = torch.linspace(domain[0], domain[1], n_points, dtype=DT)
    z = fs_spikes(x, T.to(DT), h.to(DT))                 # [K, n]
    codes = (z * (2.0 ** torch.arange(z.shape[0], dtype=DT))[:, None]).sum(0).long()
    return codes, x


def readout_gap(f: Callable, T: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                domain: tuple[float, float] = (-1.0, 1.0), n_points: int = 10000) -> dict:
    """Pieces used by a fitted neuron and the RMSE its partition would have with free piece values.

    Returns ``{"pieces", "distinct_patterns", "rmse", "rmse_free_values"}`` where ``pieces`` counts
    maximal runs of equal spike patterns along the grid.
    """
    codes, x = leaf_partition(T, h, domain, n_points)
    y = f(x)
    change = torch.cat([torch.tensor([True]), codes[1:] != codes[:-1]])
    run = torch.cumsum(change.long(), 0) - 1
    n_runs = int(run[-1]) + 1
    sums = torch.zeros(n_runs, dtype=DT).index_add_(0, run, y)
    cnt = torch.zeros(n_runs, dtype=DT).index_add_(0, run, torch.ones_like(y))
    free = (sums / cnt)[run]
    z = fs_spikes(x, T.to(DT), h.to(DT))
    out = (d.to(DT)[:, None] * z).sum(0)
    return {"pieces": n_runs, "distinct_patterns": int(torch.unique(codes).numel()),
            "rmse": float((out - y).pow(2).mean().sqrt()),
            "rmse_free_values": float((free - y).pow(2).mean().sqrt())}


def polynomial_rmse(f: Callable, degree: int, domain: tuple[float, float] = (-1.0, 1.0),
                    n_points: int = 10000) -> float:
    """RMSE of the least-squares polynomial of ``degree`` on the grid (a smooth baseline)."""
    x, y = _grid(f, domain, n_points)
    V = torch.stack([x ** k for k in range(degree + 1)], 1)
    coef = torch.linalg.lstsq(V, y[:, None]).solution
    return float((V @ coef - y[:, None]).pow(2).mean().sqrt())


def min_pieces_for_rmse(eps: float, domain: tuple[float, float] = (-1.0, 1.0), limit: int = 1 << 20) -> int:
    """Smallest ``P`` for which :func:`piecewise_constant_lower_bound` allows continuous RMSE ``<= eps`` for exp.

    Any piecewise-constant function with fewer pieces -- in particular any few-spike neuron whose spike
    patterns cut ``domain`` into fewer intervals -- has a continuous L2 RMSE above ``eps``.  The bound
    is non-increasing in ``P`` (more pieces can only lower the optimum it bounds and the formula is
    monotone), so bisection applies.
    """
    require(eps > 0, f"target RMSE must be > 0, got {eps}")
    lo, hi = 1, limit
    if piecewise_constant_lower_bound(hi, domain) > eps:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if piecewise_constant_lower_bound(mid, domain) <= eps:
            hi = mid
        else:
            lo = mid + 1
    return lo


def level_windows(T: torch.Tensor, h: torch.Tensor, k: int, domain: tuple[float, float] = (-1.0, 1.0)
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segments and windows after the first ``k`` steps: ``(a, b, C)`` for the non-empty prefixes.

    Prefix ``p`` (spike pattern of steps ``1..k``) holds the inputs ``S_p = [a_p, b_p)`` and has discharged
    ``C_p = sum_t h_t p_t``; its residual ``v[k+1] = x - C_p`` runs over the window ``W_p = S_p - C_p``,
    where all ``p`` share the same remaining neuron (steps ``k+1..K``): ``f(x) = D_p + g_k(x - C_p)``.
    """
    from spikevit.conversion.fitting import leaf_intervals

    lo, hi = domain
    T, h = T.to(DT).flatten(), h.to(DT).flatten()
    if k == 0:
        return (torch.tensor([lo], dtype=DT), torch.tensor([hi], dtype=DT), torch.zeros(1, dtype=DT))
    a, b = leaf_intervals(T[None, :k], h[None, :k], lo, hi)
    m = torch.arange(1 << k)
    bits = ((m[:, None] >> torch.arange(k)) & 1).to(DT)
    C = bits @ h[:k]
    keep = b[0] > a[0]
    return a[0][keep], b[0][keep], C[keep]


def cut_multiplicities(T: torch.Tensor, h: torch.Tensor, domain: tuple[float, float] = (-1.0, 1.0)) -> list[int]:
    """``m_k``: number of level-``k`` windows whose interior contains ``T[k+1]`` (k = 0..K-1).

    Step ``k+1`` splits segment ``S_p`` iff ``T[k+1]`` lies strictly inside ``W_p``, so the neuron cuts
    ``domain`` into exactly ``1 + sum_k m_k`` non-empty intervals: more pieces need windows that overlap.
    """
    T = T.to(DT).flatten()
    out = []
    for k in range(T.numel()):
        a, b, C = level_windows(T, h, k, domain)
        out.append(int(((a - C < T[k]) & (T[k] < b - C)).sum()))
    return out


def _exp_variance_integral(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``min_c int_s^t (e^u - c)^2 du`` (0 for empty intervals)."""
    L = (t - s).clamp(min=0)
    full = (torch.exp(2 * t) - torch.exp(2 * s)) / 2 - (torch.exp(t) - torch.exp(s)) ** 2 / L.clamp(min=1e-300)
    return torch.where(L > 1e-12, full.clamp(min=0), torch.zeros_like(L))


def overlap_conflict_bound(T: torch.Tensor, h: torch.Tensor, k: int,
                           domain: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Lower bound on ``int_domain (f - exp)^2 dx`` for **every** readout ``d`` of the neuron ``(T, h)``.

    Proof.  On ``S_p`` the output is ``D_p + g(x - C_p)`` with one function ``g`` (steps ``k+1..K``) for all
    prefixes.  If two windows overlap on ``O = W_p cap W_q``, then for ``u in O`` the errors
    ``e_p(u) = D_p + g(u) - e^(u + C_p)`` and ``e_q(u)`` at the inputs ``u + C_p in S_p`` and ``u + C_q in S_q``
    satisfy ``e_q - e_p = (D_q - D_p) - (e^C_q - e^C_p) e^u`` whatever ``g`` is, and
    ``e_p^2 + e_q^2 >= (e_q - e_p)^2 / 2``.  Hence
    ``int_{S_p} e^2 + int_{S_q} e^2 >= (e^C_q - e^C_p)^2 / 2 * min_c int_O (e^u - c)^2 du``.
    Summing over pairs that share no prefix (a matching; chosen greedily by weight) bounds the total,
    since the segments of distinct prefixes are disjoint.  The bound depends on ``(T, h)`` only through
    the first ``k`` steps; it is not a bound over all neurons.
    """
    a, b, C = level_windows(T, h, k, domain)
    n = a.numel()
    if n < 2:
        return 0.0
    wa, wb = a - C, b - C
    s = torch.maximum(wa[:, None], wa[None, :])
    t = torch.minimum(wb[:, None], wb[None, :])
    w = 0.5 * (torch.exp(C)[:, None] - torch.exp(C)[None, :]) ** 2 * _exp_variance_integral(s, t)
    w = torch.triu(w, diagonal=1)
    order = torch.argsort(w.flatten(), descending=True)
    used = torch.zeros(n, dtype=torch.bool)
    total = 0.0
    for idx in order.tolist():
        val = float(w.flatten()[idx])
        if val <= 0:
            break
        i, j = divmod(idx, n)
        if not used[i] and not used[j]:
            used[i] = used[j] = True
            total += val
    return total


def structure_rmse_bound(T: torch.Tensor, h: torch.Tensor, domain: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """``max_k`` of :func:`overlap_conflict_bound` as a continuous RMSE: no readout ``d`` does better."""
    L = domain[1] - domain[0]
    per_level = [overlap_conflict_bound(T, h, k, domain) for k in range(1, T.numel())]
    best = max(per_level) if per_level else 0.0
    return {"rmse_bound": math.sqrt(best / L), "level": 1 + per_level.index(best) if per_level else 0,
            "per_level_rmse": [math.sqrt(v / L) for v in per_level]}
