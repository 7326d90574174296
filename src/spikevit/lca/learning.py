"""Original LCA dictionary learning (Rozell et al. 2008; D-SELD Eq. 7), the baseline to exemplar dictionaries.

For a batch of inputs ``S`` (B, N) and their LCA codes ``A`` (B, M) over the
dictionary ``phi`` (N, M) (SPEC Eq. 2, run by :func:`spikevit.lca.encode`)::

    S_hat = A phi^T                                   (B, N) reconstructions
    phi_i <- phi_i + eta (S - S_hat)^T a_i            D-SELD Eq. 7, every atom i at once:
    phi   <- phi + (eta / B) (S - S_hat)^T A          (batch mean of the per-sample updates)

which is one gradient step on the batch-mean reconstruction error
1/2 ||S - phi a||^2 with the codes held fixed.  After each step the atoms are
rescaled to unit L2 norm (as in Olshausen & Field and Rozell et al.; the
exemplar dictionaries are unit-norm too): without it the atoms grow, the
codes shrink and the l1 penalty lam ||a||_1 loses its meaning.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikevit.errors import SpikevitError, require
from spikevit.lca.encode import encode
from spikevit.runtime import pick_device, progress
from spikevit.tensorio import load_tensors, save_tensors

KIND = "lca-learned-dictionary"
INITS = ("random", "exemplar")


def dictionary_update(phi: torch.Tensor, inputs: torch.Tensor, codes: torch.Tensor, eta: float, *,
                      normalize: bool = True) -> torch.Tensor:
    """One D-SELD Eq. 7 step for a batch: phi (N, M), inputs (B, N), codes (B, M) -> new phi (N, M).

    ``phi + (eta / B) (S - A phi^T)^T A``, then unit-norm columns when
    ``normalize`` (atoms that end up exactly zero are left at zero).
    """
    require(phi.ndim == 2 and inputs.ndim == 2 and codes.ndim == 2,
            "dictionary_update needs phi (N, M), inputs (B, N) and codes (B, M)")
    require(inputs.shape[1] == phi.shape[0] and codes.shape == (inputs.shape[0], phi.shape[1]),
            f"shapes do not match: phi {tuple(phi.shape)}, inputs {tuple(inputs.shape)}, codes {tuple(codes.shape)}")
    require(inputs.shape[0] > 0, "dictionary_update needs at least one input")
    residual = inputs - codes @ phi.T                                   # (B, N) S - S_hat
    new = phi + (eta / inputs.shape[0]) * (residual.T @ codes)          # (N, M)
    if normalize:
        new = new / new.norm(dim=0, keepdim=True).clamp_min(torch.finfo(new.dtype).tiny)
    return new


def lasso_energy(phi: torch.Tensor, inputs: torch.Tensor, codes: torch.Tensor, lam: float) -> torch.Tensor:
    """(B,) energy E = 1/2 ||S - phi a||^2 + lam ||a||_1 of each code (D-SELD Eq. 2)."""
    return 0.5 * ((inputs - codes @ phi.T) ** 2).sum(1) + lam * codes.abs().sum(1)


@dataclass
class LearnedDictionary:
    """Result of :func:`learn_dictionary`.

    atoms:   (N, M) unit-norm learned atoms
    history: one row per epoch: mean energy, mean residual term, mean l1 term,
             mean active atoms per code, fraction of atoms never used
    config:  the learning settings
    """

    atoms: torch.Tensor
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"atoms": self.atoms}, KIND,
                            {"history": json.dumps(self.history), "config": json.dumps(self.config)})

    @classmethod
    def load(cls, path: str | Path) -> "LearnedDictionary":
        tensors, meta = load_tensors(path, KIND, required=("atoms",))
        return cls(tensors["atoms"].float(), json.loads(meta.get("history", "[]")),
                   json.loads(meta.get("config", "{}")))


def initial_dictionary(inputs: torch.Tensor, size: int, init: str = "random", seed: int = 0) -> torch.Tensor:
    """(N, M) unit-norm starting atoms: N(0, 1) draws ("random") or random training inputs ("exemplar")."""
    if init not in INITS:
        raise SpikevitError(f"unknown dictionary initialisation {init!r}; choose from {INITS}")
    gen = torch.Generator().manual_seed(seed)
    n = inputs.shape[1]
    if init == "random":
        phi = torch.randn(n, size, generator=gen)
    else:
        require(size <= inputs.shape[0], f"cannot pick {size} exemplars from {inputs.shape[0]} inputs")
        phi = inputs[torch.randperm(inputs.shape[0], generator=gen)[:size]].T.float()
    norms = phi.norm(dim=0, keepdim=True)
    require(bool((norms > 0).all()), "an initial atom is all zero (an all-zero training input?)")
    return (phi / norms).contiguous()


def learn_dictionary(inputs: torch.Tensor, size: int, *, lam: float = 0.5, tau: float = 10.0, steps: int = 60,
                     eta: float = 0.5, epochs: int = 3, batch_size: int = 100, init: str = "random",
                     rectify: bool = False, backend: str = "auto", seed: int = 0, device=None,
                     checkpoint: str | Path | None = None, show_progress: bool = True) -> LearnedDictionary:
    """Learn an (N, ``size``) dictionary from ``inputs`` (P, N) by alternating LCA coding and Eq. 7.

    Each epoch visits the inputs in a seeded random order, in batches of
    ``batch_size``: codes a = LCA(phi, S) with (lam, tau, steps), then
    :func:`dictionary_update`.  With ``checkpoint`` the atoms and history are
    saved after every epoch and a rerun with the same settings resumes there.
    """
    require(inputs.ndim == 2 and inputs.shape[0] > 0, f"inputs must be a non-empty (P, N) matrix, got "
            f"{tuple(inputs.shape)}")
    require(size > 0, f"dictionary size must be positive, got {size}")
    require(epochs >= 0 and batch_size > 0 and eta > 0, "epochs >= 0, batch_size > 0 and eta > 0 are required")
    require(bool(torch.isfinite(inputs).all()), "inputs contain NaN or inf values")
    config = {"size": int(size), "lam": float(lam), "tau": float(tau), "steps": int(steps), "eta": float(eta),
              "epochs": int(epochs), "batch_size": int(batch_size), "init": init, "rectify": bool(rectify),
              "seed": int(seed), "inputs": int(inputs.shape[0]), "feature_dim": int(inputs.shape[1])}
    dev = pick_device(device)
    phi = initial_dictionary(inputs, size, init, seed).to(dev)
    history: list = []
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = LearnedDictionary.load(checkpoint)
        same = {k: v for k, v in saved.config.items() if k != "epochs"} == {k: v for k, v in config.items()
                                                                            if k != "epochs"}
        if not same:
            raise SpikevitError(f"{checkpoint} holds a dictionary learned with other settings "
                                f"({saved.config}); delete it or choose another path")
        phi, history = saved.atoms.to(dev), saved.history[:epochs]
    kw = dict(lam=lam, tau=tau, steps=steps, rectify=rectify, backend=backend)
    P = inputs.shape[0]
    for epoch in range(len(history), epochs):
        order = torch.randperm(P, generator=torch.Generator().manual_seed(seed * 1000 + epoch + 1))
        sums = torch.zeros(4, dtype=torch.float64)
        used = torch.zeros(size, dtype=torch.bool, device=dev)
        batches = range(0, P, batch_size)
        for start in progress(batches, desc=f"dictionary learning epoch {epoch + 1}/{epochs}", unit="batch",
                              **({} if show_progress else {"disable": True})):
            s = inputs[order[start:start + batch_size]].to(dev).float()
            a = encode(phi, s, **kw)
            residual = 0.5 * ((s - a @ phi.T) ** 2).sum(1)
            l1 = lam * a.abs().sum(1)
            sums += torch.stack([(residual + l1).sum(), residual.sum(), l1.sum(),
                                 (a != 0).sum(1).double().sum()]).double().cpu()
            used |= (a != 0).any(0)
            phi = dictionary_update(phi, s, a, eta)
        mean = (sums / P).tolist()
        history.append({"epoch": epoch + 1, "energy": mean[0], "residual": mean[1], "l1": mean[2],
                        "active_per_code": mean[3], "unused_atoms_fraction": float((~used).double().mean())})
        if checkpoint is not None:
            LearnedDictionary(phi.cpu(), history, config).save(checkpoint)
    return LearnedDictionary(phi.cpu(), history, config)


def label_atoms(codes: torch.Tensor, labels: torch.Tensor, num_classes: int,
                atoms: torch.Tensor | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
    """(M,) class of each learned atom: the class whose training codes (P, M) use it most (sum of |a_i|).

    Learned atoms carry no label of their own; this gives the max-activation
    and max-sum decoders one.  Atoms no training code uses take the class whose
    mean input (``inputs`` (P, N)) they correlate with most, when ``atoms``
    (N, M) and ``inputs`` are given, else class 0.
    """
    require(codes.ndim == 2 and labels.shape == (codes.shape[0],), "codes (P, M) and labels (P,) are required")
    dense = codes.to_dense() if codes.is_sparse else codes
    score = torch.zeros(num_classes, dense.shape[1], dtype=torch.float64)
    score.index_add_(0, labels.long(), dense.abs().double())
    out = score.argmax(0)
    silent = score.sum(0) == 0
    if silent.any() and atoms is not None and inputs is not None:
        means = torch.zeros(num_classes, inputs.shape[1], dtype=torch.float64)
        means.index_add_(0, labels.long(), inputs.double())
        means /= torch.bincount(labels.long(), minlength=num_classes).clamp_min(1)[:, None]
        out[silent] = (means.float() @ atoms[:, silent]).argmax(0)
    return out
