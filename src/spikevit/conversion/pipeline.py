"""The SIT-conversion pipeline as a library call: :func:`run` takes a :class:`ConversionParams`, loads the
model (:func:`~spikevit.conversion.resolve.resolve_model`), checks every input before any work, converts it
block by block at the chosen ``spiking`` level, evaluates it and returns the
:class:`~spikevit.reports.Report` (layer-by-layer table, energy from :func:`spikevit.energy.profile`,
per-block energy, spikes, spike purity, spiking-softmax error).  ``spikevit convert run`` is a thin call
into it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spikevit.conversion.params import ConversionParams
from spikevit.conversion.report import energy_plot, run_notes, sweep_plot
from spikevit.conversion.resolve import calibration_images, check_model_takes, evaluation_split, resolve_model
from spikevit.errors import SpikevitError, require
from spikevit.reports import Report
from spikevit.validation import check_output


# ----------------------------------------------------------------------------------------------------------
# pipeline
# ----------------------------------------------------------------------------------------------------------
def block_energy(ann_profile, snn_profile, energy_model) -> list[dict]:
    """Energy per block (joules per image) of the ANN and the converted model, from their profiles."""
    from spikevit.energy.profile import block_of

    em = energy_model
    rows: dict[str, dict] = {}
    for tag, prof in (("ann", ann_profile), ("snn", snn_profile)):
        n = max(prof.samples, 1)
        for r in prof.ops:
            b = _block_name(r.module, block_of)
            d = rows.setdefault(b, {"block": b, "ann_macs": 0.0, "snn_macs": 0.0, "snn_acs": 0.0})
            if tag == "ann":
                d["ann_macs"] += r.macs / n
            else:
                d["snn_macs"] += r.macs / n
                d["snn_acs"] += r.acs / n
    out = []
    for d in rows.values():
        ea = d["ann_macs"] * em.e_mac
        es = d["snn_macs"] * em.e_mac + d["snn_acs"] * em.e_ac
        out.append({**d, "energy_ann_mJ": ea * 1e3, "energy_snn_mJ": es * 1e3,
                    "change_percent": 100.0 * (es - ea) / ea if ea else 0.0})
    return out


def _block_name(module: str, block_of) -> str:
    parts = module.split(".")
    # nested stages (EdgeNeXt stages.2.blocks.1) -> stages.2.blocks.1; flat (blocks.3) -> blocks.3
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit():
            return ".".join(parts[:i + 1])
    return block_of(module)


def _profile_batches(model, loader, device, batches: int):
    from spikevit.energy.profile import profiling

    model.eval()
    with profiling(model) as prof:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x.to(device))
    return prof


@dataclass
class _Setup:
    """What :func:`run` prepares before converting: the model, its test loader, the calibration inputs."""

    net: nn.Module
    loader: torch.utils.data.DataLoader
    device: torch.device
    calibration: torch.Tensor | None
    energy: object
    desc: dict
    own_squeeze: str | None
    neurons: dict | None = None        # given spiking-neuron parameters (ConversionParams.neurons)


def _prepare(p: ConversionParams) -> _Setup:
    """Check every input (files, output path, the model on one test image) and load; no evaluation yet."""
    from spikevit.data import dataset_spec
    from spikevit.energy import get_energy_model
    from spikevit.runtime import pick_device, seed_everything

    if p.json is not None:
        check_output(p.json, "--json", inputs=[p.checkpoint, p.neurons])
    energy = get_energy_model(p.energy_model, e_mac=p.e_mac, e_ac=p.e_ac)
    spec = dataset_spec(p.dataset)
    seed_everything(p.seed)
    dev = pick_device(p.device)
    net, desc = resolve_model(p.model, p.checkpoint, num_classes=spec.num_classes, img_size=p.img_size)
    net = net.to(dev).eval()
    own = getattr(net, "squeeze", None)
    own = own if isinstance(own, str) and own != "none" else None
    if own and p.squeeze:
        raise SpikevitError(f"{p.model} already applies a {own} range restriction before its softmax (it was "
                            f"trained with it); --squeeze {p.squeeze} would add a second one: leave --squeeze out")
    desc["model_attention_squeeze"] = own
    data = {"img_size": p.img_size, "download": p.download, "skip_bad_images": p.skip_bad_images}
    test = evaluation_split(p.dataset, p.data_root, p.test_subset, p.seed, **data)
    check_model_takes(net, test[0][0].unsqueeze(0).to(dev), f"--model {p.model} on {p.dataset} test images")
    loader = torch.utils.data.DataLoader(test, batch_size=p.batch_size, shuffle=False, num_workers=p.workers)
    calibration = None
    if p.spiking != "softmax":
        calibration = calibration_images(p.dataset, p.data_root, p.calibration_samples, p.seed, **data)
    neurons = None
    if p.neurons is not None:
        from spikevit.conversion.qcfs import load_neurons
        from spikevit.validation import check_input_file

        neurons = load_neurons(check_input_file(p.neurons, "--neurons"))[0]
    return _Setup(net, loader, dev, calibration, energy, desc, own, neurons)


def _convert_kwargs(p: ConversionParams, calibration) -> dict:
    return {"spiking": p.spiking, "calibration": calibration, "coding": p.coding, "coding_steps": p.coding_steps,
            "squeeze": p.squeeze, "activations": p.activations, "activation_steps": p.activation_steps,
            "activation_fit": p.activation_fit,
            "norm_steps": p.norm_steps}


def _layer_by_layer(p: ConversionParams, s: _Setup, say) -> tuple[nn.Module, nn.Module, list[dict]]:
    """The ANN, then the first n = 1..B attention blocks converted (only n = B without ``layer_by_layer``):
    ``(ann, fully converted model, rows of blocks_converted / acc1 / acc_change / loss / samples)``."""
    from spikevit.conversion.converter import attention_modules, convert
    from spikevit.train.evaluate import evaluate

    ann = convert(s.net, p.steps, blocks=0)
    n_blocks = len(attention_modules(ann))
    base = evaluate(ann, s.loader, s.device, desc="ANN")
    say(f"ANN: {base['acc1']:.2f}% top-1, loss {base['loss']:.4f} on {base['samples']} images; "
        f"{n_blocks} attention blocks")
    rows = [{"blocks_converted": 0, "acc1": base["acc1"], "acc_change": 0.0, "loss": base["loss"],
             "samples": base["samples"]}]
    snn = None
    for n in range(1, n_blocks + 1) if p.layer_by_layer else [n_blocks]:
        snn = convert(s.net, p.steps, blocks=n, neurons=s.neurons, **_convert_kwargs(p, s.calibration))
        res = evaluate(snn, s.loader, s.device, desc=f"SNN {n}/{n_blocks}")
        rows.append({"blocks_converted": n, "acc1": res["acc1"], "acc_change": res["acc1"] - base["acc1"],
                     "loss": res["loss"], "samples": res["samples"]})
        say(f"{n}/{n_blocks} blocks converted ({p.spiking}): {res['acc1']:.2f}% "
            f"({res['acc1'] - base['acc1']:+.2f}), loss {res['loss']:.4f}")
    return ann, snn, rows


def _energy(p: ConversionParams, s: _Setup, ann: nn.Module, snn: nn.Module) -> tuple[dict, dict]:
    """Energy per image from the operator profiles of the ANN and the converted model, and the tables
    built from the converted model's profile (per-block energy, spikes, spike purity)."""
    p_ann = _profile_batches(ann, s.loader, s.device, p.energy_batches)
    p_snn = _profile_batches(snn, s.loader, s.device, p.energy_batches)
    n_ann, n_snn = max(p_ann.samples, 1), max(p_snn.samples, 1)
    e_ann, e_snn = p_ann.energy(s.energy) / n_ann, p_snn.energy(s.energy) / n_snn
    totals = {"energy_ann_mJ": e_ann * 1e3, "energy_snn_mJ": e_snn * 1e3,
              "energy_change_percent": 100.0 * (e_snn - e_ann) / e_ann if e_ann else 0.0,
              "ann_macs": p_ann.macs / n_ann, "snn_macs": p_snn.macs / n_snn, "snn_acs": p_snn.acs / n_snn,
              "images_profiled": n_snn, "e_mac_J": s.energy.e_mac, "e_ac_J": s.energy.e_ac,
              "energy_model": s.energy.name,
              "spikes_per_neuron": p_snn.spikes / p_snn.neurons if p_snn.neurons else 0.0}
    tables = {"energy_per_block": block_energy(p_ann, p_snn, s.energy), "spikes": p_snn.spiking_rows(),
              "purity_summary": p_snn.purity_summary(), "purity": p_snn.purity()}
    return totals, tables


