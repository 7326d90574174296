"""``spikevit profile``: the operator-level profile of any registry model or checkpoint (one call of
:func:`spikevit.energy.profile` per batch, summed).

    spikevit profile --model spikformer-4-384 --json results/profile/spikformer.json
    spikevit profile --checkpoint run/model.safetensors --dataset cifar10 --data-root DATA --batches 4 --json p.json

Writes the JSON report with per-module, per-operator, spike-purity and spiking-layer tables (markdown and
CSV beside it) and a bar plot of energy per block.  Without ``--data-root`` the input is a seeded batch
of N(0, 1) images of the model's geometry (counts of MACs are exact; spike counts then describe noise).
"""
from __future__ import annotations

from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_device_arg, add_json_arg
from spikevit.validation import arg_non_negative_int, arg_positive_int


def register(sub) -> None:
    p = sub.add_parser("profile", help="operator-level profile of ops, spikes and energy of a model",
                       description=__doc__, formatter_class=HELP_FMT)
    p.add_argument("--model", default=None, help="registry model name (not needed with --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="a spikevit model file / training checkpoint to profile")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor argument (repeatable), e.g. --model-arg tmax=4")
    p.add_argument("--dataset", default="cifar10", help="dataset whose geometry (classes, channels, size) the "
                   "model is built for, and whose test split is profiled with --data-root")
    p.add_argument("--data-root", default=None, help="profile real test images from here (default: seeded noise)")
    p.add_argument("--img-size", type=arg_positive_int, default=None, help="image size (default: the dataset's)")
    p.add_argument("--batch-size", type=arg_positive_int, default=8)
    p.add_argument("--batches", type=arg_positive_int, default=1, help="number of batches profiled (summed)")
    p.add_argument("--energy-model", default="sit45nm", help="energy constants (spikevit.energy.ENERGY_MODELS)")
    p.add_argument("--max-level", type=arg_positive_int, default=None,
                   help="largest level of a graded operand (default: spikevit.energy.rules.DEFAULT_MAX_LEVEL)")
    p.add_argument("--seed", type=arg_non_negative_int, default=0)
    add_device_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_profile)


def _load(args):
    from spikevit.errors import SpikevitError
    from spikevit.train import build_model, parse_model_args
    from spikevit.train.checkpoint import load_trained_model

    extra = parse_model_args(args.model_arg)
    if args.checkpoint:
        model, run = load_trained_model(args.checkpoint, **extra)
        if args.model and args.model != run["model"]:
            raise SpikevitError(f"--model {args.model} does not match the checkpoint's model {run['model']!r}")
        return model, run
    if not args.model:
        raise SpikevitError("give --model NAME or --checkpoint FILE")
    model, run = build_model(args.model, args.dataset, args.img_size, extra, seed=args.seed)
    return model, run


def _geometry(model, run: dict, args) -> tuple[int, int]:
    from spikevit.train.data import dataset_geometry

    kw = run.get("model_kwargs", {})
    geo = dataset_geometry(run.get("dataset") or args.dataset, args.img_size)
    return int(kw.get("in_chans") or geo.in_chans or 3), int(args.img_size or kw.get("img_size") or geo.img_size)


def _block_energy(prof, energy_model: str) -> list[dict]:
    from spikevit.energy.profile import block_of

    rows: dict[str, dict] = {}
    for r in prof.by_module(energy_model):
        if not r["dense"]:
            continue                                        # a spiking layer: spikes, no products
        b = rows.setdefault(block_of(r["module"]), {"block": block_of(r["module"]), "macs": 0, "acs": 0,
                                                    "energy_J": 0.0})
        b["macs"] += r["macs"]
        b["acs"] += r["acs"]
        b["energy_J"] += r.get("energy_J", 0.0)
    n = max(prof.samples, 1)
    return [{**r, "energy_uJ_per_sample": 1e6 * r["energy_J"] / n} for r in rows.values()]


