"""``spikevit dts``: dynamic time-step spiking ViTs (train, evaluate, study)."""
from __future__ import annotations

import argparse
from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.cli.train import add_train_args, config_from_args, data_run_info, datasets_from_args
from spikevit.validation import (arg_finite_float, arg_float_range, arg_non_negative_float, arg_non_negative_int,
                                 arg_positive_int, finite_float)


def _add_dts_args(p: argparse.ArgumentParser, arch: str = "spikformer-4-384", study: bool = False) -> None:
    g = p.add_argument_group("dynamic time steps")
    g.add_argument("--arch", default=arch, help="Spikformer variant from the registry (spikformer-N-D)")
    g.add_argument("--tmax", type=arg_positive_int, default=4, help="maximum time steps (the fixed T with --fixed)")
    g.add_argument("--init-steps", type=arg_non_negative_int, default=None, help="initial kept steps (default tmax/2)")
    g.add_argument("--min-steps", type=arg_non_negative_int, default=1, help="steps every layer keeps at least")
    g.add_argument("--lambda-m", type=arg_non_negative_float, default=1e-6, help="mask-loss weight lambda_m (Eq. 8)")
    g.add_argument("--mask-groups", default="qkv,mlp", help="groups in the mask loss: comma list of sps, qkv, "
                   "attn, mlp; 'all' or 'none'")
    g.add_argument("--grouping", choices=["paper", "feeds"], default="paper",
                   help="which LIF layers form the groups: 'paper' (DTS-SNN Eq. 7: a LIF belongs to the part whose "
                        "weights produce its input; Q/K/V LIFs are 'qkv') or 'feeds' (the part of the dot product "
                        "it feeds; the earlier assignment)")
    b = p.add_argument_group("Table II baselines (losses on the same Spikformer)")
    if not study:
        b.add_argument("--loss", choices=["ce", "tet"], default="ce",
                       help="'ce': cross-entropy of the step-averaged logits; 'tet': temporal efficient training "
                            "(Deng et al. 2022): (1 - lam) mean_t CE(O_t, y) + lam MSE(O, phi)")
    b.add_argument("--tet-lambda", type=arg_float_range(0.0, 1.0), default=1e-3,
                   help="TET's lam (weight of the MSE term; the TET paper's default)")
    b.add_argument("--tet-phi", type=arg_finite_float, default=1.0, help="TET's constant MSE target phi")
    b.add_argument("--hoyer-lambda", type=arg_non_negative_float, default=1e-8 if study else 0.0,
                   help="weight of the Hoyer regulariser (Datta et al. 2022; their code's default is 1e-8): sum over "
                        "LIF layers of |z|_1^2 / |z|_2^2, z = clip(U / Vth, 0, 1) over the batch" +
                        (" (the hoyer baseline runs)" if study else "; 0 = off"))
    g.add_argument("--fixed", action="store_true", help="plain Spikformer at fixed T = --tmax (no DTSS gates)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spikformer argument (repeatable), e.g. --model-arg leak=0.5")


def _spec(args):
    from spikevit.dts import DTSSpec
    from spikevit.train import parse_model_args

    finite_float(args.tet_phi, "--tet-phi")
    return DTSSpec(args.arch, args.tmax, not args.fixed, args.init_steps, args.min_steps, args.lambda_m,
                   args.mask_groups, parse_model_args(args.model_arg), args.grouping, args.loss, args.tet_lambda,
                   args.tet_phi, args.hoyer_lambda)


