"""Decoders from sparse codes (B, M) to classes, vectorised over samples and classes."""
from __future__ import annotations

import torch
from torch import nn

from spikevit.errors import SpikevitError


def class_sums(codes: torch.Tensor, atom_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C) sum of |a_i| over the atoms of each class."""
    out = codes.new_zeros(codes.shape[0], num_classes)
    return out.index_add_(1, atom_labels.to(codes.device), codes.abs())


def max_activation(codes: torch.Tensor, atom_labels: torch.Tensor) -> torch.Tensor:
    """(B,) class of the most active atom (argmax_i |a_i|)."""
    return atom_labels.to(codes.device)[codes.abs().argmax(1)]


def max_sum(codes: torch.Tensor, atom_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) class with the largest summed activation."""
    return class_sums(codes, atom_labels, num_classes).argmax(1)


DENSE_LIMIT = 1 << 28      # codes up to this many entries (1 GiB of float32) are densified for mini-batch training


class ShallowDecoder(nn.Module):
    """One linear layer on codes, trained with cross-entropy (D-SELD's shallow NN).

    Trained full-batch with L-BFGS on (possibly sparse) codes; codes are scaled
    by one scalar (their mean non-zero magnitude on the training set) so the
    same L2 penalty suits every backbone.
    """

    def __init__(self, num_atoms: int, num_classes: int, weight_decay: float = 1e-4):
        super().__init__()
        self.linear = nn.Linear(num_atoms, num_classes)
        self.weight_decay = weight_decay
        self.register_buffer("scale", torch.ones(()))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = codes / self.scale
        if x.is_sparse:
            return torch.sparse.mm(x, self.linear.weight.T) + self.linear.bias
        return self.linear(x)

    def fit(self, codes: torch.Tensor, labels: torch.Tensor, max_iter: int = 200, *, method: str = "lbfgs",
            epochs: int = 20, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> "ShallowDecoder":
        """Fit on (P, M) codes (dense or sparse COO) and (P,) labels.

        ``method="lbfgs"``: full batch, ``max_iter`` L-BFGS iterations (suits a few thousand codes).
        ``method="adam"``: mini-batches of ``batch_size`` shuffled codes, ``epochs`` passes of Adam
        at learning rate ``lr`` (the paper's training on the codes of a whole training set).
        """
        if codes.shape[0] != labels.shape[0] or codes.shape[0] == 0:
            raise SpikevitError("shallow decoder needs one label per training code (and at least one code)")
        if method not in ("lbfgs", "adam"):
            raise SpikevitError(f"unknown shallow decoder training method {method!r}; choose 'lbfgs' or 'adam'")
        values = codes.coalesce().values() if codes.is_sparse else codes[codes != 0]
        self.scale.fill_(float(values.abs().mean()) if values.numel() else 1.0)
        labels = labels.to(self.linear.weight.device)
        self.train()
        if method == "adam":
            if codes.is_sparse:      # dense rows slice fast; sparse COO index_select is O(nnz) per batch
                codes = codes.to_dense() if codes.numel() <= DENSE_LIMIT else codes.coalesce()
            self._fit_minibatch(codes, labels, epochs, batch_size, lr, seed)
            self.eval()
            return self
        opt = torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6)

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self(codes), labels)
            loss = loss + 0.5 * self.weight_decay * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.eval()
        return self

    def _fit_minibatch(self, codes, labels, epochs: int, batch_size: int, lr: float, seed: int) -> None:
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        p = codes.shape[0]
        self.history = []
        for _ in range(epochs):
            total = 0.0
            for rows in torch.randperm(p, generator=gen).split(batch_size):
                x = codes.index_select(0, rows.to(codes.device))
                opt.zero_grad()
                loss = nn.functional.cross_entropy(self(x), labels[rows.to(labels.device)])
                loss = loss + 0.5 * self.weight_decay * self.linear.weight.pow(2).sum()
                loss.backward()
                opt.step()
                total += float(loss) * rows.numel()
            self.history.append(total / p)

    @torch.no_grad()
    def predict(self, codes: torch.Tensor) -> torch.Tensor:
        return self(codes).argmax(1)


DECODERS = ("max_activation", "max_sum", "shallow")
