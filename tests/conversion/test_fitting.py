"""The fitter's exact leaf form against brute-force simulation; search quality against exhaustive search."""
import math

import torch

from fewspike_research import bounds
from spikevit.conversion.fitting import LeafGrid, _objective, fit_few_spike, leaf_intervals
from spikevit.functional.fewspike import fs_spikes

DT = torch.float64


def brute_force_mse(x, y, T, h):
    Z = fs_spikes(x, T, h).T                                   # [n, K]
    d = torch.linalg.lstsq(Z, y[:, None], driver="gelsd").solution.flatten()
    return float((Z @ d - y).pow(2).mean()), d


def test_leaf_intervals_match_simulated_patterns():
    g = torch.Generator().manual_seed(0)
    K = 6
    T = (torch.rand(3, K, generator=g, dtype=DT) * 2 - 1)
    h = torch.rand(3, K, generator=g, dtype=DT) * 0.6
    a, b = leaf_intervals(T, h, -1.0, 1.0)
    x = torch.linspace(-1, 1, 2001, dtype=DT)[:-1]
    for p in range(3):
        z = fs_spikes(x, T[p], h[p])                           # [K, n]
        code = (z * (2.0 ** torch.arange(K, dtype=DT))[:, None]).sum(0).long()
        inside = (x[None, :] >= a[p][:, None]) & (x[None, :] < b[p][:, None])   # [2^K, n]
        assert bool((inside.sum(0) == 1).all())
        assert torch.equal(inside.float().argmax(0), code)


def test_objective_equals_brute_force_least_squares_on_half_grid_splits():
    # all split points T + sum h z on half-way positions between grid points -> relaxed counts are exact
    n = 201
    grid = LeafGrid(torch.exp, -1.0, 1.0, n)
    delta = grid.delta
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        K = 5
        T = -1.0 + (torch.randint(0, n, (K,), generator=g).to(DT) + 0.5) * delta
        h = torch.randint(0, 60, (K,), generator=g).to(DT) * delta
        mse, d = _objective(T[None], h[None], grid, ridge=0.0 + 1e-14)
        ref, _ = brute_force_mse(grid.x, grid.y, T, h)
        assert math.isclose(float(mse), ref, rel_tol=1e-6, abs_tol=1e-12)


def test_objective_gradient_matches_finite_differences():
    grid = LeafGrid(torch.exp, -1.0, 1.0, 10000)
    T = torch.tensor([[-0.31, -0.87, -0.57, -0.95]], dtype=DT, requires_grad=True)  # no split on a kink
    h = torch.tensor([[0.52, 0.27, 0.33, 0.11]], dtype=DT, requires_grad=True)
    mse, _ = _objective(T, h, grid)
    mse.sum().backward()
    eps = 1e-7
    for P, G in ((T, T.grad), (h, h.grad)):
        for k in range(4):
            Pp, Pm = P.detach().clone(), P.detach().clone()
            Pp[0, k] += eps
            Pm[0, k] -= eps
            args_p = (Pp, h.detach()) if P is T else (T.detach(), Pp)
            args_m = (Pm, h.detach()) if P is T else (T.detach(), Pm)
            fd = (float(_objective(*args_p, grid)[0]) - float(_objective(*args_m, grid)[0])) / (2 * eps)
            assert math.isclose(float(G[0, k]), fd, rel_tol=2e-3, abs_tol=1e-7)


def test_search_reaches_exhaustive_optimum_for_two_steps():
    grid = LeafGrid(torch.exp, -1.0, 1.0, 2000)
    vals_T = torch.linspace(-1.2, 1.0, 23, dtype=DT)
    vals_h = torch.linspace(0.0, 2.0, 21, dtype=DT)
    combos = torch.cartesian_prod(torch.arange(23), torch.arange(21), torch.arange(23), torch.arange(21))
    best = float("inf")
    for chunk in combos.split(100000):
        T = torch.stack([vals_T[chunk[:, 0]], vals_T[chunk[:, 2]]], 1)
        h = torch.stack([vals_h[chunk[:, 1]], vals_h[chunk[:, 3]]], 1)
        with torch.no_grad():
            best = min(best, float(_objective(T, h, grid)[0].min()))
    fit = fit_few_spike("exp", 2, n_points=2000, population=8, rounds=1, iters=40, seed=0, show_progress=False)
    assert fit.rmse <= math.sqrt(best) * 1.001


def test_bounds_are_consistent():
    f = torch.exp
    for P in (4, 16, 64):
        assert bounds.best_piecewise_constant(f, P) >= bounds.piecewise_constant_lower_bound(P) * 0.999
    # a 2-step neuron has at most 4 pieces
    fit = fit_few_spike("exp", 2, n_points=2000, population=8, rounds=1, iters=50, seed=1, show_progress=False)
    gap = bounds.readout_gap(f, fit.T, fit.h, fit.d, (-1.0, 1.0), 2000)
    assert gap["pieces"] <= 4 and gap["rmse_free_values"] <= gap["rmse"] + 1e-12
    assert fit.rmse >= bounds.best_piecewise_constant(f, 4, n_points=2000) - 1e-9
    assert math.isclose(bounds.polynomial_rmse(f, 2), 0.02685, rel_tol=1e-3)