def _plot(rows: list[dict], path: Path, title: str) -> str | None:
    from spikevit.reports import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.5))
    ax.bar([r["block"] for r in rows], [r["energy_uJ_per_sample"] for r in rows], color="tab:blue")
    ax.set_ylabel("energy per sample (uJ)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    return str(save_figure(fig, path))


def cmd_profile(args) -> int:
    import torch

    from spikevit.energy import get_energy_model
    from spikevit.energy.profile import profiling
    from spikevit.energy.rules import DEFAULT_MAX_LEVEL
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device

    get_energy_model(args.energy_model)                      # unknown name: one-line error before any work
    device = pick_device(args.device)
    model, run = _load(args)
    model = model.to(device).eval()
    in_chans, size = _geometry(model, run, args)
    options = {"max_level": args.max_level or DEFAULT_MAX_LEVEL}
    accuracy = None
    if args.data_root:
        from spikevit.data import load_dataset
        from spikevit.train import build_transforms, seeded_subset
        from spikevit.train.evaluate import evaluate

        dataset = run.get("dataset") or args.dataset
        test = load_dataset(dataset, args.data_root, "test", build_transforms(dataset, False, False, size))
        test = seeded_subset(test, args.batch_size * args.batches, args.seed)
        loader = torch.utils.data.DataLoader(test, batch_size=args.batch_size, shuffle=False)
        res = evaluate(model, loader, device, max_batches=args.batches, profile=True, profile_options=options,
                       desc="profile")
        prof, accuracy = res.pop("profile"), res
        source = f"{res['samples']} {dataset} test images"
    else:
        g = torch.Generator().manual_seed(args.seed)
        with profiling(model, **options) as prof:
            for _ in range(args.batches):
                model(torch.randn(args.batch_size, in_chans, size, size, generator=g).to(device))
        source = f"{prof.samples} seeded N(0, 1) images {in_chans}x{size}x{size} (spike counts describe noise)"
    n = max(prof.samples, 1)
    em = args.energy_model
    summary = {**prof.summary(em), "energy_uJ_per_sample": 1e6 * prof.energy(em) / n, "macs_per_sample": prof.macs / n,
               "acs_per_sample": prof.acs / n, "dense_per_sample": prof.dense / n,
               "spiking_activity": prof.spiking_activity(), "model": run.get("model"), "input": source}
    if accuracy is not None:
        summary["accuracy"] = accuracy
    blocks = _block_energy(prof, em)
    out = Path(args.json) if args.json else Path(f"profile-{run.get('model', 'model')}.json")
    figure = _plot(blocks, out.with_name(out.stem + "_energy.png"),
                   f"{run.get('model')}: energy per block ({em}, {prof.samples} samples)")
    config = {"model": run.get("model"), "model_kwargs": run.get("model_kwargs"), "checkpoint": args.checkpoint,
              "dataset": args.dataset, "data_root": bool(args.data_root), "img_size": size,
              "batch_size": args.batch_size, "batches": args.batches, "energy_model": em, "seed": args.seed,
              **options}
    notes = ("One record per product the forward pass performs (module and functional calls alike). An operand "
             "is a spike (values 0 and one c > 0), graded (non-negative integer multiples of one c) or analog; "
             "a product with a spike / graded operand costs accumulates (ACs: the events processed), otherwise "
             "multiply-accumulates (MACs, the dense count). Energy = MACs e_mac + ACs e_ac (+ FLOPs e_flop) of "
             f"the {em} model; neuron updates, zero checks and memory are not in it. Counting rules: "
             "spikevit.energy.rules.")
    write_report(out, args.command_line, config, summary,
                 tables={"energy per block": blocks, "per module": prof.by_module(em),
                         "per operator": prof.by_operator(), "spike purity per block": prof.purity_summary(),
                         "spike purity": prof.purity(), "spiking layers": prof.spiking_rows()},
                 title=f"Operator-level profile of {run.get('model')}", notes=notes,
                 figures=[figure] if figure else [])
    print(f"{run.get('model')}: {prof.macs / n:,.0f} MACs and {prof.acs / n:,.0f} ACs per sample, "
          f"{summary['energy_uJ_per_sample']:.4g} uJ per sample ({em}); wrote {out}")
    return 0

