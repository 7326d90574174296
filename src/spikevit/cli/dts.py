"""``spikevit dts``: dynamic time-step spiking ViTs (train, evaluate, study)."""
from __future__ import annotations

import argparse
from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.cli.train import add_train_args, config_from_args
from spikevit.dts.params import (DTS_DEFAULTS, DTS_TRAIN_DEFAULTS, LOSSES, STUDY_TRAIN_DEFAULTS, DTSRunParams,
                                 DTSSpec, StudyParams, baseline_list, field_default, float_list, grouping_list,
                                 int_list, name_list)
from spikevit.functional.dts import default_init_steps
from spikevit.models.spikformer import GROUPINGS
from spikevit.validation import (arg_finite_float, arg_float_range, arg_non_negative_float, arg_non_negative_int,
                                 arg_positive_int, argtype)


def _study_default(name: str):
    """The default of :class:`StudyParams` field ``name`` (a ``dts study`` option default)."""
    return field_default(StudyParams, name)


def _run_default(name: str):
    """The default of :class:`DTSRunParams` field ``name`` (a ``dts train`` option default)."""
    return field_default(DTSRunParams, name)


def _add_dts_args(p: argparse.ArgumentParser, study: bool = False) -> None:
    """The DTSSpec options (defaults from :data:`DTS_DEFAULTS`; the study's from :class:`StudyParams`)."""
    d = _study_default if study else (lambda name: getattr(DTS_DEFAULTS, name))
    g = p.add_argument_group("dynamic time steps")
    g.add_argument("--arch", default=d("arch"), help="Spikformer variant from the registry (spikformer-N-D)")
    g.add_argument("--tmax", type=arg_positive_int, default=d("tmax"),
                   help="maximum time steps" + ("" if study else " (the fixed T with --fixed)"))
    g.add_argument("--init-steps", type=arg_non_negative_int, default=None,
                   help=f"initial kept steps of every gate (default: half of --tmax, at least 1, e.g. "
                        f"{default_init_steps(4)} for tmax 4; a fixed-T run keeps all)")
    g.add_argument("--min-steps", type=arg_non_negative_int, default=d("min_steps"),
                   help="steps every gated layer keeps at least")
    if not study:
        g.add_argument("--lambda-m", type=arg_non_negative_float, default=DTS_DEFAULTS.lambda_m,
                       help="mask-loss weight lambda_m (Eq. 8)")
        g.add_argument("--mask-groups", default=",".join(DTS_DEFAULTS.mask_groups),
                       help="groups in the mask loss: comma list of sps, qkv, attn, mlp; 'all' or 'none'")
    g.add_argument("--grouping", choices=sorted(GROUPINGS), default=d("grouping"),
                   help="which LIF layers form the groups: 'paper' (DTS-SNN Eq. 7: a LIF belongs to the part whose "
                        "weights produce its input; Q/K/V LIFs are 'qkv') or 'feeds' (the part of the dot product "
                        "it feeds; the earlier assignment)")
    b = p.add_argument_group("Table II baselines (losses on the same Spikformer)")
    if not study:
        b.add_argument("--loss", choices=list(LOSSES), default=DTS_DEFAULTS.loss,
                       help="'ce': cross-entropy of the step-averaged logits; 'tet': temporal efficient training "
                            "(Deng et al. 2022): (1 - lam) mean_t CE(O_t, y) + lam MSE(O, phi)")
    b.add_argument("--tet-lambda", type=arg_float_range(0.0, 1.0), default=d("tet_lambda"),
                   help="TET's lam (weight of the MSE term; the TET paper's default)")
    b.add_argument("--tet-phi", type=arg_finite_float, default=d("tet_phi"), help="TET's constant MSE target phi")
    b.add_argument("--hoyer-lambda", type=arg_non_negative_float, default=d("hoyer_lambda"),
                   help="weight of the Hoyer regulariser (Datta et al. 2022; their code's default is 1e-8): sum over "
                        "LIF layers of |z|_1^2 / |z|_2^2, z = clip(U / Vth, 0, 1) over the batch" +
                        (" (the hoyer baseline runs)" if study else "; 0 = off"))
    if not study:
        g.add_argument("--fixed", action="store_true", help="plain Spikformer at fixed T = --tmax (no DTSS gates)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spikformer argument (repeatable), e.g. --model-arg leak=0.5")


def run_params(args) -> DTSRunParams:
    """``spikevit dts train`` options -> :class:`DTSRunParams` (one option per field)."""
    from spikevit.train import parse_model_args

    spec = DTSSpec(arch=args.arch, tmax=args.tmax, dts=not args.fixed, init_steps=args.init_steps,
                   min_steps=args.min_steps, lambda_m=args.lambda_m, mask_groups=args.mask_groups,
                   model_args=parse_model_args(args.model_arg), grouping=args.grouping, loss=args.loss,
                   tet_lambda=args.tet_lambda, tet_phi=args.tet_phi, hoyer_lambda=args.hoyer_lambda)
    return DTSRunParams(args.out, spec=spec, train=config_from_args(args), dataset=args.dataset,
                        data_root=args.data_root, download=args.download, skip_bad_images=args.skip_bad_images,
                        train_subset=args.train_subset, test_subset=args.test_subset, img_size=args.img_size,
                        augment=not args.no_augment, resume=not args.no_resume, eval_batches=args.eval_batches,
                        json=args.json)