def _softmax_errors(p: ConversionParams, s: _Setup, ann: nn.Module) -> tuple[dict, list[dict]]:
    """The spiking softmax on the model's own attention logits (one test batch) and, when a report is
    written, the error sweep over ``sweep_steps`` (U[-1, 1] rows and the model's logits)."""
    from spikevit.conversion.measure import (
        capture_attention_logits,
        softmax_error,
        softmax_error_sweep,
    )

    logits = capture_attention_logits(ann, s.loader, s.device, max_batches=1)
    n = int(logits.shape[1])
    realistic = softmax_error(logits, p.steps, squeeze=p.squeeze, norm_steps=p.norm_steps)
    realistic.update(rows=int(logits.shape[0]), row_length=n, logit_min=float(logits.min()),
                     logit_max=float(logits.max()))
    sweep = []
    if p.sweep_steps and p.json:
        sweep = [{**r, "logits": "U[-1, 1]"} for r in softmax_error_sweep(p.sweep_steps, [n], rows=2000, seed=p.seed)]
        sweep += [{"row_length": n, "logits": "model",
                   **softmax_error(logits, K, squeeze=p.squeeze, norm_steps=p.norm_steps)} for K in p.sweep_steps]
    return realistic, sweep


def run(params: ConversionParams, *, command: str | None = None, verbose: bool = True) -> Report:
    """Convert ``params.model`` and measure it on the test split of ``params.dataset``.

    Every input (numbers, names, files, the output path, the model against one test image) is checked
    before any work.  Layer by layer: the ANN, then the first 1..B attention blocks converted at level
    ``spiking`` (paper Tables 2-4); energy from the operator profile of the ANN and of the fully converted
    model on the first ``energy_batches`` test batches; the spiking neurons' thresholds are calibrated on
    ``calibration_samples`` seeded training images.  Returns the :class:`~spikevit.reports.Report` (written
    to ``params.json`` when it is set; ``command`` is recorded in it as the command that reproduces it).
    """
    require(isinstance(params, ConversionParams), f"run() takes a ConversionParams, got {type(params).__name__}")
    p = params

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    s = _prepare(p)
    ann, snn, table = _layer_by_layer(p, s, say)
    energy, energy_tables = _energy(p, s, ann, snn)
    realistic, sweep = _softmax_errors(p, s, ann)
    if s.own_squeeze:
        s.desc["pre_squeeze_logits"] = pre_squeeze_logit_stats(ann, s.loader, s.device)
    base, full = table[0], table[-1]
    n_blocks = full["blocks_converted"]
    coding = (p.coding, p.coding_steps or p.steps) if p.spiking != "softmax" else (None, None)
    results = {"ann": _scores(base), "snn": _scores(full), "conversion_loss_points": full["acc_change"],
               "spiking": p.spiking, "coding": coding[0], "coding_steps": coding[1], "steps": p.steps,
               "attention_blocks": n_blocks, "energy": energy, "softmax_error_model_logits": realistic,
               "spikes_per_neuron": energy["spikes_per_neuron"], **s.desc}
    table5 = [{"model": p.model, "spiking": p.spiking, "ann_acc1": base["acc1"], "snn_acc1": full["acc1"],
               "conversion_loss": full["acc_change"], "blocks": n_blocks,
               "params_M": sum(t.numel() for t in s.net.parameters()) / 1e6, "flops_ann_G": energy["ann_macs"] / 1e9,
               "energy_ann_mJ": energy["energy_ann_mJ"], "energy_snn_mJ": energy["energy_snn_mJ"],
               "energy_change_percent": energy["energy_change_percent"]}]
    report = Report(command or ("spikevit " + " ".join(sys.argv[1:])), p.to_dict(), results,
                    tables={"layer_by_layer": table, "table5": table5, **energy_tables,
                            "softmax_error_model_logits": [realistic], "softmax_error_vs_K": sweep},
                    title=f"SIT-conversion of {p.model} (spiking = {p.spiking}, K = {p.steps})",
                    notes=run_notes(base["samples"], p.spiking, coding[0], coding[1], energy["images_profiled"],
                                    p.calibration_samples, sweep))
    if p.json:
        report.figures = _plots(p, sweep, energy_tables["energy_per_block"], int(realistic["row_length"]))
        report.write(p.json)
    say(f"SNN (all {n_blocks} blocks, spiking={p.spiking}, K={p.steps}): {full['acc1']:.2f}% "
        f"({full['acc_change']:+.2f} points); energy {energy['energy_ann_mJ']:.4f} -> "
        f"{energy['energy_snn_mJ']:.4f} mJ/image ({energy['energy_change_percent']:+.1f}%)"
        + (f"; wrote {p.json}" if p.json else ""))
    return report