def register(sub) -> None:
    dts = sub.add_parser("dts", help="spiking ViT with dynamic time steps (DTS-SNN)", formatter_class=HELP_FMT,
                         description="Spikformer whose LIF layers learn how many time steps each needs.")
    cmds = dts.add_subparsers(dest="command", metavar="STEP")
    cmds.required = True

    p = cmds.add_parser("train", help="train a DTS (or fixed-T) Spikformer", formatter_class=HELP_FMT,
                        description="AdamW + cosine schedule, augmentation, resumable safetensors checkpoints "
                                    "(kill and rerun to resume), torchrun DDP. Ends with an evaluation report "
                                    "(accuracy, T_l, T_avg, spiking activity, SOPs, energy).")
    add_data_args(p, "cifar10"); _add_dts_args(p); add_train_args(p, lr=4e-3, batch_size=256, epochs=300)
    add_device_arg(p); add_json_arg(p)
    p.add_argument("--eval-batches", type=arg_positive_int, default=None, help="limit the final measurement to N test batches")
    p.set_defaults(func=cmd_train)

    p = cmds.add_parser("evaluate", help="accuracy, T_l, T_avg, SA, SOPs and energy of a trained model",
                        formatter_class=HELP_FMT)
    add_data_args(p, "cifar10"); add_device_arg(p); add_json_arg(p, "results/dts/evaluate.json")
    p.add_argument("--checkpoint", required=True, help="model.safetensors (or last.safetensors) of a dts run")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="fixed-T Spikformer model file(s) to compare energies against (Table V)")
    p.add_argument("--batch-size", type=arg_positive_int, default=128)
    p.add_argument("--test-subset", type=arg_positive_int, default=None)
    p.add_argument("--img-size", type=arg_positive_int, default=None)
    p.add_argument("--max-batches", type=arg_positive_int, default=None)
    p.add_argument("--energy-model", default="dts45nm")
    p.add_argument("--fig2", default=None, metavar="PNG", help="also plot LIF input histograms step 1 vs later")
    p.set_defaults(func=cmd_evaluate)

    p = cmds.add_parser("study", help="fixed-T baselines + DTS over lambda_m and mask groupings (Tables III-V)",
                        formatter_class=HELP_FMT,
                        description="Trains every run with the same budget (resumable; finished runs are "
                                    "skipped), measures them and writes one report with plots.")
    add_data_args(p, "mnist"); _add_dts_args(p, "spikformer-1-64", study=True)
    add_train_args(p, lr=4e-3, batch_size=64, epochs=3)
    add_device_arg(p); add_json_arg(p, "results/dts/study.json")
    p.add_argument("--fixed-t", default="1,2,4", help="fixed-T baselines")
    p.add_argument("--lambdas", default="1e-4,1e-2", help="lambda_m values of the DTS runs")
    p.add_argument("--groupings", default="qkv+mlp;all", help="';'-separated mask-loss groupings")
    p.add_argument("--no-nomask", action="store_true", help="skip the DTS run without mask loss")
    p.add_argument("--baselines", default="", help="Table II baselines as METHOD:T items, e.g. 'tet:2,hoyer:2': "
                   "fixed-T Spikformers trained with the TET loss / the Hoyer regulariser, same budget")
    p.add_argument("--runs", default=None, help="comma list: only train/measure these runs (split a study over "
                   "processes); the report covers every finished run")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the runs already measured")
    p.add_argument("--eval-batches", type=arg_positive_int, default=None)
    p.add_argument("--energy-model", default="dts45nm")
    p.add_argument("--data-seed", type=arg_non_negative_int, default=None,
                   help="seed of the train/test subsets (default --seed): keep it fixed across seed replicates")
    p.add_argument("--replicate", action="append", default=[], metavar="LABEL=DIR",
                   help="a study directory of the same runs trained with another --seed; reported beside this "
                        "one with the spread (repeatable)")
    p.set_defaults(func=cmd_study)


def cmd_train(args) -> int:
    from spikevit.dts import measure, train_dts
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device
    from spikevit.train.data import make_loader

    spec = _spec(args)
    config = config_from_args(args)
    train_set, test_set = datasets_from_args(args)
    info = data_run_info(args)
    res = train_dts(spec, train_set, test_set, config, args.out, args.dataset, args.img_size, extra_run=info,
                    resume=not args.no_resume)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    loader = make_loader(test_set, min(args.batch_size, 256), 0, 1, False, 0, args.workers)
    m = measure(res.model, loader, pick_device(args.device), args.eval_batches)
    out_json = Path(args.json) if args.json else Path(args.out) / "report.json"
    write_report(out_json, args.command_line, {**config.to_dict(), **spec.to_dict(), **info, "out": args.out},
                 {"summary": m.summary(), "final_test": res.final},
                 tables={"layers": m.layer_rows(), "synaptic layers": m.synaptic_rows()},
                 title=f"DTS training: {spec.arch} on {args.dataset}")
    s = m.summary()
    print(f"{spec.arch}: top-1 {s['acc1']:.2f}%  T_avg {s['T_avg']:.2f}  SA {s['SA_percent']:.2f}%  "
          f"SOPs {s['SOPs_M']:.2f} M  report {out_json}")
    return 0


