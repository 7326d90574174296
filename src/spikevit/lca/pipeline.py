"""The exemplar-LCA job: features -> dictionary -> codes -> decoders, as a library call.

:func:`run` takes an :class:`~spikevit.lca.params.LCARunParams` (what ``spikevit lca run`` / ``lca evaluate``
parse into) and returns a :class:`~spikevit.reports.Report`; :func:`evaluate` is its measuring core (decoders,
sparsity, workload, timings) for a dictionary and feature splits already in memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from spikevit.data.features import FeatureSet
from spikevit.energy import lca_workload
from spikevit.errors import SpikevitError
from spikevit.lca.decoders import ShallowDecoder, class_sums, max_activation
from spikevit.lca.dictionary import Dictionary
from spikevit.lca.encode import choose_backend, encode_batches
from spikevit.lca.params import LCA_DEFAULTS, LCA_RUN_DEFAULTS, LCAParams, LCARunParams
from spikevit.reports import Report, pyplot, save_figure
from spikevit.runtime import pick_device, synchronize
from spikevit.validation import check_input_file, check_output


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

    def results(self) -> dict:
        """The headline numbers a report records (accuracies, M_hat, workload, timings, the info fields)."""
        return {"accuracy": self.accuracy, "probes": self.probes, "M_hat": self.m_hat,
                "M_hat_percent": 100 * self.m_hat / self.info["M"], "silent_fraction": self.silent_fraction,
                "timing_ms_per_sample": self.timing_ms, "workload": self.workload,
                "active_per_step_mean": self.active_mean, "active_per_step_std": self.active_std, **self.info}

    def summary(self) -> str:
        return summary(self.results())


def summary(results: dict) -> str:
    """Three lines on an evaluation's results (:meth:`Evaluation.results`, or a report's ``results``)."""
    acc = ", ".join(f"{k} {v:.2f}%" for k, v in results["accuracy"].items())
    t = ", ".join(f"{k} {v:.3g} ms" for k, v in results["timing_ms_per_sample"].items())
    if results.get("probes"):
        acc += "; probes: " + ", ".join(f"{k} {v:.2f}%" for k, v in results["probes"].items())
    warn = results.get("test_atoms_in_dictionary", 0)
    head = (f"WARNING: {warn} dictionary atom(s) come from the evaluated {results.get('test_split')} split "
            "(--allow-test-atoms): the accuracy below is not a test accuracy\n") if warn else ""
    return (f"{head}top-1: {acc}\nM_hat = {results['M_hat']:.1f} active neurons/step "
            f"({results['M_hat_percent']:.3f}% of M = {results['M']}); per sample: {t}")


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


def evaluate(dictionary: Dictionary, test: FeatureSet, train: FeatureSet | None = None,
             lca: LCAParams = LCA_DEFAULTS, *, batch_size: int = LCA_RUN_DEFAULTS.encode_batch, device=None,
             shallow_train_size: int = LCA_RUN_DEFAULTS.shallow_train_size, seed: int = LCA_RUN_DEFAULTS.seed,
             extra_shallow: dict | None = None, allow_test_atoms: bool = False, shallow_fit: dict | None = None,
             **lca_changes) -> Evaluation:
    """Encode ``test`` (features (B, N)) with the dictionary (N, M) and decode it three ways.

    ``lca``: the dynamics; keyword arguments named like its fields (``lam=0.5``) change single settings.
    ``train``: training features for the shallow NN (``shallow_train_size`` codes; None or 0: no shallow NN).
    ``extra_shallow`` optionally maps accuracy keys to factories
    ``f(num_atoms, num_classes, atom_labels) -> decoder`` (``fit(codes, labels)``
    / ``predict(codes)``), fitted on the same training codes as the shallow NN.
    A test split that contributed atoms is refused unless ``allow_test_atoms``
    (then ``info["test_atoms_in_dictionary"]`` counts them).  ``shallow_fit``:
    keyword arguments of :meth:`ShallowDecoder.fit` (e.g. mini-batch training).
    """
    lca = replace(lca, **lca_changes) if lca_changes else lca
    steps, backend = lca.steps, lca.backend
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
    kw = lca.kwargs()
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


def evaluation_report(ev: Evaluation, *, command: str, config: dict) -> Report:
    """The :class:`Report` of an evaluation: results, the accuracy / workload / timing / active-neuron tables."""
    acc_rows = [{"decoder": k, "top1_%": v} for k, v in ev.accuracy.items()]
    acc_rows += [{"decoder": f"probe: {k}", "top1_%": v} for k, v in ev.probes.items()]
    active_rows = [{"step": k + 1, "active_mean": float(m), "active_std": float(s)}
                   for k, (m, s) in enumerate(zip(ev.active_mean, ev.active_std))]
    timing_rows = [{"stage": k, "ms_per_sample": v} for k, v in ev.timing_ms.items()]
    leaked = ev.info.get("test_atoms_in_dictionary", 0)
    notes = (f"WARNING: {leaked} dictionary atom(s) come from the evaluated split ({ev.info.get('test_split')}); "
             "run with --allow-test-atoms. These accuracies measure memorisation of those images, not "
             "generalisation." if leaked else "")
    return Report(command, config, ev.results(),
                  {"accuracy": acc_rows, "workload": ev.workload, "timing": timing_rows,
                   "active neurons per step": active_rows},
                  title="Exemplar LCA decoder" + (" (TEST IMAGES IN THE DICTIONARY)" if leaked else ""), notes=notes)


def write_report_and_plot(report: Report, json_path, *, plots: bool = True) -> Path:
    """Write the report (JSON + markdown + CSV tables) and, with ``plots``, the Fig. 7-style active-neuron curve
    as ``<stem>-active.png`` beside it."""
    json_path = Path(json_path)
    if plots:
        png = json_path.with_suffix("").with_name(json_path.stem + "-active.png")
        report.figures = [str(plot_active_curve(report.results, png))]
    return report.write(json_path)


def plot_active_curve(results: dict, path: Path) -> Path:
    """Mean +- std active neurons per step of an evaluation's ``results`` -> PNG at ``path``."""
    plt = pyplot()

    mean = torch.as_tensor(results["active_per_step_mean"], dtype=torch.float32)
    std = torch.as_tensor(results["active_per_step_std"], dtype=torch.float32)
    k = torch.arange(1, len(mean) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(k, mean, label="mean")
    ax.fill_between(k, (mean - std).clamp_min(0), mean + std, alpha=0.3, label="± 1 std")
    ax.set_xlabel("time step k"); ax.set_ylabel("active neurons")
    ax.set_title(f"Active neurons per step (M = {results['M']}, M̂ = {results['M_hat']:.1f})")
    ax.legend()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the whole job


def extract_split(params: LCARunParams, split: str) -> Path:
    """Extract (resuming) the backbone features of ``split`` into the cache; return the split's folder."""
    from spikevit.data.features import extract_features

    limit = params.limit_train if split == "train" else params.limit_test
    return extract_features(params.dataset, params.data_root, split, params.backbone, params.cache,
                            weights=params.weights, batch_size=params.batch_size, limit=limit, device=params.device,
                            num_workers=params.workers, image_size=params.image_size, download=params.download,
                            skip_bad_images=params.skip_bad_images)


def split_features(params: LCARunParams, split: str) -> FeatureSet:
    """Features of ``split``: from the cache when complete (a ``limit`` subset cut from a complete full-split
    extraction: the same seeded rows, no recomputation), else extracted (resuming)."""
    from spikevit.data.features import cached_features, load_features

    limit = params.limit_train if split == "train" else params.limit_test
    fs = cached_features(params.cache, params.dataset, params.backbone, split, weights=params.weights, limit=limit,
                         image_size=params.image_size, incomplete="skip")
    return fs if fs is not None else load_features(extract_split(params, split))


def fit_dictionary(params: LCARunParams, train: FeatureSet) -> Dictionary:
    """The exemplar dictionary of ``params`` (size, selection, seed) from the training features."""
    return Dictionary.from_features(train.features, train.labels, params.dictionary_size,
                                    selection=params.selection, seed=params.seed, backbone=train.backbone,
                                    dataset=params.dataset, class_names=train.meta.get("classes", []),
                                    split="train", index=train.index)


def run(params: LCARunParams = LCA_RUN_DEFAULTS, *, command: str | None = None) -> Report:
    """Run one exemplar-LCA job and return its report (nothing is written unless ``params.dictionary_out``).

    Without ``params.dictionary``: features of both splits (cached or extracted), a dictionary fitted on the
    train split, the test split encoded and decoded (``spikevit lca run``).  With it: that saved dictionary is
    checked against the test features and its provenance (a split that gave atoms is refused unless
    ``allow_test_atoms``) before anything is encoded (``spikevit lca evaluate``).  ``command``: the command
    line recorded in the report (default: the ``spikevit lca`` command equivalent to ``params``).
    """
    if params.dictionary is not None:
        dictionary = Dictionary.load(check_input_file(params.dictionary, "dictionary"))
        test = split_features(params, "test")
        dictionary.check_features(test.features, test.backbone)
        check_evaluation_split(dictionary, test, params.allow_test_atoms)      # before any encoding
        train = split_features(params, "train") if params.shallow_train_size or params.probes else None
    else:
        check_output(params.dictionary_out, "dictionary_out")
        train, test = split_features(params, "train"), split_features(params, "test")
        dictionary = fit_dictionary(params, train)
        if params.dictionary_out is not None:
            dictionary.save(params.dictionary_out)
    ev = evaluate(dictionary, test, train, params.lca, batch_size=params.encode_batch, device=params.device,
                  shallow_train_size=params.shallow_train_size, seed=params.seed,
                  allow_test_atoms=params.allow_test_atoms)
    if params.probes:
        from spikevit.lca.baselines import knn_probe, logistic_probe
        ev.probes = {"knn_k10": knn_probe(train, test, device=pick_device(params.device)),
                     "logistic_regression": logistic_probe(train, test, seed=params.seed)}
    config = params.config()
    if params.lca.backend == "auto":  # record what "auto" resolved to on this machine
        config["backend_resolved"] = choose_backend(dictionary.feature_dim, dictionary.size, pick_device(params.device))
    return evaluation_report(ev, command=command or command_line(params), config=config)


def command_line(params: LCARunParams) -> str:
    """The ``spikevit lca run`` (or, with a saved dictionary, ``lca evaluate``) command equivalent to ``params``:
    ``--dataset`` and every setting that differs from its default."""
    import shlex

    words = ["spikevit", "lca", "evaluate" if params.dictionary is not None else "run", "--dataset", params.dataset]
    changed = {f.name: getattr(params, f.name) for f in fields(params)
               if f.name not in ("dataset", "lca") and getattr(params, f.name) != getattr(LCA_RUN_DEFAULTS, f.name)}
    changed |= {f: v for f, v in params.lca.kwargs().items() if f != "rectify" and v != getattr(LCA_DEFAULTS, f)}
    for name, value in changed.items():
        words += ["--" + name.replace("_", "-")] + ([] if value is True else [str(value)])
    if params.lca.rectify != LCA_DEFAULTS.rectify:
        words.append("--signed")
    return shlex.join(words)
