"""``spikevit convert``: SIT ANN-to-SNN conversion (fit-neuron, sweep, run).

    spikevit convert fit-neuron --function exp --steps 12
    spikevit convert sweep --steps 4-16 --json results/conversion/softmax_sweep.json
    spikevit convert run --model vit-cifar-tiny --checkpoint model.safetensors --dataset cifar10 \
        --data-root DIR --steps 12 --json out.json
"""
from __future__ import annotations

from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.conversion.params import ACTIVATION_FITS, CODINGS, LEVELS, SQUEEZES, ConversionParams
from spikevit.validation import arg_finite_float, arg_non_negative_int, arg_positive_float, arg_positive_int

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


def _steps_tuple(text: str) -> tuple[int, ...]:
    return tuple(_steps_list(text)) if str(text).strip() else ()


def _names(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in str(text).split(",") if a.strip())


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
    p.add_argument("--steps", type=arg_positive_int, required=True, help="time steps K")
    p.add_argument("--domain", type=arg_finite_float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="fitting interval (default: exp [-1, 1], activations [-6, 6])")
    p.add_argument("--points", type=arg_positive_int, default=10000, help="evenly spaced fitting points")
    p.add_argument("--population", type=arg_positive_int, default=48)
    p.add_argument("--rounds", type=arg_positive_int, default=12, help="basin-hopping rounds")
    p.add_argument("--iters", type=arg_positive_int, default=200, help="Adam iterations per round")
    p.add_argument("--seed", type=arg_non_negative_int, default=0)
    p.add_argument("--time-budget", type=arg_positive_float, default=None, help="stop basin hopping after this many seconds")
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
    p.add_argument("--rows", type=arg_positive_int, default=2000, help="rows per row length")
    p.add_argument("--seed", type=arg_non_negative_int, default=0)
    add_json_arg(p, "results/conversion/softmax_sweep.json")
    p.set_defaults(func=cmd_sweep)

    p = cmds.add_parser("run", help="convert a trained model; layer-by-layer accuracy, spikes, energy",
                        formatter_class=HELP_FMT,
                        description="spikevit.conversion.run(ConversionParams): evaluates the ANN and the model "
                                    "with its first 1..B attention blocks converted at the chosen --spiking level "
                                    "(paper Tables 2-4), energy from the operator profile (Table 5) with per-block "
                                    "energy, spikes and spike purity, the spiking-softmax error on the model's own "
                                    "attention logits and the error sweep. Every option is a field of "
                                    "ConversionParams, with its default. Every input is checked before any work.")
    D = ConversionParams.default
    p.add_argument("--model", required=True, help="registry name (with a spikevit model file), torchvision:<name>, "
                   "timm:<name> (with a state dict) or file:<spikevit model file>")
    p.add_argument("--checkpoint", default=D("checkpoint"), help="spikevit model/checkpoint file (registry "
                   "models), or a state dict (.safetensors, or .pth read with weights_only) for torchvision/timm")
    add_data_args(p, D("dataset"))
    p.add_argument("--steps", type=arg_positive_int, default=D("steps"), help="SI-exp time steps K (also the "
                   "default time steps of the coding neurons)")
    p.add_argument("--spiking", default=D("spiking"), choices=LEVELS,
                   help="softmax: spiking softmax only; attention: + Q, K, V out of spiking neurons; all: + every "
                   "linear layer / convolution in the converted blocks takes spike-coded input")
    p.add_argument("--coding", default=D("coding"), choices=CODINGS, help="neurons coding analog values "
                   "(attention / all): rate-coded IF pairs or binary-weighted few-spike neurons")
    p.add_argument("--coding-steps", type=arg_positive_int, default=D("coding_steps"), help="T (rate) / K "
                   "(few-spike) of the coding neurons (default --steps)")
    p.add_argument("--calibration-samples", type=arg_positive_int, default=D("calibration_samples"),
                   help="seeded training images that set the coding neurons' thresholds")
    p.add_argument("--squeeze", default=D("squeeze"), choices=SQUEEZES, help="add a range restriction "
                   "before the spiking softmax (the model should have been fine-tuned with it)")
    p.add_argument("--activations", type=_names, default=D("activations"), help="also convert these "
                   "activations in the converted blocks: comma list of gelu, silu, sigmoid, or 'all' (implied by "
                   "--spiking all)")
    p.add_argument("--activation-steps", type=arg_positive_int, default=D("activation_steps"),
                   help="K of the activation neurons (default --steps)")
    p.add_argument("--activation-fit", default=D("activation_fit"), choices=ACTIVATION_FITS,
                   help="few-spike activations fitted to the inputs each layer gets on the calibration images "
                   "(range), also with tuned thresholds (polish, slower), or as shipped")
    p.add_argument("--norm-steps", type=arg_positive_int, default=D("norm_steps"),
                   help="SI-norm time steps (default: real-valued fast form)")
    p.add_argument("--no-layer-by-layer", dest="layer_by_layer", action="store_false",
                   help="only ANN and fully converted model")
    p.add_argument("--batch-size", type=arg_positive_int, default=D("batch_size"))
    p.add_argument("--test-subset", type=arg_positive_int, default=D("test_subset"),
                   help="evaluate on a seeded class-balanced subset")
    p.add_argument("--energy-batches", type=arg_positive_int, default=D("energy_batches"),
                   help="test batches profiled for the energy tables")
    p.add_argument("--img-size", type=arg_positive_int, default=D("img_size"))
    p.add_argument("--workers", type=arg_non_negative_int, default=D("workers"))
    p.add_argument("--energy-model", default=D("energy_model"), help="energy constants "
                   "(spikevit.energy.ENERGY_MODELS)")
    p.add_argument("--e-mac", type=arg_positive_float, default=D("e_mac"), help="override E_MAC (joules)")
    p.add_argument("--e-ac", type=arg_positive_float, default=D("e_ac"), help="override E_AC (joules)")
    p.add_argument("--sweep-steps", type=_steps_tuple, default=D("sweep_steps"),
                   help="K values of the error sweep, e.g. 4-16 or 8,12 ('' to skip; default 4-16)")
    p.add_argument("--seed", type=arg_non_negative_int, default=D("seed"))
    p.add_argument("--neurons", default=D("neurons"), help="spiking-neuron parameters learned by `convert finetune` "
                   "(its neurons.safetensors): used instead of calibrated thresholds")
    add_device_arg(p)
    add_json_arg(p, "results/conversion/run.json")
    p.set_defaults(func=cmd_run)
    _register_finetune(cmds)


