"""``spikevit train``: train any registry model on a dataset (AdamW, cosine schedule, resumable, DDP).

    spikevit train --model NAME --dataset cifar10 --data-root DIR --epochs 100 --out runs/NAME
    torchrun --nproc_per_node=2 $(which spikevit) train ...   (DistributedDataParallel, same flags)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.validation import (arg_float_range, arg_non_negative_float, arg_non_negative_int, arg_positive_float,
                                 arg_positive_int)


def add_train_args(p: argparse.ArgumentParser, defaults=None, out_required: bool = True) -> None:
    """Optimisation / data flags shared by ``spikevit train`` and ``spikevit dts train``; every optimisation
    default is read from ``defaults`` (a :class:`~spikevit.train.TrainConfig`; default: ``TrainConfig()``)."""
    from spikevit.train import TrainConfig

    D = defaults if defaults is not None else TrainConfig()
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=arg_positive_int, default=D.epochs)
    g.add_argument("--batch-size", type=arg_positive_int, default=D.batch_size, help="GLOBAL batch (split over DDP processes)")
    g.add_argument("--lr", type=arg_positive_float, default=D.lr, help="peak AdamW learning rate")
    g.add_argument("--min-lr", type=arg_non_negative_float, default=D.min_lr, help="learning rate at the end of the "
                   "cosine decay (lowered to --lr when --lr is smaller)")
    g.add_argument("--warmup-epochs", type=arg_non_negative_float, default=D.warmup_epochs,
                   help="linear warmup length (epochs, may be fractional)")
    g.add_argument("--weight-decay", type=arg_non_negative_float, default=D.weight_decay, help="AdamW decoupled "
                   "weight decay (>= 2-D weights only)")
    g.add_argument("--label-smoothing", type=arg_float_range(0.0, 1.0), default=D.label_smoothing)
    g.add_argument("--clip-grad", type=arg_positive_float, default=D.clip_grad, help="clip the gradient norm to this value")
    g.add_argument("--bf16", action="store_true", default=D.bf16, help="bfloat16 autocast for forward and loss")
    g.add_argument("--seed", type=arg_non_negative_int, default=D.seed)
    g.add_argument("--eval-every", type=arg_positive_int, default=D.eval_every,
                   help="evaluate every N epochs (and after the last)")
    d = p.add_argument_group("data")
    d.add_argument("--workers", type=arg_non_negative_int, default=D.workers, help="data loader worker processes per training process")
    d.add_argument("--train-subset", type=arg_positive_int, default=None, help="train on a seeded class-balanced subset")
    d.add_argument("--test-subset", type=arg_positive_int, default=None, help="evaluate on a seeded class-balanced subset")
    d.add_argument("--img-size", type=arg_positive_int, default=None, help="override the dataset's native image size")
    d.add_argument("--no-augment", action="store_true", help="disable training augmentation")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=out_required, default=None,
                   help="run directory: checkpoints, log.json, model.safetensors")
    p.set_defaults(out_kind="folder")
    o.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint "
                   "(it is overwritten)")


def config_from_args(args):
    from spikevit.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=min(args.min_lr, args.lr),
                       warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
                       label_smoothing=args.label_smoothing, clip_grad=args.clip_grad, bf16=args.bf16,
                       seed=args.seed, eval_every=args.eval_every, workers=args.workers, device=args.device)


def datasets_from_args(args):
    from spikevit.train import build_datasets

    return build_datasets(args.dataset, args.data_root, augment=not args.no_augment, img_size=args.img_size,
                          train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
                          download=args.download, skip_bad_images=args.skip_bad_images)


def data_run_info(args) -> dict:
    """Data settings stored with a run (a resumed run must use the same ones)."""
    return {"dataset": args.dataset, "train_subset": args.train_subset, "test_subset": args.test_subset,
            "img_size": args.img_size, "augment": not args.no_augment}


def register(sub) -> None:
    p = sub.add_parser("train", help="train any registry model (AdamW, cosine, resumable, torchrun DDP)",
                       formatter_class=HELP_FMT,
                       description="Supervised training of a model from the registry (spikevit.models). "
                                   "Kill and rerun the same command to resume; run under torchrun for "
                                   "DistributedDataParallel (gloo on CPU, NCCL on CUDA).")
    p.add_argument("--model", default=None, help="registry name (see --list-models)")
    p.add_argument("--list-models", action="store_true", help="print the registered models and exit")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor argument (repeatable), e.g. --model-arg depth=2")
    add_data_args(p, "cifar10")
    add_train_args(p, out_required=False)         # TrainConfig's defaults (spikevit.train.fit's own)
    add_device_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from spikevit.errors import require
    from spikevit.models import list_models
    from spikevit.reports import write_report
    from spikevit.train import build_model, fit, parse_model_args

    if args.list_models:
        print("\n".join(list_models()))
        return 0
    require(args.model is not None, "--model is required (see --list-models)")
    require(args.out is not None, "--out is required (the run directory)")
    config = config_from_args(args)
    model, run = build_model(args.model, args.dataset, args.img_size, parse_model_args(args.model_arg),
                             seed=config.seed)
    run.update(data_run_info(args))
    train_set, test_set = datasets_from_args(args)
    res = fit(model, train_set, test_set, config, out_dir=args.out, run=run, resume=not args.no_resume)
    if args.json and _is_main():
        write_report(args.json, args.command_line, {**config.to_dict(), **run, "out": str(Path(args.out))},
                     {"test": res.final, "epochs_run": len(res.history), "resumed_from_epoch": res.resumed_from},
                     tables={"epochs": [_flat(e) for e in res.history]}, title=f"Training {args.model}")
    return 0


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _flat(entry: dict) -> dict:
    row = {"epoch": entry["epoch"], "lr": entry["lr"]}
    row.update({f"train_{k}": v for k, v in entry.get("train", {}).items()})
    row.update({f"test_{k}": v for k, v in entry.get("test", {}).items()})
    for k, v in entry.get("metrics", {}).items():
        if isinstance(v, (int, float)):
            row[k] = v
    return row
