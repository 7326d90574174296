"""Independent few-spike searches: exact objective against brute-force simulation, optimisers against exhaustion."""
import math

import pytest
import torch

from fewspike_research import bounds
from spikevit.conversion.fitting import leaf_intervals
from fewspike_research.search import ExactGrid, cma_search, de_search, exact_mse
from spikevit.errors import SpikevitError
from spikevit.functional.fewspike import fs_neuron, fs_spikes

DT = torch.float64


def brute_force(x, y, T, h):
    """Simulate the spikes point by point, least-squares readout on the [n, K] spike matrix."""
    Z = fs_spikes(x, T, h).T
    d = torch.linalg.lstsq(Z, y[:, None], driver="gelsd").solution.flatten()
    return float((Z @ d - y).pow(2).mean()), d


@pytest.mark.parametrize("K", [3, 6, 9])
def test_exact_mse_equals_simulated_least_squares_for_arbitrary_parameters(K):
    n = 3001
    grid = ExactGrid(torch.exp, -1.0, 1.0, n)
    g = torch.Generator().manual_seed(K)
    T = torch.rand(6, K, generator=g, dtype=DT) * 2.4 - 1.3        # arbitrary reals: split points off the grid
    h = torch.rand(6, K, generator=g, dtype=DT) * 1.4 - 0.2         # negative discharges included
    mse, d = exact_mse(T, h, grid)
    for p in range(6):
        ref, _ = brute_force(grid.x, grid.y, T[p], h[p])
        assert math.isclose(float(mse[p]), ref, rel_tol=1e-7, abs_tol=1e-12)
        # the returned readout is optimal: simulating with it reproduces the objective
        out = fs_neuron(grid.x, T[p], h[p], d[p])
        assert math.isclose(float((out - grid.y).pow(2).mean()), ref, rel_tol=1e-6, abs_tol=1e-12)


