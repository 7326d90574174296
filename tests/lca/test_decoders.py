"""Decoders on hand-made codes, and the shallow NN on a separable toy problem."""
import torch

from spikevit.lca import ShallowDecoder, class_sums, max_activation, max_sum


def test_decoders_on_hand_made_codes():
    labels = torch.tensor([0, 0, 1, 1, 2])
    codes = torch.tensor([
        [0.0, 0.0, 0.0, 0.0, 0.0],   # silent
        [3.0, 0.0, 2.0, 2.0, 0.0],   # max activation: class 0; max sum: class 1 (4 > 3)
        [0.0, 0.1, 0.0, 0.0, 0.2],   # class 2 both ways
        [1.0, 1.0, 0.0, 0.0, 1.5],   # max act: class 2; sum: class 0 (2 > 1.5)
    ])
    torch.testing.assert_close(class_sums(codes, labels, 4), torch.tensor([
        [0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0], [0.1, 0.0, 0.2, 0.0], [2.0, 0.0, 1.5, 0.0]]))
    assert max_activation(codes, labels)[1:].tolist() == [0, 2, 2]
    assert max_sum(codes, labels, 4)[1:].tolist() == [1, 2, 0]


def test_signed_codes_use_magnitudes():
    labels = torch.tensor([0, 1])
    codes = torch.tensor([[-5.0, 1.0]])
    assert max_activation(codes, labels).item() == 0
    assert max_sum(codes, labels, 2).item() == 0


def test_shallow_decoder_learns_sparse_codes():
    g = torch.Generator().manual_seed(0)
    m, c = 40, 4
    atom_class = torch.arange(m) % c
    y = torch.randint(0, c, (400,), generator=g)
    codes = torch.zeros(400, m)
    # each sample activates 3 atoms of its class plus one random distractor
    for k in range(3):
        pick = (torch.randint(0, m // c, (400,), generator=g) * c + y)
        codes[torch.arange(400), pick] = torch.rand(400, generator=g) + 0.5
    codes[torch.arange(400), torch.randint(0, m, (400,), generator=g)] += 0.3
    dec = ShallowDecoder(m, c).fit(codes[:300].to_sparse(), y[:300])
    acc = (dec.predict(codes[300:]) == y[300:]).float().mean()
    assert acc > 0.95
    assert torch.equal(dec.predict(codes[300:].to_sparse()), dec.predict(codes[300:]))


def test_probes_on_separable_features():
    from spikevit.data.features import FeatureSet
    from spikevit.lca.baselines import knn_probe, logistic_probe

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 5
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 8, generator=g)
    tr = FeatureSet(x[:200], y[:200], torch.arange(200), {})
    te = FeatureSet(x[200:], y[200:], torch.arange(100), {})
    assert knn_probe(tr, te, k=5) == 100.0
    assert logistic_probe(tr, te) == 100.0
    # labels shuffled relative to features: probes fall to chance level
    te_bad = FeatureSet(x[200:], y[200:][torch.randperm(100, generator=g)], torch.arange(100), {})
    assert knn_probe(tr, te_bad, k=5) < 60.0
