"""Continue training a spikevit model file with the package trainer (warm restart of AdamW + cosine).

    torchrun --standalone --nproc_per_node=2 benchmarks/conversion/finetune.py \
        --init runs/vit-cifar-tiny/model.safetensors --dataset cifar10 --data-root DIR \
        --epochs 5 --lr 1e-3 --out runs/vit-cifar-tiny-ft [--model-arg squeeze=sigmoid]

The same loop as ``spikevit train`` (:func:`spikevit.train.fit`: AdamW, warmup + cosine, augmentation,
resumable safetensors checkpoints, DDP under torchrun, JSON log per epoch); the model is rebuilt from
the registry description stored in ``--init`` and starts from its weights.  ``--model-arg`` overrides
constructor options that do not change parameter shapes, e.g. ``squeeze=sigmoid`` to fine-tune with the
SIT paper's range restriction before converting.
"""
from __future__ import annotations

import argparse
import os
import sys

from spikevit.cli.common import add_data_args, add_device_arg, add_json_arg
from spikevit.cli.train import add_train_args, config_from_args, data_run_info, datasets_from_args


def main(argv=None) -> int:
    from spikevit.errors import SpikevitError
    from spikevit.reports import write_report
    from spikevit.train import fit, load_trained_model, parse_model_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="spikevit model file to start from")
    ap.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    add_data_args(ap, "cifar10")
    add_train_args(ap, lr=1e-3, epochs=5)
    add_device_arg(ap)
    add_json_arg(ap)
    args = ap.parse_args(argv)
    try:
        model, run = load_trained_model(args.init, **parse_model_args(args.model_arg))
        kwargs = {**run.get("model_kwargs", {}), **parse_model_args(args.model_arg)}
        squeeze = getattr(model, "squeeze", "absent")      # SmallViT: the attention range restriction
        if squeeze is None or (isinstance(squeeze, str) and squeeze != "absent"):
            kwargs["squeeze"] = squeeze        # record it explicitly, not only through a constructor default
        run = {"model": run["model"], "model_kwargs": kwargs,
               "dataset": args.dataset, "init_from": str(args.init), **data_run_info(args)}
        config = config_from_args(args)
        train_set, test_set = datasets_from_args(args)
        res = fit(model.train(), train_set, test_set, config, out_dir=args.out, run=run, resume=not args.no_resume)
    except SpikevitError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2
    if args.json and os.environ.get("RANK", "0") == "0":
        write_report(args.json, "python benchmarks/conversion/finetune.py " + " ".join(sys.argv[1:]),
                     {**config.to_dict(), **run}, {"test": res.final, "epochs_run": len(res.history)},
                     title=f"Fine-tuning {run['model']} from {args.init}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
