"""One DTS training run end to end (``spikevit dts train``): data, training, measurement, report."""
from __future__ import annotations

import os

from spikevit.dts.metrics import measure
from spikevit.dts.params import DTSRunParams
from spikevit.dts.train import train_dts
from spikevit.errors import require
from spikevit.reports import Report
from spikevit.runtime import pick_device
from spikevit.train import build_datasets
from spikevit.train.data import make_loader

MEASURE_BATCH = 256   # the largest test batch of the final measurement


def run(params: DTSRunParams, *, command: str | None = None, verbose: bool = True) -> Report | None:
    """Train ``params.spec`` on ``params.dataset`` with ``params.train`` (resuming from ``params.out`` when it
    holds a checkpoint and ``params.resume``), then measure it on the test split: top-1, T_l per layer, T_avg,
    spiking activity, SOPs and energy (:func:`spikevit.dts.measure`).

    Returns the :class:`~spikevit.reports.Report` (written to ``params.json``, default ``<out>/report.json``):
    results ``summary`` (the measurement) and ``final_test`` (the trainer's last evaluation); tables
    ``layers`` and ``synaptic layers``; config ``params.to_dict()``.  ``command`` is recorded as the command
    that reproduces it (default: this call).  Under ``torchrun`` every process trains; only rank 0 measures,
    writes and returns the report (the others return None).
    """
    require(isinstance(params, DTSRunParams), f"run() takes a DTSRunParams, got {type(params).__name__}")
    p, config = params, params.train
    train_set, test_set = build_datasets(p.dataset, p.data_root, augment=p.augment, img_size=p.img_size,
                                         train_subset=p.train_subset, test_subset=p.test_subset, seed=config.seed,
                                         download=p.download, skip_bad_images=p.skip_bad_images)
    res = train_dts(p.spec, train_set, test_set, config, p.out, dataset=p.dataset, img_size=p.img_size,
                    extra_run=p.data_info(), resume=p.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    loader = make_loader(test_set, min(config.batch_size, MEASURE_BATCH), workers=config.workers)
    m = measure(res.model, loader, pick_device(config.device), p.eval_batches)
    report = Report(command or f"spikevit.dts.run({p!r})", p.to_dict(),
                    {"summary": m.summary(), "final_test": res.final},
                    tables={"layers": m.layer_rows(), "synaptic layers": m.synaptic_rows()},
                    title=f"DTS training: {p.spec.arch} on {p.dataset}")
    report.write(p.report_path)
    if verbose:
        s = m.summary()
        print(f"{p.spec.arch}: top-1 {s['acc1']:.2f}%  T_avg {s['T_avg']:.2f}  SA {s['SA_percent']:.2f}%  "
              f"SOPs {s['SOPs_M']:.2f} M  report {p.report_path}")
    return report