@pytest.mark.parametrize("K", [1, 5, 11])
def test_exact_mse_pieces_method_equals_leaves_method(K):
    grid = ExactGrid(torch.exp, -1.0, 1.0, 2001)
    g = torch.Generator().manual_seed(100 + K)
    T = torch.rand(8, K, generator=g, dtype=DT) * 2.4 - 1.3
    h = torch.rand(8, K, generator=g, dtype=DT) * 1.4 - 0.2
    leaves, d_leaves = exact_mse(T, h, grid, method="leaves")
    pieces, d_pieces = exact_mse(T, h, grid, method="pieces")
    torch.testing.assert_close(pieces, leaves, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(d_pieces, d_leaves, rtol=1e-6, atol=1e-8)


def test_exact_mse_beyond_the_leaf_table_equals_brute_force():
    """K = 22 (4M leaves) goes through the pieces method; the objective is the simulated least squares."""
    K, n = 22, 1501
    grid = ExactGrid(torch.exp, -1.0, 1.0, n)
    g = torch.Generator().manual_seed(7)
    h = 2.0 * 0.62 ** torch.arange(1, K + 1, dtype=DT) * (1 + 0.1 * torch.rand(K, generator=g, dtype=DT))
    T = -1.0 + h * (0.5 + torch.rand(K, generator=g, dtype=DT))
    mse, d = exact_mse(T[None], h[None], grid)
    ref, _ = brute_force(grid.x, grid.y, T, h)
    assert math.isclose(float(mse[0]), ref, rel_tol=1e-7, abs_tol=1e-12)
    out = fs_neuron(grid.x, T, h, d[0])
    assert math.isclose(float((out - grid.y).pow(2).mean()), ref, rel_tol=1e-6, abs_tol=1e-12)
    with pytest.raises(SpikevitError, match="unknown method"):
        exact_mse(T[None], h[None], grid, method="dense")


def test_cma_search_restarts_from_the_given_start_points():
    """A useless init (never fires) and one good restart point: the search ends at the good point's level."""
    good = cma_search("exp", 3, budget=4000, seed=3, n_points=201)
    never = (torch.full((3,), 5.0, dtype=DT), torch.zeros(3, dtype=DT))
    r = cma_search("exp", 3, budget=600, seed=0, sigma0=1e-4, popsize=6, n_points=201, init=never,
                   starts=(good.T[None], good.h[None]))
    assert r.config["restart_points"] == "given" and r.config["restarts"] >= 2
    assert r.objective_rmse <= good.objective_rmse * (1 + 1e-9)
    never_only = cma_search("exp", 3, budget=600, seed=0, sigma0=1e-4, popsize=6, n_points=201, init=never,
                            starts=never)
    assert never_only.objective_rmse > 5 * good.objective_rmse      # the restart points are what mattered
    with pytest.raises(SpikevitError, match="starts"):
        cma_search("exp", 3, budget=100, starts=(good.T[None], torch.zeros(0, 3, dtype=DT)))


def exhaustive_two_step_optimum(grid):
    """Best 2-step neuron over every split configuration the grid can distinguish.

    A 2-step neuron cuts at c1 = T1 and, below c1, at c2 = T2, above it at c3 = T2 + h1 (h2 is irrelevant):
    every triple of cut positions c2 <= c1 <= c3 (plus the variants with c2 above c1 or c3 below c1, which
    merge pieces and are covered by the ``<=`` ends) is realised by some (T, h).  Enumerate all of them on
    the gaps of the grid and solve the least squares per triple.
    """
    n = grid.n
    cuts = torch.arange(n + 1)                                # cut before point i (i = 0..n)
    c1, c2, c3 = torch.meshgrid(cuts, cuts, cuts, indexing="ij")
    keep = (c2 <= c1) & (c3 >= c1)
    c1, c2, c3 = c1[keep], c2[keep], c3[keep]
    T1 = grid.lo + (c1.to(DT) - 0.5) * grid.delta
    T2 = grid.lo + (c2.to(DT) - 0.5) * grid.delta
    h1 = (c3 - c2).to(DT) * grid.delta                      # v = x - h1 crosses T2 at c3
    T = torch.stack([T1, T2], 1)
    h = torch.stack([h1, torch.zeros_like(h1)], 1)
    best = float("inf")
    for Tc, hc in zip(T.split(200000), h.split(200000)):
        best = min(best, float(exact_mse(Tc, hc, grid)[0].min()))
    return best


def test_cma_and_de_reach_the_exhaustive_two_step_optimum():
    n = 120
    grid = ExactGrid(torch.exp, -1.0, 1.0, n)
    best = exhaustive_two_step_optimum(grid)
    for search in (cma_search, de_search):
        r = search("exp", 2, budget=20000, seed=0, n_points=n)
        assert r.objective_rmse ** 2 >= best - 1e-12                 # nothing beats exhaustion
        assert r.rmse <= math.sqrt(best) * 1.0005, (search.__name__, r.rmse, math.sqrt(best))
        assert r.history[-1][0] == r.evaluations
        # what each method guarantees about its budget, whatever the library version: CMA-ES stops after the
        # generation that reaches it (IPOP doubles the population per restart); DE stops when fewer than two
        # populations' worth of evaluations are left and never overshoots
        if search is cma_search:
            last_population = r.config["popsize0"] * 2 ** (r.config["restarts"] - 1)
            assert 20000 <= r.evaluations < 20000 + last_population
        else:
            assert 20000 - 2 * r.config["population"] <= r.evaluations <= 20000


def test_search_results_respect_the_piece_count_bound():
    # a K-step neuron has at most 2^K pieces: its grid RMSE can never beat the best 2^K-piece constant fit
    n = 2000
    for K in (3, 4):
        r = cma_search("exp", K, budget=15000, seed=1, n_points=n)
        assert r.rmse >= bounds.best_piecewise_constant(torch.exp, 2 ** K, n_points=n) - 1e-9
        gap = bounds.readout_gap(torch.exp, r.T, r.h, r.d, (-1.0, 1.0), n)
        assert gap["pieces"] <= 2 ** K


def test_min_pieces_for_rmse_is_the_smallest_admissible_count():
    for eps in (0.05, 0.0127, 0.0015413):
        P = bounds.min_pieces_for_rmse(eps)
        assert bounds.piecewise_constant_lower_bound(P) <= eps < bounds.piecewise_constant_lower_bound(P - 1)
        # the bound is a bound: the reached P-1 piece fit on a fine grid is not below it
        assert bounds.best_piecewise_constant(torch.exp, P - 1, n_points=20000) >= \
            bounds.piecewise_constant_lower_bound(P - 1) * 0.995
    with pytest.raises(SpikevitError, match="target RMSE must be > 0"):
        bounds.min_pieces_for_rmse(0.0)


def fine_grid_sse(T, h, n=200001):
    """Continuous int_{-1}^{1} (f - exp)^2 with the least-squares d, by a fine midpoint-free Riemann sum."""
    x = torch.linspace(-1, 1, n, dtype=DT)
    mse, _ = brute_force(x, torch.exp(x), T, h)
    return mse * 2.0


def random_neurons(K, count, seed):
    g = torch.Generator().manual_seed(seed)
    T = torch.rand(count, K, generator=g, dtype=DT) * 2.2 - 1.2
    h = torch.rand(count, K, generator=g, dtype=DT) * 1.2 - 0.1
    return T, h


def test_piece_count_is_one_plus_cut_multiplicities():
    T, h = random_neurons(6, 8, 5)
    x = torch.linspace(-1, 1, 400001, dtype=DT)
    for p in range(8):
        m = bounds.cut_multiplicities(T[p], h[p])
        a, b = leaf_intervals(T[p:p + 1], h[p:p + 1], -1.0, 1.0)
        widths = (b - a)[b > a]
        z = fs_spikes(x, T[p], h[p])
        runs = 1 + int((z[:, 1:] != z[:, :-1]).any(0).sum())
        assert widths.numel() == 1 + sum(m)
        if float(widths.min()) > 1e-4:          # every piece is wide enough to hold grid points
            assert runs == 1 + sum(m)


def test_overlap_conflict_bound_closed_form_and_validity():
    # binary expansion, level 1: windows [-1, 0) and [-1, 0], discharges 0 and 1
    T, h = torch.tensor([0.0, -0.5], dtype=DT), torch.tensor([1.0, 0.5], dtype=DT)
    V = (1 - math.exp(-2)) / 2 - (1 - math.exp(-1)) ** 2
    assert math.isclose(bounds.overlap_conflict_bound(T, h, 1), 0.5 * (math.e - 1) ** 2 * V, rel_tol=1e-9)
    # no readout beats it: random neurons and searched ones, optimal d on a fine grid
    Tr, hr = random_neurons(5, 6, 11)
    cands = [(Tr[p], hr[p]) for p in range(6)]
    r = cma_search("exp", 5, budget=8000, seed=0, n_points=2000)
    cands.append((r.T, r.h))
    t = torch.arange(5, dtype=DT)
    cands.append((-1 + 2 * 0.5 ** (t + 1), 2 * 0.5 ** (t + 1)))          # binary expansion, K = 5
    ratios = []
    for T, h in cands:
        sse = fine_grid_sse(T, h)
        for k in range(1, 5):
            assert bounds.overlap_conflict_bound(T, h, k) <= sse * 1.001 + 1e-9
        assert bounds.structure_rmse_bound(T, h)["rmse_bound"] <= math.sqrt(sse / 2) * 1.001 + 1e-9
        ratios.append(max(bounds.overlap_conflict_bound(T, h, k) for k in range(1, 5)) / sse)
    # and it is not vacuous: it explains most of the binary expansion's error, a good part of a fitted one's
    assert ratios[-1] > 0.8 and ratios[-2] > 0.3
