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

    def fit(self, codes: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> "ShallowDecoder":
        if codes.shape[0] != labels.shape[0] or codes.shape[0] == 0:
            raise SpikevitError("shallow decoder needs one label per training code (and at least one code)")
        values = codes.coalesce().values() if codes.is_sparse else codes[codes != 0]
        self.scale.fill_(float(values.abs().mean()) if values.numel() else 1.0)
        opt = torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6)
        labels = labels.to(self.linear.weight.device)

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self(codes), labels)
            loss = loss + 0.5 * self.weight_decay * self.linear.weight.pow(2).sum()
            loss.backward()
            return loss

        self.train()
        opt.step(closure)
        self.eval()
        return self

    @torch.no_grad()
    def predict(self, codes: torch.Tensor) -> torch.Tensor:
        return self(codes).argmax(1)


DECODERS = ("max_activation", "max_sum", "shallow")
