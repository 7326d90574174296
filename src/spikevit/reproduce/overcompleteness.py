"""D-SELD Fig. 5: top-1 of the three decoders vs dictionary size (over-completeness) on MNIST raw pixels.

Dictionaries of M random training exemplars, M from N = 784 (complete) to the
whole training set (60,000, "Complete" in the paper), each evaluated by
:func:`spikevit.lca.pipeline.evaluate` (max-activation, max-sum, shallow NN)
with the papers' lam = 2, tau = 100, K = 100.  Resumable: finished sizes are
kept in ``overcompleteness-partial.json``.

Shallow NN at large M: a plain linear layer on M-dimensional codes learns a
weight for an atom only if the atom is active in some training code.  With a
few hundred training codes and M = 60,000 atoms most atoms a test image
activates were never seen, their weights stay 0, and accuracy collapses (a
coverage problem, not the codes).  The paper trains its shallow NN on the
codes of the whole training set, which this CPU cannot afford for every M.
The column ``shallow_prior`` is the same single linear layer with its weights
written as W = beta * Y + dW, Y[c, i] = 1 if atom i belongs to class c (the
exemplar labels the dictionary already has), beta a learned scalar and dW
L2-regularised (weight decay 1e-4, as the plain one): at dW = 0 it is the
max-sum decoder, and training moves it away only where the training codes
give evidence.  Both shallow columns are fitted on the same training codes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikevit.errors import require
from spikevit.lca.decoders import ShallowDecoder
from spikevit.lca.params import LCA_DEFAULTS, LCAParams
from spikevit.lca.pipeline import evaluate
from spikevit.reproduce.common import Context, Partial, exemplar_dictionary, features, pyplot, report, save_figure

PARAMS = {
    "dataset": "mnist",
    "backbone": "pixels",
    "sizes": "784,1568,3136,6272,12544,25088,60000",
    "test_images": 10000,
    "shallow_train_size": 5000,
    "lam": LCA_DEFAULTS.lam, "tau": LCA_DEFAULTS.tau, "steps": LCA_DEFAULTS.steps,
    "batch": 250,
    "backend": LCA_DEFAULTS.backend,  # LCA backend (spikevit.lca.encode)
    "shallow_prior": True,        # also fit the shallow NN with the exemplar-label prior (column shallow_prior)
    "seed": 0,
}
QUICK = {"test_images": 1000, "shallow_train_size": 1000}

PAPER_AT_1568 = {"max_activation": 93.93, "max_sum": 97.48, "shallow": 98.25}   # D-SELD Table 3, M = 28*28*2


class PriorShallowDecoder(ShallowDecoder):
    """One linear layer on codes with weights W = beta * Y + dW (Y: one-hot atom labels, C x M).

    ``beta`` (scalar) and the bias are free, ``dW`` starts at 0 and carries the
    weight decay of :class:`~spikevit.lca.decoders.ShallowDecoder` (which fits
    it), so atoms absent from the training codes keep the max-sum weight.
    """

    def __init__(self, num_atoms: int, num_classes: int, atom_labels: torch.Tensor, weight_decay: float = 1e-4):
        super().__init__(num_atoms, num_classes, weight_decay)
        labels = torch.as_tensor(atom_labels, dtype=torch.long)
        require(labels.shape == (num_atoms,) and int(labels.min()) >= 0 and int(labels.max()) < num_classes,
                f"atom_labels must be {num_atoms} class indices in 0..{num_classes - 1}")
        self.register_buffer("onehot", nn.functional.one_hot(labels, num_classes).T.float())      # (C, M)
        self.beta = nn.Parameter(torch.ones(()))
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    def weight(self) -> torch.Tensor:
        return self.beta * self.onehot + self.linear.weight

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = codes / self.scale
        w = self.weight()
        if x.is_sparse:
            return torch.sparse.mm(x, w.T) + self.linear.bias
        return x @ w.T + self.linear.bias


def prior_shallow(num_atoms: int, num_classes: int, atom_labels: torch.Tensor) -> PriorShallowDecoder:
    return PriorShallowDecoder(num_atoms, num_classes, atom_labels)


def parse_sizes(text: str, available: int) -> list[int]:
    sizes = sorted({min(int(s), available) for s in str(text).split(",") if s.strip()})
    require(sizes and sizes[0] > 0, f"dictionary sizes must be positive integers, got {text!r}")
    return sizes


def rises(values: list[float]) -> dict:
    """How clearly a sequence rises: last vs first, and the fraction of non-decreasing consecutive pairs."""
    v = np.asarray(values, dtype=float)
    steps = np.diff(v)
    return {"first": float(v[0]), "last": float(v[-1]), "gain": float(v[-1] - v[0]),
            "non_decreasing_pairs": int((steps >= 0).sum()), "pairs": int(steps.size),
            "spearman": float(np.corrcoef(np.arange(v.size), np.argsort(np.argsort(v)))[0, 1]) if v.size > 1 else 1.0}


def plot(rows: list[dict], n: int, path, curve: dict | None):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 6.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    m = [r["M"] for r in rows]
    for key, label in (("max_activation", "max activation"), ("max_sum", "max sum"), ("shallow", "shallow NN"),
                       ("shallow_prior", "shallow NN, exemplar-label prior")):
        if all(key in r for r in rows):
            line, = ax.plot(m, [r[key] for r in rows], marker="o", label=label, ls=":" if key == "shallow" else "-")
            if key in PAPER_AT_1568:
                ax.scatter([2 * n], [PAPER_AT_1568[key]], marker="*", s=90, zorder=3, color=line.get_color(),
                           label=f"paper, M = 2N ({label})")
    ax.set_xscale("log")
    ax.set_xticks(m, [f"{x}\n({x / n:.3g}N)" for x in m], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("dictionary size M (over-completeness M/N)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Over-completeness vs accuracy (MNIST pixels)")
    ax.legend(fontsize=7)
    if curve:
        ax = axes[0, 1]
        k = np.arange(1, len(curve["mean"]) + 1)
        mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
        ax.plot(k, mean)
        ax.fill_between(k, np.maximum(mean - std, 0), mean + std, alpha=0.3)
        ax.set_xlabel("time step k"); ax.set_ylabel("active neurons")
        ax.set_title(f"Active neurons per step, M = {curve['M']} (mean ± std)")
    return save_figure(fig, path)


def run(ctx: Context, p: dict):
    train = features(ctx, p["dataset"], p["backbone"], "train")
    test = features(ctx, p["dataset"], p["backbone"], "test", limit=p["test_images"])
    n, total = train.features.shape[1], train.features.shape[0]
    sizes = parse_sizes(p["sizes"], total)
    partial = Partial(ctx, p)
    rows, curves = [], {}
    for size in sizes:
        done = partial.get(str(size))
        if done is None:
            d = exemplar_dictionary(train, size, p["seed"], p["dataset"], shrink=True)
            ev = evaluate(d, test, train, LCAParams.from_mapping(p), batch_size=p["batch"], device=ctx.device, shallow_train_size=p["shallow_train_size"], seed=p["seed"],
                          extra_shallow={"shallow_prior": prior_shallow} if p["shallow_prior"] else None)
            done = {"row": {"M": d.size, "M_over_N": d.size / n, **ev.accuracy, "M_hat": ev.m_hat,
                            "M_hat_%": 100 * ev.m_hat / d.size, "silent_%": 100 * ev.silent_fraction,
                            "encode_ms_per_image": ev.timing_ms["lca_encoding"]},
                    "curve": {"M": d.size, "mean": ev.active_mean, "std": ev.active_std}}
            partial.put(str(size), done)
        row = dict(done["row"])
        if row["M"] == 2 * n:
            row |= {f"paper_{k}": v for k, v in PAPER_AT_1568.items()}
        rows.append(row)
        curves[row["M"]] = done["curve"]
    trend = {k: rises([r[k] for r in rows]) for k in ("max_activation", "max_sum", "shallow", "shallow_prior")
             if all(k in r for r in rows)}
    biggest = curves[rows[-1]["M"]]
    figure = plot(rows, n, ctx.path("-accuracy.png"), biggest)
    notes = (f"{p['dataset']} {p['backbone']} features (pixels normalised with mean 0.1307 / std 0.3081), "
             f"{test.features.shape[0]} test images, dictionaries of M random training exemplars (unit-norm), "
             f"lam = {p['lam']}, tau = {p['tau']}, K = {p['steps']}; the shallow NN is trained on "
             f"{p['shallow_train_size']} training codes (images outside the dictionary first, then leave-one-out "
             "coded exemplars). The plain shallow NN sees no weight for atoms absent from those codes, so it "
             "collapses at large M with few training codes; shallow_prior is the same linear layer with weights "
             "beta * (one-hot exemplar labels) + dW, dW weight-decayed (max-sum where the training codes say "
             "nothing). Paper values (D-SELD Table 3, M = 28*28*2) are shown at M = 1568; the paper's "
             "Fig. 5 itself gives no numbers.")
    path = report(ctx, p, {"rows": rows, "trend": trend, "paper_at_M_1568": PAPER_AT_1568,
                           "active_per_step_largest_M": biggest},
                  {"accuracy vs dictionary size (Fig. 5)": rows}, title="D-SELD Fig. 5: over-completeness (MNIST)",
                  notes=notes, figures=[figure])
    partial.finish()
    return path