def cmd_evaluate(args) -> int:
    from spikevit.dts import input_histograms, measure, plot_histograms
    from spikevit.energy.dts import ann_energy, normalised_energy, snn_energy
    from spikevit.reports import write_report
    from spikevit.runtime import pick_device
    from spikevit.train import build_datasets, load_trained_model
    from spikevit.train.data import make_loader

    dev = pick_device(args.device)
    _, test_set = build_datasets(args.dataset, args.data_root, False, args.img_size, None, args.test_subset, 0,
                                 args.download)
    loader = make_loader(test_set, args.batch_size, 0, 1, False, 0, 0)
    model, run = load_trained_model(args.checkpoint, dev)
    m = measure(model, loader, dev, args.max_batches)
    energies = {"NS ViT": ann_energy(m.synaptic, m.membranes, args.energy_model)}
    for ref in args.reference:
        rm = measure(load_trained_model(ref, dev)[0], loader, dev, args.max_batches, desc=f"measure {ref}")
        energies[Path(ref).parent.name or ref] = snn_energy(rm.synaptic, rm.membranes, args.energy_model)
    name = Path(args.checkpoint).parent.name or "model"
    energies[name] = snn_energy(m.synaptic, m.membranes, args.energy_model)
    figures = []
    if args.fig2:
        figures.append(str(plot_histograms(input_histograms(model, loader, dev), args.fig2)))
    write_report(args.json, args.command_line, {"checkpoint": args.checkpoint, "run": run,
                                                      "dataset": args.dataset, "test_subset": args.test_subset},
                 {"summary": m.summary(args.energy_model)},
                 tables={"layers": m.layer_rows(), "synaptic layers": m.synaptic_rows(),
                         "energy (normalised to this model)": normalised_energy(energies, name)},
                 title=f"DTS evaluation of {args.checkpoint}", figures=figures)
    s = m.summary()
    print(f"top-1 {s['acc1']:.2f}%  T_avg {s['T_avg']:.2f}  SA {s['SA_percent']:.2f}%  SOPs {s['SOPs_M']:.2f} M  "
          f"-> {args.json}")
    return 0


def cmd_study(args) -> int:
    from spikevit.dts import run_study, study_runs
    from spikevit.errors import SpikevitError
    from spikevit.train import parse_model_args

    config = config_from_args(args)
    runs = study_runs(args.arch, args.tmax, args.init_steps, [int(t) for t in args.fixed_t.split(",") if t],
                      [float(v) for v in args.lambdas.split(",") if v], [g for g in args.groupings.split(";") if g],
                      not args.no_nomask, args.min_steps, parse_model_args(args.model_arg), args.grouping,
                      args.baselines, args.tet_lambda, finite_float(args.tet_phi, "--tet-phi"), args.hoyer_lambda)
    select = [r.strip() for r in args.runs.split(",")] if args.runs else None
    replicates = {}
    for item in args.replicate:
        label, sep, path = item.partition("=")
        if not sep or not label.strip() or not path.strip():
            raise SpikevitError(f"--replicate expects LABEL=DIR, got {item!r}")
        replicates[label.strip()] = path.strip()
    run_study(runs, args.dataset, args.data_root, config, args.out, args.json, args.train_subset, args.test_subset,
              args.img_size, select, not args.no_report, None, args.eval_batches, args.energy_model,
              command=args.command_line, train=not args.report_only,
              data_seed=args.data_seed, replicates=replicates)
    if not args.no_report:
        print(f"study report: {args.json}")
    return 0
