"""Original LCA dictionary learning (D-SELD Eq. 7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spikevit.errors import SpikevitError
from spikevit.lca.learning import (LearnedDictionary, dictionary_update, initial_dictionary, label_atoms,
                                   lasso_energy, learn_dictionary)


def _batch(seed=0, n=7, m=5, b=4):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, m, generator=g, dtype=torch.float64)
    s = torch.randn(b, n, generator=g, dtype=torch.float64)
    a = torch.relu(torch.randn(b, m, generator=g, dtype=torch.float64))
    return phi, s, a


def test_update_is_eq7_per_atom_and_sample():
    phi, s, a = _batch()
    eta = 0.3
    ref = phi.numpy().copy()
    s_hat = a.numpy() @ phi.numpy().T
    for i in range(phi.shape[1]):                       # phi_i += eta (S - S_hat) a_i, averaged over the batch
        for b in range(s.shape[0]):
            ref[:, i] += eta / s.shape[0] * (s[b].numpy() - s_hat[b]) * a[b, i].item()
    got = dictionary_update(phi, s, a, eta, normalize=False)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_update_is_a_gradient_step_on_the_reconstruction_error():
    phi, s, a = _batch(1)
    p = phi.clone().requires_grad_(True)
    loss = 0.5 * ((s - a @ p.T) ** 2).sum(1).mean()
    loss.backward()
    np.testing.assert_allclose(dictionary_update(phi, s, a, 0.1, normalize=False).numpy(),
                               (phi - 0.1 * p.grad).numpy(), rtol=1e-12, atol=1e-12)


def test_normalised_update_has_unit_atoms_and_checks_shapes():
    phi, s, a = _batch(2)
    out = dictionary_update(phi, s, a, 0.5)
    np.testing.assert_allclose(out.norm(dim=0).numpy(), 1.0, rtol=1e-12)
    with pytest.raises(SpikevitError, match="shapes do not match"):
        dictionary_update(phi, s[:, :3], a, 0.5)


def test_lasso_energy_closed_form():
    phi, s, a = _batch(3)
    e = lasso_energy(phi, s, a, 0.7)
    ref = [0.5 * np.sum((s[b].numpy() - phi.numpy() @ a[b].numpy()) ** 2) + 0.7 * np.abs(a[b].numpy()).sum()
           for b in range(s.shape[0])]
    np.testing.assert_allclose(e.numpy(), ref, rtol=1e-12)


def _digits(count=300):
    from spikevit.backbones import create_backbone
    from spikevit.data.datasets import dataset_spec, load_dataset

    spec = dataset_spec("digits")
    ds = load_dataset("digits", None, "train", create_backbone("pixels", pixel_stats=(spec.mean, spec.std)).transform)
    return torch.stack([ds[i][0] for i in range(count)]), torch.tensor(ds.targets[:count])


def test_learning_lowers_the_energy_and_resumes(tmp_path):
    x, _ = _digits()
    kw = dict(lam=0.5, tau=10.0, steps=30, eta=0.5, batch_size=50, seed=0, show_progress=False)
    full = learn_dictionary(x, 32, epochs=3, **kw)
    energies = [h["energy"] for h in full.history]
    assert energies[-1] < 0.8 * energies[0], energies
    assert torch.allclose(full.atoms.norm(dim=0), torch.ones(32), atol=1e-5)
    ckpt = tmp_path / "d.safetensors"
    learn_dictionary(x, 32, epochs=1, checkpoint=ckpt, **kw)
    assert len(LearnedDictionary.load(ckpt).history) == 1
    resumed = learn_dictionary(x, 32, epochs=3, checkpoint=ckpt, **kw)
    assert torch.allclose(resumed.atoms, full.atoms, atol=1e-5)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    with pytest.raises(SpikevitError, match="other settings"):
        learn_dictionary(x, 32, epochs=3, checkpoint=ckpt, **(kw | {"eta": 0.1}))


def test_learned_dictionary_beats_its_random_start():
    """After learning, LCA codes reconstruct held-out digits better than with the N(0,1) start."""
    from spikevit.lca import encode

    x, _ = _digits(400)
    train, held = x[:300], x[300:]
    kw = dict(lam=0.5, tau=10.0, steps=30, rectify=True)
    learned = learn_dictionary(train, 32, epochs=3, eta=0.5, batch_size=50, show_progress=False, **kw)
    start = initial_dictionary(train, 32, "random", 0)
    err = {name: float(lasso_energy(phi, held, encode(phi, held, **kw), 0.5).mean())
           for name, phi in (("start", start), ("learned", learned.atoms))}
    assert err["learned"] < 0.7 * err["start"], err


def test_initial_dictionaries():
    x, _ = _digits(50)
    ex = initial_dictionary(x, 10, "exemplar", 1)
    assert ex.shape == (64, 10) and torch.allclose(ex.norm(dim=0), torch.ones(10))
    cos = (x / x.norm(dim=1, keepdim=True)) @ ex                      # every atom is one of the inputs
    assert torch.allclose(cos.amax(0), torch.ones(10), atol=1e-6)
    with pytest.raises(SpikevitError, match="unknown dictionary initialisation"):
        initial_dictionary(x, 10, "zeros")


def test_label_atoms():
    codes = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.5, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    atoms = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])          # (N=2, M=4)
    inputs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])                # class 0 along x, class 1 along y
    out = label_atoms(codes, labels, 2, atoms, inputs)
    # atom 0: class 0; atom 1: 0.5 (class 0) vs 3 (class 1); silent atoms 2 and 3 by correlation with class means
    assert out.tolist() == [0, 1, 1, 0]
