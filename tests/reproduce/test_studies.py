"""Over-completeness, sparsity, hyperparameters and dictionary learning studies on tiny digits runs."""
from __future__ import annotations

import json

import pytest
import torch

from spikevit.lca import Dictionary, encode_trace
from spikevit.reproduce import run_reproduction
from spikevit.reproduce.common import Context, features


def _doc(path):
    return json.loads(path.read_text())


def test_overcompleteness_rises_and_resumes(run_kwargs):
    over = {"dataset": "digits", "sizes": "64,256,5000", "test_images": "60", "shallow_train_size": "60",
            "batch": "60"}
    path = run_reproduction("overcompleteness", overrides=over, **run_kwargs)
    doc = _doc(path)
    rows = doc["results"]["rows"]
    assert [r["M"] for r in rows] == [64, 256, 1257]                 # 5000 is clamped to the whole train split
    assert {"max_activation", "max_sum", "shallow", "shallow_prior"} <= set(rows[0])
    assert rows[-1]["max_sum"] > rows[0]["max_sum"]
    assert doc["results"]["trend"]["max_sum"]["gain"] > 0
    assert (path.parent / "overcompleteness-accuracy.png").is_file()
    assert not (path.parent / "overcompleteness-partial.json").exists()


def test_prior_shallow_decoder_is_max_sum_at_zero_and_covers_unseen_atoms():
    """W = beta Y + dW: untrained it ranks classes exactly as max-sum; trained on codes that use only the first
    half of the atoms it still classifies codes of the other half (a plain linear layer cannot)."""
    from spikevit.lca.decoders import ShallowDecoder, class_sums
    from spikevit.reproduce.overcompleteness import PriorShallowDecoder

    g = torch.Generator().manual_seed(0)
    C, M, per = 4, 400, 3
    atom_labels = torch.arange(M) % C
    dec = PriorShallowDecoder(M, C, atom_labels)
    codes = torch.rand(50, M, generator=g) * (torch.rand(50, M, generator=g) < 0.05)
    assert torch.equal(dec.predict(codes), class_sums(codes, atom_labels, C).argmax(1))

    def sample(n, atoms_from, atoms_to):             # each code: `per` atoms of its class inside the range
        y = torch.randint(0, C, (n,), generator=g)
        x = torch.zeros(n, M)
        pool = torch.arange(atoms_from, atoms_to)
        for c in range(C):
            rows, own = torch.nonzero(y == c).squeeze(1), pool[atom_labels[pool] == c]
            picks = own[torch.randint(0, own.numel(), (rows.numel(), per), generator=g)]
            x[rows[:, None], picks] = 1.0 + torch.rand(rows.numel(), per, generator=g)
        return x, y

    xtr, ytr = sample(80, 0, M // 2)
    xte, yte = sample(200, M // 2, M)
    prior = PriorShallowDecoder(M, C, atom_labels).fit(xtr.to_sparse(), ytr)
    plain = ShallowDecoder(M, C).fit(xtr.to_sparse(), ytr)
    assert float((prior.predict(xte.to_sparse()) == yte).float().mean()) == 1.0
    assert float((plain.predict(xte.to_sparse()) == yte).float().mean()) < 0.5
    assert float(prior.beta.detach()) > 0


def test_partial_results_are_reused(run_kwargs):
    """A rerun with the same parameters takes finished sizes from the partial file (no recomputation)."""
    from spikevit.reproduce.common import Partial
    from spikevit.reproduce.registry import get_reproduction, resolve_params

    over = {"dataset": "digits", "sizes": "64", "test_images": "20", "shallow_train_size": "0"}
    params = resolve_params(get_reproduction("overcompleteness"), False, over)
    ctx = Context("overcompleteness", out=run_kwargs["out"])
    planted = {"row": {"M": 64, "M_over_N": 1.0, "max_activation": 11.0, "max_sum": 12.0, "M_hat": 1.0,
                       "M_hat_%": 1.0, "silent_%": 0.0, "encode_ms_per_image": 0.0},
               "curve": {"M": 64, "mean": [1.0] * 100, "std": [0.0] * 100}}
    Partial(ctx, params).put("64", planted)
    doc = _doc(run_reproduction("overcompleteness", overrides=over, **run_kwargs))
    assert doc["results"]["rows"][0]["max_sum"] == 12.0


def test_sparsity_curve_matches_direct_encoding(run_kwargs):
    path = run_reproduction("sparsity", overrides={"dataset": "digits", "backbone": "pixels", "M": "800",
                                                   "test_images": "40", "batch": "20"}, **run_kwargs)
    res = _doc(path)["results"]
    ctx = Context("x", cache=run_kwargs["cache"], extract=False)
    train = features(ctx, "digits", "pixels", "train")
    test = features(ctx, "digits", "pixels", "test", limit=40)
    d = Dictionary.from_features(train.features, train.labels, 800, seed=0)
    out = encode_trace(d.atoms, test.features, lam=2.0, tau=100.0, steps=100, backend="gramian", trace="active")
    ref = out.active.double()
    assert torch.allclose(torch.tensor(res["active_mean"], dtype=torch.float64), ref.mean(1), atol=1e-6)
    assert torch.allclose(torch.tensor(res["active_std"], dtype=torch.float64), ref.std(1), atol=1e-5)
    assert res["M_hat"] == pytest.approx(float(ref.mean()), rel=1e-6)
    assert res["peak_step"] == int(ref.mean(1).argmax()) + 1
    assert (path.parent / "sparsity-active.png").is_file()


def test_hyperparameter_grid(run_kwargs):
    over = {"dataset": "digits", "M": "400", "test_images": "60", "lams": "0.3,4", "taus": "10,100",
            "steps": "10,50", "batch": "60"}
    path = run_reproduction("hyperparameters", overrides=over, **run_kwargs)
    assert path.name == "hyperparameters-digits-pixels.json"           # other datasets get their own files
    rows = _doc(path)["results"]["rows"]
    assert len(rows) == 8
    for k in (10, 50):
        for tau in (10.0, 100.0):
            lo, hi = (next(r for r in rows if r["K"] == k and r["tau"] == tau and r["lam"] == lam)
                      for lam in (0.3, 4.0))
            assert hi["M_hat"] <= lo["M_hat"]                          # a higher threshold never fires more here
    for r10 in (r for r in rows if r["K"] == 10):
        # K = 10 runs the first 10 steps of the K = 50 trajectory: never more active-neuron work
        r50 = next(r for r in rows if r["K"] == 50 and (r["lam"], r["tau"]) == (r10["lam"], r10["tau"]))
        assert 10 * r10["M_hat"] <= 50 * r50["M_hat"] + 1e-9
        assert r10["inference_GFLOPs"] < r50["inference_GFLOPs"]
    assert (path.parent / "hyperparameters-digits-pixels-heatmap.png").is_file()


def test_dictionary_learning_study(run_kwargs):
    over = {"dataset": "digits", "atoms_per_dim": "1", "learn_images": "300", "epochs": "2", "learn_steps": "30",
            "learn_batch": "50", "recon_images": "6", "recon_steps": "200", "test_images": "80",
            "shallow_train_size": "150", "batch": "80"}
    path = run_reproduction("dictionary-learning", overrides=over, **run_kwargs)
    res = _doc(path)["results"]
    assert len(res["learning_history"]) == 2
    recon = {r["dictionary"]: r for r in res["reconstruction"]}
    assert set(recon) == {"exemplar", "learned", "random"} and all(r["M"] == 64 for r in recon.values())
    acc = {r["dictionary"]: r for r in res["classification"]}
    assert {"max_activation", "max_sum", "shallow"} <= set(acc["learned"])
    assert acc["exemplar"]["max_sum"] > 50                             # well above 10% chance on digits
    for png in ("-learning.png", "-atoms.png"):
        assert (path.parent / f"dictionary-learning{png}").is_file()
