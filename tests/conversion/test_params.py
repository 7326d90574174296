"""Shipped SI-exp parameters, checked by an independent simulation of the SIT equations."""
import json

import pytest
import torch

from spikevit.conversion import available, si_exp_parameters
from spikevit.conversion.params import PACKAGE_PARAMS, read_params
from spikevit.errors import SpikevitError


def simulate(x, T, h, d):
    """v[1] = x; z = (v >= T); v -= h z; out = sum d z -- written independently of spikevit.functional."""
    v = x.clone()
    out = torch.zeros_like(x)
    for t in range(len(T)):
        z = (v >= T[t]).double()
        out += d[t] * z
        v -= h[t] * z
    return out


@pytest.mark.parametrize("K", range(4, 17))
def test_shipped_si_exp_parameters(K):
    if K not in available("exp"):
        pytest.fail(f"no shipped SI-exp fit for K={K} (run benchmarks/conversion/fit_fewspike.py)")
    p = si_exp_parameters(K)
    assert set(p) == {"T", "h", "d"}
    for v in p.values():
        assert v.dim() == 1 and v.numel() == K and v.dtype == torch.float32
    x = torch.linspace(-1, 1, 10000, dtype=torch.float64)
    out = simulate(x, *(p[k].double() for k in "Thd"))
    rmse = float((out - torch.exp(x)).pow(2).mean().sqrt())
    _, entries = read_params(PACKAGE_PARAMS)
    assert rmse == pytest.approx(entries[f"exp/{K}"]["rmse"], rel=0.02, abs=1e-5)
    if K == 12:
        assert rmse < 0.02


def test_rmse_decreases_with_steps():
    ks = available("exp")
    _, entries = read_params(PACKAGE_PARAMS)
    r = [entries[f"exp/{k}"]["rmse"] for k in ks]
    assert all(b <= a * 1.001 for a, b in zip(r, r[1:]))


def test_unknown_steps_is_a_clear_error():
    with pytest.raises(SpikevitError, match="no fitted exp few-spike neuron with 3 steps"):
        si_exp_parameters(3)