def study_params(args) -> StudyParams:
    """``spikevit dts study`` options -> :class:`StudyParams` (one option per field)."""
    from spikevit.errors import SpikevitError
    from spikevit.train import parse_model_args

    replicates = {}
    for item in args.replicate:
        label, sep, path = item.partition("=")
        if not sep or not label.strip() or not path.strip():
            raise SpikevitError(f"--replicate expects LABEL=DIR, got {item!r}")
        replicates[label.strip()] = path.strip()
    return StudyParams(args.out, arch=args.arch, tmax=args.tmax, init_steps=args.init_steps, min_steps=args.min_steps,
                       fixed_t=args.fixed_t, lambdas=args.lambdas, groupings=args.groupings, nomask=not args.no_nomask,
                       baselines=args.baselines, model_args=parse_model_args(args.model_arg), grouping=args.grouping,
                       tet_lambda=args.tet_lambda, tet_phi=args.tet_phi, hoyer_lambda=args.hoyer_lambda,
                       train=config_from_args(args), dataset=args.dataset, data_root=args.data_root,
                       download=args.download, skip_bad_images=args.skip_bad_images, train_subset=args.train_subset,
                       test_subset=args.test_subset, img_size=args.img_size, augment=not args.no_augment,
                       runs=args.runs, resume=not args.no_resume, report=not args.no_report, report_only=args.report_only,
                       eval_batches=args.eval_batches, energy_model=args.energy_model, data_seed=args.data_seed,
                       replicates=replicates, fig2_run=args.fig2_run, json=args.json)


def _train_budget(p: argparse.ArgumentParser, defaults) -> None:
    add_train_args(p, defaults)


def register(sub) -> None:
    dts = sub.add_parser("dts", help="spiking ViT with dynamic time steps (DTS-SNN)", formatter_class=HELP_FMT,
                         description="Spikformer whose LIF layers learn how many time steps each needs.")
    cmds = dts.add_subparsers(dest="command", metavar="STEP")
    cmds.required = True

    p = cmds.add_parser("train", help="train a DTS (or fixed-T) Spikformer", formatter_class=HELP_FMT,
                        description="AdamW + cosine schedule, augmentation, resumable safetensors checkpoints "
                                    "(kill and rerun to resume), torchrun DDP. Ends with an evaluation report "
                                    "(accuracy, T_l, T_avg, spiking activity, SOPs, energy). The library call: "
                                    "spikevit.dts.run(DTSRunParams(...)).")
    add_data_args(p, _run_default("dataset")); _add_dts_args(p); _train_budget(p, DTS_TRAIN_DEFAULTS)
    add_device_arg(p); add_json_arg(p, _run_default("json"))
    p.add_argument("--eval-batches", type=arg_positive_int, default=_run_default("eval_batches"),
                   help="limit the final measurement to N test batches")
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
    p.add_argument("--energy-model", default=_study_default("energy_model"))
    p.add_argument("--fig2", default=None, metavar="PNG", help="also plot LIF input histograms step 1 vs later")
    p.set_defaults(func=cmd_evaluate)

    p = cmds.add_parser("study", help="fixed-T baselines + DTS over lambda_m and mask groupings (Tables III-V)",
                        formatter_class=HELP_FMT,
                        description="Trains every run with the same budget (resumable; finished runs are "
                                    "skipped), measures them and writes one report with plots. The library call: "
                                    "spikevit.dts.run_study(StudyParams(...)).")
    add_data_args(p, _study_default("dataset")); _add_dts_args(p, study=True); _train_budget(p, STUDY_TRAIN_DEFAULTS)
    add_device_arg(p); add_json_arg(p, _study_default("json"))
    p.add_argument("--fixed-t", type=argtype(int_list, "comma list of T"), default=_study_default("fixed_t"),
                   help="T of the fixed-T baselines (comma list; '' for none)")
    p.add_argument("--lambdas", type=argtype(float_list, "comma list of lambda_m"), default=_study_default("lambdas"),
                   help="lambda_m values of the DTS runs (comma list)")
    p.add_argument("--groupings", type=argtype(grouping_list, "';'-separated groupings"), default=_study_default("groupings"),
                   help="';'-separated mask-loss groupings of the DTS runs, e.g. 'qkv+mlp;all'")
    p.add_argument("--no-nomask", action="store_true", help="skip the DTS run without mask loss")
    p.add_argument("--baselines", type=argtype(baseline_list, "METHOD:T items"), default=_study_default("baselines"),
                   help="Table II baselines as METHOD:T items, e.g. 'tet:2,hoyer:2': fixed-T Spikformers trained "
                        "with the TET loss / the Hoyer regulariser, same budget")
    p.add_argument("--runs", type=argtype(name_list, "comma list of run names"), default=_study_default("runs"),
                   help="comma list: only train/measure these runs (split a study over processes); the report "
                        "covers every finished run")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the runs already measured")
    p.add_argument("--eval-batches", type=arg_positive_int, default=_study_default("eval_batches"))
    p.add_argument("--energy-model", default=_study_default("energy_model"))
    p.add_argument("--data-seed", type=arg_non_negative_int, default=_study_default("data_seed"),
                   help="seed of the train/test subsets (default --seed): keep it fixed across seed replicates")
    p.add_argument("--replicate", action="append", default=[], metavar="LABEL=DIR",
                   help="a study directory of the same runs trained with another --seed; reported beside this "
                        "one with the spread (repeatable)")
    p.add_argument("--fig2-run", default=_study_default("fig2_run"), metavar="_run_default",
                   help="the run whose LIF inputs are plotted for Fig. 2 (default: the fixed-T run with the "
                        "largest T)")
    p.set_defaults(func=cmd_study)


def cmd_train(args) -> int:
    from spikevit.dts import run

    run(run_params(args), command=args.command_line)
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
    loader = make_loader(test_set, args.batch_size)
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
    from spikevit.dts import run_study

    run_study(study_params(args), command=args.command_line)
    return 0