def _register_finetune(cmds) -> None:
    """``spikevit convert finetune``: one option per field of :class:`spikevit.conversion.qcfs.FinetuneParams`."""
    from spikevit.conversion.qcfs import FinetuneParams

    D = FinetuneParams.default
    p = cmds.add_parser("finetune", help="quantisation-aware (QCFS) fine-tuning before a rate-coded conversion",
                        formatter_class=HELP_FMT,
                        description="spikevit.conversion.qcfs.finetune_run(FinetuneParams): fine-tunes the model "
                                    "with the rate-coded neurons' quantisers (learnable thresholds) in place, writes "
                                    "<out>/model.safetensors and <out>/neurons.safetensors; measure the spiking model "
                                    "with `spikevit convert run --checkpoint <out>/model.safetensors --neurons "
                                    "<out>/neurons.safetensors` at the same --steps / --spiking.")
    p.add_argument("--model", required=True, help="as for `convert run`")
    p.add_argument("--checkpoint", default=D("checkpoint"), help="as for `convert run`")
    add_data_args(p, D("dataset"))
    p.add_argument("--steps", type=arg_positive_int, default=D("steps"), help="SI-exp K and T of the rate code")
    p.add_argument("--spiking", default=D("spiking"), choices=("attention", "all"))
    p.add_argument("--coding-steps", type=arg_positive_int, default=D("coding_steps"), help="T (default --steps)")
    p.add_argument("--train-images", type=arg_positive_int, default=D("train_images"),
                   help="seeded augmented training images of the one pass")
    p.add_argument("--batch-size", type=arg_positive_int, default=D("batch_size"))
    p.add_argument("--lr", type=arg_positive_float, default=D("lr"))
    p.add_argument("--min-lr", type=arg_positive_float, default=D("min_lr"), help="default --lr / 100")
    p.add_argument("--warmup-epochs", type=arg_finite_float, default=D("warmup_epochs"))
    p.add_argument("--weight-decay", type=arg_finite_float, default=D("weight_decay"))
    p.add_argument("--label-smoothing", type=arg_finite_float, default=D("label_smoothing"))
    p.add_argument("--clip-grad", type=arg_positive_float, default=D("clip_grad"))
    p.add_argument("--theta-lr-scale", type=arg_positive_float, default=D("theta_lr_scale"),
                   help="the thresholds learn this many times faster")
    p.add_argument("--calibration-samples", type=arg_positive_int, default=D("calibration_samples"))
    p.add_argument("--img-size", type=arg_positive_int, default=D("img_size"))
    p.add_argument("--workers", type=arg_non_negative_int, default=D("workers"))
    p.add_argument("--seed", type=arg_non_negative_int, default=D("seed"))
    add_device_arg(p)
    p.add_argument("--out", default=D("out"), help="folder for model.safetensors and neurons.safetensors")
    add_json_arg(p)
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    from dataclasses import fields

    from spikevit.conversion.qcfs import FinetuneParams, finetune_run

    finetune_run(FinetuneParams(**{f.name: getattr(args, f.name) for f in fields(FinetuneParams)}),
                 command=args.command_line)
    return 0


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def cmd_fit_neuron(args) -> int:

    from spikevit.conversion import fit_few_spike, store_fit
    from spikevit.conversion.fitting import DEFAULT_DOMAINS, target_function
    from spikevit.conversion.params import PACKAGE_PARAMS, read_params
    from spikevit.reports import write_report
    from spikevit.validation import check_output

    target_function(args.function)
    check_output(args.out, "--out")
    check_output(args.json, "--json", inputs=[args.out])
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
        write_report(args.json, args.command_line, {**_config(args), "domain": list(domain)}, fit.to_dict(),
                     tables={"history": fit.history}, title=f"Few-spike fit: {args.function}, K = {args.steps}",
                     notes="RMSE measured by simulating the neuron (spike when v >= T) on the fitting points.")
    return 0


