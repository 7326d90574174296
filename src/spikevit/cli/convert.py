"""``spikevit convert``: SIT ANN-to-SNN conversion (fit-neuron, sweep, run).

    spikevit convert fit-neuron --function exp --steps 12
    spikevit convert sweep --steps 4-16 --json results/conversion/softmax_sweep.json
    spikevit convert run --model vit-cifar-tiny --checkpoint model.safetensors --dataset cifar10 \
        --data-root DIR --steps 12 --json out.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg

USER_PARAMS = str(Path.home() / ".cache" / "spikevit" / "fewspike.safetensors")


def _steps_list(text: str) -> list[int]:
    from spikevit.errors import SpikevitError

    out = []
    try:
        for part in str(text).split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise SpikevitError(f"cannot read steps {text!r}; use e.g. 12, 4-16 or 4,8,12") from None
    if not out:
        raise SpikevitError("no steps given")
    return out


def register(sub) -> None:
    conv = sub.add_parser("convert", help="SIT ANN-to-SNN conversion with spiking softmax", formatter_class=HELP_FMT,
                          description="Spiking-Softmax (SI-exp + SI-norm neurons) and SIT-conversion of "
                                      "torchvision / timm / spikevit vision transformers.")
    cmds = conv.add_subparsers(dest="command", metavar="STEP")
    cmds.required = True

    p = cmds.add_parser("fit-neuron", help="fit a few-spike neuron (T, h, d) to exp / sigmoid / silu / gelu",
                        formatter_class=HELP_FMT,
                        description="Population search with exact least-squares d, exact leaf enumeration and "
                                    "basin hopping (see spikevit.conversion.fitting). Seeded from the K or K-1 "
                                    "entry of --init-from when present. The result is merged into --out "
                                    "(kept only if it beats the stored fit).")
    p.add_argument("--function", default="exp", help="exp, sigmoid, silu or gelu")
    p.add_argument("--steps", type=int, required=True, help="time steps K")
    p.add_argument("--domain", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="fitting interval (default: exp [-1, 1], activations [-6, 6])")
    p.add_argument("--points", type=int, default=10000, help="evenly spaced fitting points")
    p.add_argument("--population", type=int, default=48)
    p.add_argument("--rounds", type=int, default=12, help="basin-hopping rounds")
    p.add_argument("--iters", type=int, default=200, help="Adam iterations per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=None, help="stop basin hopping after this many seconds")
    p.add_argument("--init-from", default="package", help="parameter file to seed from ('package': the shipped "
                   "fits, 'none': no seeding)")
    p.add_argument("--out", default=USER_PARAMS, help="parameter file to merge the fit into")
    add_json_arg(p)
    p.set_defaults(func=cmd_fit_neuron)

    p = cmds.add_parser("sweep", help="spiking-softmax error vs K on uniform logits in [-1, 1] (paper Fig. 7)",
                        formatter_class=HELP_FMT,
                        description="Rows of i.i.d. U[-1, 1] logits; error of SpikingSoftmax vs softmax per K: "
                                    "elementwise MSE, max |error|, relative RMSE, mean row L1.")
    p.add_argument("--steps", default="4-16", help="K values (shipped: 4-16)")
    p.add_argument("--row-lengths", default="8,65,197", help="softmax row lengths n")
    p.add_argument("--rows", type=int, default=2000, help="rows per row length")
    p.add_argument("--seed", type=int, default=0)
    add_json_arg(p, "results/conversion/softmax_sweep.json")
    p.set_defaults(func=cmd_sweep)

    p = cmds.add_parser("run", help="convert a trained model; layer-by-layer accuracy, spikes, energy",
                        formatter_class=HELP_FMT,
                        description="Evaluates the ANN and the model with its first 1..B attention blocks "
                                    "converted (paper Tables 2-4), counts spikes of the fully converted model, "
                                    "estimates energy (Table 5), measures the spiking-softmax error on the "
                                    "model's own attention logits and writes the error sweep.")
    p.add_argument("--model", required=True, help="registry name (with a spikevit checkpoint), "
                   "torchvision:<name> or timm:<name>")
    p.add_argument("--checkpoint", default=None, help="spikevit model/checkpoint file (registry models), or a "
                   "state dict (.safetensors, or .pth read with weights_only) for torchvision/timm models")
    add_data_args(p, "cifar10")
    p.add_argument("--steps", type=int, default=12, help="SI-exp time steps K")
    p.add_argument("--squeeze", default=None, choices=[None, "sigmoid", "tanh"], help="add a range restriction "
                   "before the spiking softmax (the model should have been fine-tuned with it)")
    p.add_argument("--activations", default="", help="also convert these activations in the converted blocks: "
                   "comma list of gelu, silu, sigmoid, or 'all'")
    p.add_argument("--activation-steps", type=int, default=None, help="K of the activation neurons (default --steps)")
    p.add_argument("--norm-steps", type=int, default=None, help="SI-norm time steps (default: real-valued fast form)")
    p.add_argument("--no-layer-by-layer", action="store_true", help="only ANN and fully converted model")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on a seeded class-balanced subset")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--energy-model", default="sit45nm", help="energy constants (spikevit.energy.ENERGY_MODELS)")
    p.add_argument("--e-mac", type=float, default=None, help="override E_MAC (joules)")
    p.add_argument("--e-ac", type=float, default=None, help="override E_AC (joules)")
    p.add_argument("--sweep-steps", default="4-16", help="K values of the error sweep ('' to skip)")
    p.add_argument("--seed", type=int, default=0)
    add_device_arg(p)
    add_json_arg(p, "results/conversion/run.json")
    p.set_defaults(func=cmd_run)


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _command_line() -> str:
    return "spikevit " + " ".join(sys.argv[1:])


def cmd_fit_neuron(args) -> int:
    import torch

    from spikevit.conversion import fit_few_spike, store_fit
    from spikevit.conversion.fitting import DEFAULT_DOMAINS, target_function
    from spikevit.conversion.params import PACKAGE_PARAMS, read_params
    from spikevit.reports import write_report

    target_function(args.function)
    domain = tuple(args.domain) if args.domain else DEFAULT_DOMAINS[args.function]
    init = None
    if args.init_from != "none":
        src = PACKAGE_PARAMS if args.init_from == "package" else Path(args.init_from)
        tensors, entries = read_params(src)
        for k in (args.steps, args.steps - 1):
            e = entries.get(f"{args.function}/{k}")
            if e is not None and tuple(e["domain"]) == domain:
                init = (tensors[f"{args.function}/{k}/T"], tensors[f"{args.function}/{k}/h"])
                break
    fit = fit_few_spike(args.function, args.steps, domain=domain, n_points=args.points, population=args.population,
                        rounds=args.rounds, iters=args.iters, seed=args.seed, init=init,
                        time_budget=args.time_budget)
    stored = store_fit(fit, args.out)
    print(f"{args.function} K={args.steps} on [{domain[0]:g}, {domain[1]:g}], {args.points} points: "
          f"RMSE {fit.rmse:.6f}, max |error| {fit.max_abs_error:.5f} ({fit.seconds:.0f} s); "
          f"{'stored in' if stored else 'not better than the fit already in'} {args.out}")
    if args.json:
        write_report(args.json, _command_line(), {**_config(args), "domain": list(domain)}, fit.to_dict(),
                     tables={"history": fit.history}, title=f"Few-spike fit: {args.function}, K = {args.steps}",
                     notes="RMSE measured by simulating the neuron (spike when v >= T) on the fitting points.")
    return 0


def _sweep_plot(rows: list[dict], png: Path, title: str) -> str | None:
    """Two panels over K: elementwise MSE (with the paper's Fig. 7 point) and relative RMSE / mean row L1."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for n, src in sorted({(r["row_length"], r.get("logits", "U[-1, 1]")) for r in rows}):
        pts = sorted((r["K"], r["mse"], r["rel_rmse"], r["mean_row_l1"]) for r in rows
                     if r["row_length"] == n and r.get("logits", "U[-1, 1]") == src)
        ks = [p[0] for p in pts]
        tag = f"n = {n}" + ("" if src == "U[-1, 1]" else f", {src} logits")
        line, = ax.semilogy(ks, [p[1] for p in pts], "o-", label=tag)
        bx.semilogy(ks, [p[2] for p in pts], "o-", color=line.get_color(), label=f"relative RMSE, {tag}")
        bx.semilogy(ks, [p[3] for p in pts], "s--", color=line.get_color(), alpha=0.6, label=f"mean row L1, {tag}")
    for a in (ax, bx):
        a.plot([12], [0.013991], "rx", ms=10, mew=2, label="paper Fig. 7, K = 12: 'MSE' 0.013991")
        a.set_xlabel("SI-exp time steps K")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("mean over elements of (spiking - softmax)^2")
    bx.set_ylabel("relative RMSE (solid), mean row L1 (dashed)")
    ax.set_title("elementwise MSE", fontsize=9)
    bx.set_title("||err||_2 / ||softmax||_2 and mean_rows sum_i |err_i|", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return str(png)


def sweep_notes(rows: list[dict] | None = None) -> str:
    """How the spiking-softmax error is measured; quotes the shipped K = 12 SI-exp RMSE and, when the
    sweep rows hold it, the measured K = 12 rel_rmse on U[-1, 1] rows (no number is hard-coded)."""
    from spikevit.conversion.params import few_spike_parameters
    fit = few_spike_parameters("exp", 12)["rmse"]
    rel = [r["rel_rmse"] for r in (rows or []) if r.get("K") == 12 and r.get("logits", "U[-1, 1]") == "U[-1, 1]"]
    rel_txt = f"rel_rmse {min(rel):.4f}-{max(rel):.4f} at K = 12 in this report" if rel else "rel_rmse at K = 12"
    return ("Error measure: rows of n logits drawn i.i.d. from U[-1, 1] (the paper's Sec. 4.2 setting; the "
            "paper does not state n); mse = mean over all elements of (SpikingSoftmax(x) - softmax(x))^2; "
            "max_abs = largest elementwise error; rel_rmse = ||spiking - exact||_2 / ||exact||_2 over all "
            "elements; mean_row_l1 = mean over rows of sum_i |spiking_i - exact_i|.  SI-norm in its "
            "real-valued fast form (Eq. 10).  Softmax values are ~1/n, so the elementwise MSE shrinks ~1/n^2 "
            "while rel_rmse and mean_row_l1 hardly depend on n.  The paper's Fig. 7 value 0.013991 (K = 12) "
            "cannot be an elementwise MSE of softmax outputs of this size (it would be an RMSE of 0.118 per "
            "value, larger than the values themselves for n >= 9); its size matches the relative measures "
            f"({rel_txt}) and the shipped SI-exp fit's RMSE ({fit:.4g} at K = 12), so the paper's 'MSE' "
            "is most likely a differently normalised error; compare it with rel_rmse.")


def cmd_sweep(args) -> int:
    from spikevit.conversion import softmax_error_sweep
    from spikevit.reports import write_report

    ks, ns = _steps_list(args.steps), _steps_list(args.row_lengths)
    rows = softmax_error_sweep(ks, ns, rows=args.rows, seed=args.seed)
    json_path = Path(args.json)
    png = _sweep_plot(rows, json_path.with_suffix(".png"), "Spiking softmax vs softmax, logits ~ U[-1, 1]")
    k12 = {r["row_length"]: r for r in rows if r["K"] == 12}
    write_report(json_path, _command_line(), _config(args), {"K12_by_row_length": k12, "paper_fig7_K12_mse": 0.013991},
                 tables={"softmax_error_vs_K": rows}, title="Spiking-softmax error vs K", notes=sweep_notes(rows),
                 figures=[png] if png else [])
    for r in rows:
        if r["K"] == 12:
            print(f"K=12, n={r['row_length']}: MSE {r['mse']:.3g}, rel RMSE {r['rel_rmse']:.4f}, "
                  f"row L1 {r['mean_row_l1']:.4f}")
    print(f"wrote {json_path}")
    return 0


def load_model_for_conversion(name: str, checkpoint: str | None, dataset: str, img_size: int | None):
    """(model, description) for ``--model``/``--checkpoint`` (registry, torchvision:NAME or timm:NAME)."""
    import torch

    from spikevit.errors import SpikevitError, require

    if name.startswith("torchvision:") or name.startswith("timm:"):
        lib, arch = name.split(":", 1)
        from spikevit.data import dataset_spec

        ncls = dataset_spec(dataset).num_classes
        if lib == "torchvision":
            import torchvision

            require(hasattr(torchvision.models, arch), f"torchvision has no model {arch!r}")
            kw = {"num_classes": ncls} if ncls else {}
            if img_size:
                kw["image_size"] = img_size
            model = getattr(torchvision.models, arch)(weights=None, **kw)
        else:
            try:
                import timm
            except ImportError:
                raise SpikevitError("timm is not installed (pip install 'spikevit[timm]')") from None
            kw = {"num_classes": ncls} if ncls else {}
            if img_size:
                kw["img_size"] = img_size
            model = timm.create_model(arch, pretrained=False, **kw)
        if checkpoint is None:
            raise SpikevitError(f"{name}: --checkpoint (trained weights) is required; random weights give "
                                "meaningless accuracies")
        if checkpoint.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(checkpoint)
        else:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        missing, unexpected = model.load_state_dict(state, strict=False)
        require(not missing and not unexpected, f"{checkpoint}: state dict does not fit {name}: missing "
                f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
        return model.eval(), {"model": name, "checkpoint": checkpoint}
    from spikevit.train import load_trained_model

    require(checkpoint is not None, f"--checkpoint is required for registry model {name!r} (train one with "
            f"`spikevit train --model {name} ...`)")
    model, run = load_trained_model(checkpoint)
    require(run.get("model") == name, f"{checkpoint} holds a {run.get('model')!r} model, not {name!r}")
    return model, {"model": name, "checkpoint": checkpoint, "run": run}


def model_attention_squeeze(model) -> str | None:
    """The range restriction a spikevit ViT applies before its softmax (``SmallViT.squeeze``), else None."""
    sq = getattr(model, "squeeze", None)
    return sq if isinstance(sq, str) and sq != "none" else None


def pre_squeeze_logit_stats(model, loader, device, max_batches: int = 1) -> dict:
    """Range of the raw attention logits ``Q K^T * scale`` entering a model's own squeeze (first batches).

    Shows how far the unrestricted logits reach beyond the SI-exp neuron's fitted range [-1, 1].
    """
    import torch

    from spikevit.conversion.converter import SpikingAttention

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


def cmd_run(args) -> int:
    import torch

    from spikevit.conversion import (SpikeCounter, attention_modules, capture_attention_logits, convert,
                                     evaluate_classifier, softmax_error, softmax_error_sweep)
    from spikevit.energy import get_energy_model
    from spikevit.energy.sit import sit_energy
    from spikevit.errors import SpikevitError
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device, seed_everything
    from spikevit.data import load_dataset
    from spikevit.train import build_transforms, seeded_subset

    seed_everything(args.seed)
    device = pick_device(args.device)
    model, desc = load_model_for_conversion(args.model, args.checkpoint, args.dataset, args.img_size)
    model = model.to(device).eval()
    own = model_attention_squeeze(model)
    if own and args.squeeze:
        raise SpikevitError(f"{args.model} already applies a {own} range restriction before its softmax (it was "
                            f"trained with it); --squeeze {args.squeeze} would add a second one: leave --squeeze out")
    desc["model_attention_squeeze"] = own
    test = load_dataset(args.dataset, args.data_root, "test", build_transforms(args.dataset, False, False, args.img_size),
                        args.download)
    test = seeded_subset(test, args.test_subset, args.seed + 1)
    loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    kw = dict(steps=args.steps, squeeze=args.squeeze, activations=args.activations or (),
              activation_steps=args.activation_steps, norm_steps=args.norm_steps)

    ann = convert(model, blocks=0, **kw)
    n_blocks = len(attention_modules(ann))
    base = evaluate_classifier(ann, loader, device, desc="ANN")
    print(f"ANN: {base['acc1']:.2f}% top-1, loss {base['loss']:.4f} on {base['samples']} images; "
          f"{n_blocks} attention blocks", flush=True)
    table = [{"blocks_converted": 0, "acc1": base["acc1"], "acc_change": 0.0, "loss": base["loss"]}]
    counts = list(range(1, n_blocks + 1)) if not args.no_layer_by_layer else [n_blocks]
    final = None
    for n in counts:
        snn = convert(model, blocks=n, **kw)
        counter = SpikeCounter(snn) if n == n_blocks else None
        if counter is not None:
            with counter:
                res = evaluate_classifier(snn, loader, device, desc=f"SNN {n}/{n_blocks}")
            final = (res, counter)
        else:
            res = evaluate_classifier(snn, loader, device, desc=f"SNN {n}/{n_blocks}")
        table.append({"blocks_converted": n, "acc1": res["acc1"], "acc_change": res["acc1"] - base["acc1"],
                      "loss": res["loss"]})
        print(f"{n}/{n_blocks} blocks converted: {res['acc1']:.2f}% ({res['acc1'] - base['acc1']:+.2f}), "
              f"loss {res['loss']:.4f}", flush=True)
    res, counter = final
    energy = get_energy_model(args.energy_model, e_mac=args.e_mac, e_ac=args.e_ac)
    e_rows, e_tot = sit_energy(counter.layers(), energy)
    logits = capture_attention_logits(ann, loader, device, max_batches=1)
    if own:
        desc["pre_squeeze_logits"] = pre_squeeze_logit_stats(ann, loader, device)
    realistic = softmax_error(logits, args.steps, squeeze=args.squeeze, norm_steps=args.norm_steps)
    realistic.update(rows=int(logits.shape[0]), row_length=int(logits.shape[1]),
                     logit_min=float(logits.min()), logit_max=float(logits.max()))
    sweep_rows, figures = [], []
    if args.sweep_steps:
        sweep_rows = softmax_error_sweep(_steps_list(args.sweep_steps), [int(logits.shape[1])], rows=2000,
                                         seed=args.seed)
        for K in _steps_list(args.sweep_steps):
            e = softmax_error(logits, K, squeeze=args.squeeze, norm_steps=args.norm_steps)
            sweep_rows.append({"row_length": int(logits.shape[1]), "logits": "model", **e})
        for r in sweep_rows:
            r.setdefault("logits", "U[-1, 1]")
        png = _sweep_plot(sweep_rows, Path(args.json).with_name(Path(args.json).stem + "_sweep.png"),
                          f"Spiking softmax vs softmax: U[-1, 1] rows and the model's attention logits, "
                          f"n = {int(logits.shape[1])}")
        figures = [png] if png else []
    summary = {"ann": base, "snn": res, "conversion_loss_points": res["acc1"] - base["acc1"],
               "attention_blocks": n_blocks, "energy": e_tot, "softmax_error_model_logits": realistic, **desc}
    table5 = [{"model": args.model, "ann_acc1": base["acc1"], "snn_acc1": res["acc1"],
               "conversion_loss": res["acc1"] - base["acc1"], "blocks": n_blocks,
               "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
               "flops_ann_G": e_tot["flops_ann"] / 1e9, "energy_ann_mJ": e_tot["energy_ann_mJ"],
               "energy_snn_mJ": e_tot["energy_snn_mJ"], "energy_change_percent": e_tot["energy_change_percent"]}]
    notes = ("Accuracy: top-1 on the test split (" + str(base["samples"]) + " images). Layer-by-layer: the first n "
             "attention blocks (module order) use the spiking softmax, the others the exact softmax. Energy "
             "(SIT Eqs. 16-19, per image): FLOPs = dense multiply-accumulates per conv/linear layer and per "
             "attention product (QK^T, AV); a layer whose input is spikes costs FLOPs x spikes/neuron "
             "accumulates (E_AC), every other layer FLOPs MACs (E_MAC). In this conversion the spiking inputs "
             "are the SI-exp spike trains feeding AV (and the few-spike activations feeding the next linear "
             "layer when --activations is given); Q, K, V and the other linear layers stay analog. "
             "Neuron-internal updates are not counted (as in the paper). " + sweep_notes(sweep_rows))
    write_report(args.json, _command_line(), _config(args), summary,
                 tables={"layer_by_layer": table, "table5": table5, "energy_per_layer": e_rows,
                         "spikes": counter.spikes(), "softmax_error_model_logits": [realistic],
                         "softmax_error_vs_K": sweep_rows},
                 title=f"SIT-conversion of {args.model} (K = {args.steps})", notes=notes, figures=figures)
    print(f"SNN (all {n_blocks} blocks, K={args.steps}): {res['acc1']:.2f}% ({res['acc1'] - base['acc1']:+.2f} "
          f"points); energy {e_tot['energy_ann_mJ']:.4f} -> {e_tot['energy_snn_mJ']:.4f} mJ/image "
          f"({e_tot['energy_change_percent']:+.1f}%); wrote {args.json}")
    return 0