def _scores(row: dict) -> dict:
    return {"acc1": row["acc1"], "loss": row["loss"], "samples": row["samples"]}


def _plots(p: ConversionParams, sweep: list[dict], blocks: list[dict], row_length: int) -> list[str]:
    stem = Path(p.json).with_suffix("")
    figures = [sweep_plot(sweep, Path(f"{stem}_sweep.png"), "Spiking softmax vs softmax: U[-1, 1] rows and the "
                          f"model's attention logits, n = {row_length}") if sweep else None,
               energy_plot(blocks, Path(f"{stem}_energy.png"),
                           f"{p.model}: energy per block, spiking={p.spiking}, K = {p.steps}")]
    return [f for f in figures if f]

def pre_squeeze_logit_stats(model, loader, device, max_batches: int = 1) -> dict:
    """Range of the raw attention logits ``Q K^T * scale`` entering a model's own squeeze (first batches)."""
    from spikevit.conversion.attention import SpikingAttention

    seen = []
    hooks = [m.inner.squeeze.register_forward_hook(lambda mod, a, out: seen.append(a[0].detach().float().cpu()))
             for m in model.modules() if isinstance(m, SpikingAttention) and hasattr(m.inner, "squeeze")]
    try:
        with torch.no_grad():
            for i, (x, _) in enumerate(loader):
                if i >= max_batches:
                    break
                model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        return {}
    z = torch.cat([t.flatten() for t in seen])
    q = torch.quantile(z[torch.linspace(0, z.numel() - 1, min(z.numel(), 1_000_000)).long()],
                       torch.tensor([0.001, 0.5, 0.999]))
    return {"min": float(z.min()), "max": float(z.max()), "q0.001": float(q[0]), "median": float(q[1]),
            "q0.999": float(q[2]), "fraction_outside_[-1,1]": float((z.abs() > 1).float().mean()),
            "values": int(z.numel())}


__all__ = ["block_energy", "pre_squeeze_logit_stats", "resolve_model", "run"]
