"""Non-spiking probes on the same features, for context beside the LCA decoders."""
from __future__ import annotations

import torch

from spikevit.data.features import FeatureSet


def knn_probe(train: FeatureSet, test: FeatureSet, k: int = 10, chunk: int = 1024,
              device: torch.device | None = None) -> float:
    """Top-1 (%) of a cosine-similarity k-NN vote (ties broken by summed similarity)."""
    dev = device or torch.device("cpu")
    bank = torch.nn.functional.normalize(train.features.to(dev), dim=1)
    labels = train.labels.to(dev)
    C = int(max(labels.max(), test.labels.max())) + 1
    correct = 0
    for start in range(0, test.features.shape[0], chunk):
        q = torch.nn.functional.normalize(test.features[start:start + chunk].to(dev), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], C, device=dev).scatter_add_(1, labels[idx], 1.0 + 1e-6 * sim)
        correct += int((votes.argmax(1).cpu() == test.labels[start:start + chunk]).sum())
    return 100.0 * correct / test.features.shape[0]


def logistic_probe(train: FeatureSet, test: FeatureSet, C: float = 1.0, max_iter: int = 300, seed: int = 0) -> float:
    """Top-1 (%) of a multinomial logistic regression on standardised features (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(train.features.numpy(), train.labels.numpy())
    return 100.0 * float(model.score(test.features.numpy(), test.labels.numpy()))
