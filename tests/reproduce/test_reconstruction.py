"""D-SELD Table 1 / Fig. 3-4 pieces: stopping rule, metrics, pixel mapping, and a tiny end-to-end run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spikevit.reproduce import run_reproduction
from spikevit.reproduce.reconstruction import (PixelCoder, active_gram_norm, image_metrics, iterations_to_converge,
                                               random_dictionary, settling_iterations)


def test_stopping_rule_on_exponential_decay():
    """E[k] = E_inf + (E0 - E_inf) rho^k: |E[k] - E[k-W]| = (E0 - E_inf) rho^(k-W) (1 - rho^W) falls monotonically."""
    e0, e_inf, rho, window, tol, K = 50.0, 5.0, 0.97, 10, 1e-4, 600
    k = torch.arange(0, K + 1, dtype=torch.float64)
    full = e_inf + (e0 - e_inf) * rho ** k
    got = iterations_to_converge(full[1:, None], torch.tensor([e0], dtype=torch.float64), window, tol)
    expected = window + math.ceil(math.log(tol * e0 / ((e0 - e_inf) * (1 - rho ** window))) / math.log(rho))
    assert int(got) == expected


def test_settling_time_of_exponential_decay_and_overshoot():
    """E[k] = E_inf + A rho^k: |E[k] - E[K]| = A (rho^k - rho^K) <= f A (1 - rho^K) <=> rho^k <= f (1 - rho^K) + rho^K."""
    e0, e_inf, rho, f, K = 50.0, 5.0, 0.97, 0.05, 300
    k = torch.arange(0, K + 1, dtype=torch.float64)
    full = e_inf + (e0 - e_inf) * rho ** k
    got = settling_iterations(full[1:, None], torch.tensor([e0], dtype=torch.float64), f)
    expected = math.ceil(math.log(f * (1 - rho ** K) + rho ** K) / math.log(rho))
    assert int(got) == expected
    # an overshoot (E far above, then below the final value) keeps it unsettled until it re-enters the band
    trace = torch.tensor([[10.0], [30.0], [0.5], [2.2], [2.0], [2.0]])          # E[1..6], E[0] = 12, band 0.5
    assert int(settling_iterations(trace, torch.tensor([12.0]), 0.05)) == 4   # |E[3] - 2| = 1.5 > 0.5
    nan = torch.tensor([[1.0], [float("nan")]])
    assert int(settling_iterations(nan, torch.tensor([2.0]), 0.05)) == -1


def test_stopping_rule_edge_cases():
    e0 = torch.tensor([10.0, 10.0, 10.0])
    K = 50
    flat = torch.full((K,), 10.0)                                  # nothing ever fires: converged at once
    late = torch.cat([torch.full((30,), 10.0), torch.linspace(9.0, 5.0, 20)])   # still falling at K
    bump = torch.cat([torch.full((20,), 10.0), torch.full((30,), 4.0)])         # drop at step 21, flat after
    got = iterations_to_converge(torch.stack([flat, late, bump], 1), e0, 5, 1e-3)
    assert got.tolist() == [5, -1, 26]                             # bump: last window touching the drop ends at 25
    blown = torch.cat([torch.full((10,), 10.0), torch.full((40,), float("nan"))])
    assert int(iterations_to_converge(blown[:, None], e0[:1], 5, 1e-3)) == -1   # diverged is never converged


def test_median_iterations_counts_unconverged_as_largest():
    from spikevit.reproduce.reconstruction import median_iterations

    assert median_iterations(torch.tensor([30, 50, 40]), 100) == 40.0
    assert median_iterations(torch.tensor([30, -1, -1]), 100) == ">100"
    assert median_iterations(torch.tensor([30, 20, -1]), 100) == 30.0


def test_metrics_are_scikit_image_on_0_255():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(16, 16, 3))
    noisy = img + rng.normal(0, 5, size=img.shape)
    m = image_metrics(img, noisy)
    mse = float(np.mean((img - noisy) ** 2))
    assert m["MSE"] == pytest.approx(mse)
    assert m["PSNR_dB"] == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert 0 < m["SSIM"] < 1
    same = image_metrics(img[..., 0], img[..., 0])
    assert same["MSE"] == 0 and same["PSNR_dB"] == math.inf and same["SSIM"] == pytest.approx(1.0)


@pytest.mark.parametrize("center", ["none", "image"])
def test_pixel_coder_round_trip(center):
    x = torch.rand(3, 3, 4, 4)
    coder = PixelCoder("cifar10", center)
    v, off = coder.encode(x)
    assert v.shape == (3, 48)
    if center == "image":
        assert torch.allclose(v.view(3, 3, 16).mean(2), torch.zeros(3, 3), atol=1e-6)
    assert torch.allclose(coder.decode(v, off, (3, 4, 4)), x, atol=1e-6)


def test_active_gram_norm_matches_eigvalsh_of_the_active_block():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(20, 60, generator=g, dtype=torch.float64) + 0.5        # correlated atoms
    phi = phi / phi.norm(dim=0)
    codes = torch.randn(4, 60, generator=g, dtype=torch.float64) * (torch.rand(4, 60, generator=g) < 0.3)
    codes[3] = 0                                                                # empty active set
    got = active_gram_norm(phi, codes, iters=500)
    for b in range(3):
        a = codes[b] != 0
        ref = torch.linalg.eigvalsh(phi[:, a].T @ phi[:, a])[-1]
        assert float(got[b]) == pytest.approx(float(ref), rel=1e-6)
    assert float(got[3]) == 0.0
    full = active_gram_norm(phi, torch.ones(1, 60, dtype=torch.float64), iters=500)
    assert float(full[0]) == pytest.approx(float(torch.linalg.eigvalsh(phi @ phi.T)[-1]), rel=1e-6)


def test_random_dictionary_is_unit_norm_gaussian():
    phi = random_dictionary(64, 2000, 0)
    assert torch.allclose(phi.norm(dim=0), torch.ones(2000), atol=1e-5)
    z = phi * 8.0                                                    # sqrt(N) * unit N(0,1) direction ~ N(0,1)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.02


def test_tiny_run_dataset_dictionary_ahead(run_kwargs):
    path = run_reproduction("reconstruction", overrides={"datasets": "digits", "images": "10", "steps": "300",
                                                         "batch": "10"}, **run_kwargs)
    doc = json.loads(path.read_text())
    rows = {r["dictionary"]: r for r in doc["results"]["summary"]}
    assert rows["dataset"]["M"] == rows["random"]["M"] == 128          # 2 N with N = 64
    assert rows["dataset"]["PSNR_dB"] > rows["random"]["PSNR_dB"] + 1
    assert rows["dataset"]["SSIM"] > rows["random"]["SSIM"]
    assert rows["dataset"]["paper_PSNR_dB"] == 28.47 and rows["random"]["paper_SSIM"] == 0.75
    assert rows["dataset"]["diverged"] == rows["random"]["diverged"] == 0
    assert rows["random"]["lmax_G"] < rows["dataset"]["lmax_G"]                 # correlated exemplars
    assert rows["dataset"]["lmax_GAA_final_max"] <= rows["dataset"]["lmax_G"] * (1 + 1e-6)
    assert rows["dataset"]["stable_if_below_2tau"] == 200.0
    for suffix in ("-energy.png", "-images.png", ".md"):
        assert (path.parent / f"reconstruction{suffix}").is_file()
    md = path.with_suffix(".md").read_text()
    assert "Iterations to converge" in md