def cmd_sweep(args) -> int:
    from spikevit.conversion import softmax_error_sweep
    from spikevit.conversion.report import sweep_notes, sweep_plot
    from spikevit.reports import write_report
    from spikevit.validation import check_output

    check_output(args.json, "--json")
    ks, ns = _steps_list(args.steps), _steps_list(args.row_lengths)
    rows = softmax_error_sweep(ks, ns, rows=args.rows, seed=args.seed)
    json_path = Path(args.json)
    png = sweep_plot(rows, json_path.with_suffix(".png"), "Spiking softmax vs softmax, logits ~ U[-1, 1]")
    k12 = {r["row_length"]: r for r in rows if r["K"] == 12}
    write_report(json_path, args.command_line, _config(args), {"K12_by_row_length": k12, "paper_fig7_K12_mse": 0.013991},
                 tables={"softmax_error_vs_K": rows}, title="Spiking-softmax error vs K", notes=sweep_notes(rows),
                 figures=[png] if png else [])
    for r in rows:
        if r["K"] == 12:
            print(f"K=12, n={r['row_length']}: MSE {r['mse']:.3g}, rel RMSE {r['rel_rmse']:.4f}, "
                  f"row L1 {r['mean_row_l1']:.4f}")
    print(f"wrote {json_path}")
    return 0


def run_params(args) -> ConversionParams:
    """The :class:`ConversionParams` of a parsed ``spikevit convert run`` (one field per option)."""
    from dataclasses import fields

    return ConversionParams(**{f.name: getattr(args, f.name) for f in fields(ConversionParams)})


def cmd_run(args) -> int:
    from spikevit.conversion.pipeline import run

    run(run_params(args), command=args.command_line)
    return 0
