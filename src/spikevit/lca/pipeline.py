"""Evaluation of an exemplar dictionary on a test split: decoders, sparsity, workload, timings."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikevit.data.features import FeatureSet
from spikevit.energy import lca_workload
from spikevit.errors import SpikevitError
from spikevit.lca.decoders import ShallowDecoder, class_sums, max_activation
from spikevit.lca.dictionary import Dictionary
from spikevit.lca.encode import choose_backend, encode_batches
from spikevit.reports import pyplot, save_figure, write_report
from spikevit.runtime import pick_device, synchronize


@dataclass
class Evaluation:
    accuracy: dict                       # decoder -> top-1 (%)
    active_mean: torch.Tensor            # (K,) mean active neurons per step over the test set
    active_std: torch.Tensor             # (K,)
    m_hat: float                         # mean active neurons per step
    silent_fraction: float               # test codes with no active neuron
    workload: list                       # rows: K in {given, 10} ...
    timing_ms: dict                      # per-sample ms: feature extraction / encoding / decoding
    info: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)     # non-spiking baselines on the same features (top-1 %)

    def summary(self) -> str:
        acc = ", ".join(f"{k} {v:.2f}%" for k, v in self.accuracy.items())
        t = ", ".join(f"{k} {v:.3g} ms" for k, v in self.timing_ms.items())
        if self.probes:
            acc += "; probes: " + ", ".join(f"{k} {v:.2f}%" for k, v in self.probes.items())
        warn = self.info.get("test_atoms_in_dictionary", 0)
        head = (f"WARNING: {warn} dictionary atom(s) come from the evaluated {self.info.get('test_split')} split "
                "(--allow-test-atoms): the accuracy below is not a test accuracy\n") if warn else ""
        return (f"{head}top-1: {acc}\nM_hat = {self.m_hat:.1f} active neurons/step "
                f"({100 * self.m_hat / self.info['M']:.3f}% of M = {self.info['M']}); per sample: {t}")


def _shallow_rows(dictionary: Dictionary, train: FeatureSet, count: int, seed: int):
    """Training rows for the shallow NN: non-exemplars first, then exemplars coded leave-one-out."""
    # row of each split index in `train`, then the atom (if any) built from each row
    row_of = torch.full((int(train.index.max()) + 1,), -1, dtype=torch.long)
    row_of[train.index] = torch.arange(train.index.numel())
    src = dictionary.source
    valid = (src >= 0) & (src < row_of.numel())
    rows_with_atom = row_of[src[valid]]
    atoms = torch.nonzero(valid).squeeze(1)
    atom_of_row = torch.full((train.features.shape[0],), -1, dtype=torch.long)
    atom_of_row[rows_with_atom[rows_with_atom >= 0]] = atoms[rows_with_atom >= 0]
    in_dict = atom_of_row >= 0
    gen = torch.Generator().manual_seed(seed)
    outside = torch.nonzero(~in_dict).squeeze(1)
    inside = torch.nonzero(in_dict).squeeze(1)
    rows = torch.cat([outside[torch.randperm(len(outside), generator=gen)],
                      inside[torch.randperm(len(inside), generator=gen)]])[:count]
    return rows, atom_of_row[rows]


def check_evaluation_split(dictionary: Dictionary, test: FeatureSet, allow_test_atoms: bool = False) -> int:
    """Refuse a test split that contributed atoms (see :meth:`Dictionary.check_disjoint`); return their count."""
    dataset = test.meta.get("dataset", dictionary.meta.get("dataset"))
    split = test.meta.get("split")
    if split is None:
        return 0
    return dictionary.check_disjoint(dataset, split, allow=allow_test_atoms)


def evaluate(dictionary: Dictionary, test: FeatureSet, train: FeatureSet | None = None, *, lam=2.0, tau=100.0,
             steps=100, rectify=True, threshold="soft", backend="auto", batch_size=256, device=None,
             shallow_train_size=5000, seed=0, extra_shallow: dict | None = None,
             allow_test_atoms: bool = False, shallow_fit: dict | None = None) -> Evaluation:
    """Encode ``test`` with the dictionary and decode it three ways.

    ``extra_shallow`` optionally maps accuracy keys to factories
    ``f(num_atoms, num_classes, atom_labels) -> decoder`` (``fit(codes, labels)``
    / ``predict(codes)``), fitted on the same training codes as the shallow NN.
    A test split that contributed atoms is refused unless ``allow_test_atoms``
    (then ``info["test_atoms_in_dictionary"]`` counts them).  ``shallow_fit``:
    keyword arguments of :meth:`ShallowDecoder.fit` (e.g. mini-batch training).
    """
    dev = pick_device(device)
    dictionary.check_features(test.features, test.backbone)
    dictionary.check_labels()
    dictionary.check_atoms(unit_norm=False)
    if shallow_train_size is not None and (isinstance(shallow_train_size, bool) or int(shallow_train_size) < 0):
        raise SpikevitError(f"shallow_train_size must be a non-negative number of training codes, "
                            f"got {shallow_train_size}")
    leaked = check_evaluation_split(dictionary, test, allow_test_atoms)
    atoms, atom_labels = dictionary.atoms.to(dev), dictionary.labels.to(dev)
    C = max(dictionary.num_classes, int(test.labels.max()) + 1)
    kw = dict(lam=lam, tau=tau, steps=steps, rectify=rectify, threshold=threshold, backend=backend)
    if (backend if backend != "auto" else choose_backend(*atoms.shape, dev)) == "gramian":
        dtype = torch.promote_types(atoms.dtype, test.features.dtype)
        kw["gram"] = dictionary.gramian().to(dev, dtype)  # kept and extended as atoms are added

    preds = {"max_activation": [], "max_sum": []}
    act_sum = torch.zeros(steps, dtype=torch.float64)
    act_sq = torch.zeros(steps, dtype=torch.float64)
    silent, codes_parts = 0, []
    t_enc = t_dec = 0.0
    stream = encode_batches(atoms, test.features, batch_size=batch_size, device=dev, trace="active", **kw)
    while True:
        synchronize(dev); t0 = time.perf_counter()
        item = next(stream, None)
        synchronize(dev); t1 = time.perf_counter()
        if item is None:
            break
        _, out = item
        t_enc += t1 - t0
        codes = out.codes
        preds["max_activation"].append(max_activation(codes, atom_labels).cpu())
        preds["max_sum"].append(class_sums(codes, atom_labels, C).argmax(1).cpu())
        synchronize(dev); t_dec += time.perf_counter() - t1
        a = out.active.double().cpu()
        act_sum += a.sum(1); act_sq += (a * a).sum(1)
        silent += int((codes.abs().sum(1) == 0).sum())
        codes_parts.append(codes.cpu().to_sparse())
    n = test.features.shape[0]
    acc = {k: 100.0 * float((torch.cat(v) == test.labels).double().mean()) for k, v in preds.items()}
    info = {"M": dictionary.size, "N": dictionary.feature_dim, "test_samples": n, "classes": C,
            "backbone": dictionary.meta.get("backbone"), "dataset": dictionary.meta.get("dataset"),
            "test_atoms_in_dictionary": leaked, "test_split": test.meta.get("split"), "provenance": dictionary.provenance()}

    if train is not None and shallow_train_size:
        rows, excl = _shallow_rows(dictionary, train, shallow_train_size, seed)
        t0 = time.perf_counter()
        parts = [o.codes.cpu().to_sparse() for _, o in encode_batches(
            atoms, train.features[rows], batch_size=batch_size, device=dev, exclude=excl, **kw)]
        t1 = time.perf_counter()
        decoder = ShallowDecoder(dictionary.size, C).fit(torch.cat(parts).coalesce(), train.labels[rows],
                                                         **(shallow_fit or {}))
        info.update(shallow_encode_s=t1 - t0, shallow_fit_s=time.perf_counter() - t1,
                    shallow_method=(shallow_fit or {}).get("method", "lbfgs"))
        test_codes = torch.cat(codes_parts).coalesce()
        t0 = time.perf_counter()
        shallow_pred = decoder.predict(test_codes)
        t_shallow = time.perf_counter() - t0
        acc["shallow"] = 100.0 * float((shallow_pred == test.labels).double().mean())
        for name, factory in (extra_shallow or {}).items():
            extra = factory(dictionary.size, C, dictionary.labels).fit(torch.cat(parts).coalesce(), train.labels[rows])
            acc[name] = 100.0 * float((extra.predict(test_codes) == test.labels).double().mean())
        info.update(shallow_train_codes=int(rows.numel()), shallow_leave_one_out=int((excl >= 0).sum()),
                    shallow_decode_ms=1e3 * t_shallow / n)

    mean = act_sum / n
    std = (act_sq / n - mean ** 2).clamp_min(0).sqrt()
    m_hat = float(mean.mean())
    workload = [lca_workload(dictionary.size, dictionary.feature_dim, k, m_hat)
                | {"M_hat_source": "measured" if k == steps else f"measured at K={steps}"}
                for k in sorted({steps, 10}, reverse=True)]
    workload.append(lca_workload(dictionary.size, dictionary.feature_dim, steps, None) | {"M_hat_source": "dense (M)"})
    timing = {"feature_extraction": float(test.meta.get("extract_ms_per_image", float("nan"))),
              "lca_encoding": 1e3 * t_enc / n, "decoding": 1e3 * t_dec / n}
    return Evaluation(acc, mean.float(), std.float(), m_hat, silent / n, workload, timing, info)


def write_evaluation(ev: Evaluation, json_path, *, command: str, config: dict, plots: bool = True) -> Path:
    """JSON + markdown + CSV tables, and the Fig. 7-style active-neuron curve as PNG."""
    json_path = Path(json_path)
    figures = []
    if plots:
        figures.append(str(plot_active_curve(ev, json_path.with_suffix("").with_name(json_path.stem + "-active.png"))))
    acc_rows = [{"decoder": k, "top1_%": v} for k, v in ev.accuracy.items()]
    acc_rows += [{"decoder": f"probe: {k}", "top1_%": v} for k, v in ev.probes.items()]
    active_rows = [{"step": k + 1, "active_mean": float(m), "active_std": float(s)}
                   for k, (m, s) in enumerate(zip(ev.active_mean, ev.active_std))]
    timing_rows = [{"stage": k, "ms_per_sample": v} for k, v in ev.timing_ms.items()]
    results = {"accuracy": ev.accuracy, "probes": ev.probes, "M_hat": ev.m_hat, "M_hat_percent": 100 * ev.m_hat / ev.info["M"],
               "silent_fraction": ev.silent_fraction, "timing_ms_per_sample": ev.timing_ms,
               "workload": ev.workload, "active_per_step_mean": ev.active_mean, "active_per_step_std": ev.active_std,
               **ev.info}
    leaked = ev.info.get("test_atoms_in_dictionary", 0)
    notes = (f"WARNING: {leaked} dictionary atom(s) come from the evaluated split ({ev.info.get('test_split')}); "
             "run with --allow-test-atoms. These accuracies measure memorisation of those images, not "
             "generalisation." if leaked else "")
    return write_report(json_path, command, config, results,
                        {"accuracy": acc_rows, "workload": ev.workload, "timing": timing_rows,
                         "active neurons per step": active_rows},
                        title="Exemplar LCA decoder" + (" (TEST IMAGES IN THE DICTIONARY)" if leaked else ""),
                        notes=notes, figures=figures)


def plot_active_curve(ev: Evaluation, path: Path) -> Path:
    plt = pyplot()

    k = torch.arange(1, len(ev.active_mean) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(k, ev.active_mean, label="mean")
    ax.fill_between(k, (ev.active_mean - ev.active_std).clamp_min(0), ev.active_mean + ev.active_std, alpha=0.3,
                    label="± 1 std")
    ax.set_xlabel("time step k"); ax.set_ylabel("active neurons")
    ax.set_title(f"Active neurons per step (M = {ev.info['M']}, M̂ = {ev.m_hat:.1f})")
    ax.legend()
    return save_figure(fig, path)
