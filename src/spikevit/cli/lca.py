"""``spikevit lca``: exemplar LCA decoder (extract, fit, encode, evaluate, add, run, shard).

``lca run`` and ``lca evaluate`` map one to one onto :class:`~spikevit.lca.params.LCARunParams` (same names,
defaults taken from it) and call :func:`spikevit.lca.run`; ``lca shard`` maps onto
:class:`~spikevit.lca.distributed.ShardedRun`.
"""
from __future__ import annotations

from dataclasses import fields

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.lca.distributed import SHARDABLE, ShardedRun
from spikevit.lca.encode import BACKENDS
from spikevit.lca.params import (
    DEFAULT_CACHE,  # noqa: F401  (the cache default `spikevit reproduce` shares)
    LCA_DEFAULTS,
    SELECTIONS,
    LCAParams,
    LCARunParams,
    check_tau,
)
from spikevit.lca.params import LCA_RUN_DEFAULTS as R
from spikevit.validation import arg_non_negative_float, arg_non_negative_int, arg_positive_int, argtype

arg_tau = argtype(check_tau, "time constant")


def _add_backbone_args(p):
    p.add_argument("--backbone", default=R.backbone, help="feature extractor (see `spikevit lca backbones`)")
    p.add_argument("--weights", default=R.weights, help="'default' (published weights), 'none' (random) or a "
                   "local .safetensors/.pth state dict")
    p.add_argument("--image-size", type=arg_positive_int, default=R.image_size,
                   help="override the backbone's input size")
    p.add_argument("--cache", default=R.cache, help="feature cache directory")
    p.add_argument("--batch-size", type=arg_positive_int, default=R.batch_size, help="images per backbone batch")
    p.add_argument("--limit-train", type=arg_positive_int, default=R.limit_train,
                   help="use a seeded random subset of the train split")
    p.add_argument("--limit-test", type=arg_positive_int, default=R.limit_test,
                   help="use a seeded random subset of the test split")
    p.add_argument("--workers", type=arg_non_negative_int, default=R.workers, help="data loader worker processes")


def _add_lca_args(p, backends: tuple[str, ...] | None = None):
    """The LCAParams options (defaults from :data:`LCA_DEFAULTS`) and the encoding batch."""
    p.add_argument("--lam", type=arg_non_negative_float, default=LCA_DEFAULTS.lam, help="threshold lambda")
    p.add_argument("--tau", type=arg_tau, default=LCA_DEFAULTS.tau, help="time constant tau (steps)")
    p.add_argument("--steps", type=arg_positive_int, default=LCA_DEFAULTS.steps, help="number of LCA steps K")
    p.add_argument("--signed", action="store_true", help="signed soft threshold (default: rectified, as the "
                   "authors' code: a = max(u - lam, 0))")
    p.add_argument("--threshold", default=LCA_DEFAULTS.threshold, choices=["soft", "hard"])
    choices = backends or ("auto", *BACKENDS)
    p.add_argument("--backend", default=LCA_DEFAULTS.backend, choices=choices,
                   help="LCA backend, all exact: auto picks gramian for M <= N, mixed from M >= 16,384 on CPUs "
                        "with native bfloat16, else factored")
    p.add_argument("--encode-batch", type=arg_positive_int, default=R.encode_batch, help="inputs per LCA batch")


def _add_dict_args(p):
    p.add_argument("--dictionary-size", type=arg_positive_int, default=R.dictionary_size,
                   help="number of exemplars M (default: all)")
    p.add_argument("--selection", default=R.selection, choices=SELECTIONS)
    _add_seed_arg(p)


def _add_seed_arg(p):
    p.add_argument("--seed", type=arg_non_negative_int, default=R.seed, help="exemplar choice, shallow-NN rows, probes")


def _add_decoder_args(p):
    p.add_argument("--shallow-train-size", type=arg_non_negative_int, default=R.shallow_train_size,
                   help="training codes for the shallow NN (images outside the dictionary first, then "
                        "leave-one-out coded exemplars); 0 disables it")
    p.add_argument("--probes", action="store_true", help="also report a cosine k-NN (k=10) and a logistic-"
                   "regression probe trained on all train features, for comparison")
    p.add_argument("--no-plots", action="store_true", help="no active-neuron PNG beside the report")


def register(sub) -> None:
    lca = sub.add_parser("lca", help="exemplar LCA decoder (ViT-LCA / D-SELD)", formatter_class=HELP_FMT,
                         description="Frozen backbone features as the dictionary of a one-layer LCA network; "
                                     "sparse codes decoded to classes.")
    cmds = lca.add_subparsers(dest="command", metavar="STEP")
    cmds.required = True

    p = cmds.add_parser("run", help="extract + fit + evaluate in one go", formatter_class=HELP_FMT)
    add_data_args(p, R.dataset); _add_backbone_args(p); _add_dict_args(p); _add_lca_args(p)
    add_device_arg(p); add_json_arg(p, "results/lca-run.json")
    p.add_argument("--dictionary-out", default=R.dictionary_out, help="also save the dictionary here")
    _add_decoder_args(p)
    p.set_defaults(func=cmd_run)

    p = cmds.add_parser("extract", help="extract backbone features into the resumable cache", formatter_class=HELP_FMT)
    add_data_args(p); _add_backbone_args(p); add_device_arg(p)
    p.add_argument("--split", default="both", choices=["train", "test", "both"])
    p.set_defaults(func=cmd_extract)

    p = cmds.add_parser("fit", help="build an exemplar dictionary from cached train features", formatter_class=HELP_FMT)
    add_data_args(p); _add_backbone_args(p); _add_dict_args(p); add_device_arg(p)
    p.add_argument("--out", required=True, help="dictionary file (.safetensors)")
    p.set_defaults(func=cmd_fit)

    p = cmds.add_parser("evaluate", help="decode the test split with a saved dictionary", formatter_class=HELP_FMT)
    add_data_args(p); _add_backbone_args(p); _add_lca_args(p); add_device_arg(p); add_json_arg(p, "results/lca-eval.json")
    p.add_argument("--dictionary", required=True)
    p.add_argument("--allow-test-atoms", action="store_true", help="evaluate even though the dictionary holds "
                   "atoms taken from the evaluated split (the report then says so in its first lines)")
    _add_seed_arg(p); _add_decoder_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = cmds.add_parser("encode", help="write sparse codes of a feature split (safetensors)", formatter_class=HELP_FMT)
    add_data_args(p); _add_backbone_args(p); _add_lca_args(p); add_device_arg(p)
    p.add_argument("--dictionary", required=True)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--out", required=True, help="codes file (.safetensors, sparse COO indices + values)")
    p.set_defaults(func=cmd_encode)

    p = cmds.add_parser("add", help="add exemplars (and new classes) to a saved dictionary", formatter_class=HELP_FMT)
    p.add_argument("--dictionary", required=True)
    p.add_argument("--features", required=True, help="folder of extracted features to add (a cache split folder)")
    p.add_argument("--count", type=arg_positive_int, default=None, help="add a seeded random subset of this many")
    p.add_argument("--seed", type=arg_non_negative_int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_add)

    p = cmds.add_parser("shard", help="encode + decode with a dictionary sharded over torchrun ranks",
                        formatter_class=HELP_FMT,
                        description="Run under torchrun (one process per device; gloo on CPU, NCCL on GPUs): "
                                    "torchrun --nproc-per-node 4 $(which spikevit) lca shard --dictionary D "
                                    "--features FOLDER. Each rank holds a contiguous slice of the atoms; one "
                                    "all-reduce of the (B, N) reconstruction per step.")
    p.add_argument("--dictionary", required=True, help="dictionary file; each rank reads only its columns")
    p.add_argument("--features", required=True, help="extracted feature split folder (spikevit lca extract)")
    _add_lca_args(p, backends=("auto", *SHARDABLE))
    p.add_argument("--limit", type=arg_positive_int, default=None, help="first N rows of the split only")
    add_device_arg(p); add_json_arg(p, ShardedRun.json)
    p.add_argument("--codes-out", default=None, help="also gather the codes on rank 0 and save them (small runs)")
    p.add_argument("--allow-test-atoms", action="store_true", help="evaluate even though the dictionary holds "
                   "atoms taken from the evaluated split (the report records how many)")
    p.set_defaults(func=cmd_shard)

    p = cmds.add_parser("backbones", help="list the registered backbones", formatter_class=HELP_FMT)
    p.set_defaults(func=cmd_backbones)


def lca_params(args) -> LCAParams:
    """The :class:`LCAParams` of the ``--lam --tau --steps --signed --threshold --backend`` options (the defaults
    where a sub-command has none of them)."""
    if not hasattr(args, "lam"):
        return LCA_DEFAULTS
    return LCAParams(lam=args.lam, tau=args.tau, steps=args.steps, rectify=not args.signed,
                     threshold=args.threshold, backend=args.backend)


_RUN_FIELDS = tuple(f.name for f in fields(LCARunParams) if f.name != "lca")


def run_params(args) -> LCARunParams:
    """The :class:`LCARunParams` of parsed ``spikevit lca`` options: each option fills the field of its name,
    the LCA options fill ``lca``; fields a sub-command has no option for keep their defaults."""
    given = vars(args)
    return LCARunParams(**{k: given[k] for k in _RUN_FIELDS if k in given}, lca=lca_params(args))


def _features(args, split):
    from spikevit.lca.pipeline import split_features
    return split_features(run_params(args), split)


def cmd_extract(args):
    from spikevit.lca.pipeline import extract_split
    splits = ["train", "test"] if args.split == "both" else [args.split]
    for split in splits:
        print(f"{split}: {extract_split(run_params(args), split)}")


def cmd_fit(args):
    from spikevit.lca.pipeline import fit_dictionary, split_features
    params = run_params(args)
    d = fit_dictionary(params, split_features(params, "train"))
    d.save(args.out)
    print(f"dictionary: {d.size} atoms of dimension {d.feature_dim}, {d.num_classes} classes -> {args.out}")


def cmd_run(args):
    """``lca run`` and ``lca evaluate``: options -> :class:`LCARunParams` -> :func:`spikevit.lca.run` -> files."""
    from spikevit.lca.pipeline import run, summary, write_report_and_plot

    report = run(run_params(args), command=args.command_line)
    write_report_and_plot(report, args.json, plots=not args.no_plots)
    print(summary(report.results))


cmd_evaluate = cmd_run


def cmd_encode(args):
    import torch

    from spikevit.lca.codes import save_codes
    from spikevit.lca.dictionary import Dictionary
    from spikevit.lca.encode import encode_batches
    from spikevit.runtime import pick_device

    d = Dictionary.load(args.dictionary)
    fs = _features(args, args.split)
    d.check_features(fs.features, fs.backbone)
    dev = pick_device(args.device)
    parts = [out.codes.cpu().to_sparse() for _, out in encode_batches(
        d.atoms.to(dev), fs.features, batch_size=args.encode_batch, **lca_params(args).kwargs())]
    codes = torch.cat(parts).coalesce()
    save_codes(args.out, codes, fs.labels, {"dictionary": str(args.dictionary)} | lca_params(args).kwargs())
    print(f"codes {tuple(codes.shape)}, {codes.values().numel()} non-zero -> {args.out}")


def cmd_add(args):
    from spikevit.data.features import load_features, subset_indices
    from spikevit.lca.dictionary import Dictionary

    d = Dictionary.load(args.dictionary)
    fs = load_features(args.features)
    d.check_features(fs.features, fs.backbone)
    rows = subset_indices(fs.features.shape[0], args.count, args.seed)
    before = d.size
    d.add(fs.features[rows], fs.labels[rows], fs.index[rows], class_names=fs.meta.get("classes") or None,
          dataset=fs.meta.get("dataset"), split=fs.meta.get("split"))
    d.save(args.out)
    print(f"dictionary: {before} + {rows.numel()} = {d.size} atoms, {d.num_classes} classes -> {args.out} "
          f"(added from the {fs.meta.get('dataset')} {fs.meta.get('split')} split)")


def cmd_shard(args):
    from spikevit.lca.distributed import run_sharded

    run_sharded(ShardedRun(dictionary=args.dictionary, features=args.features, lca=lca_params(args),
                           batch_size=args.encode_batch, limit=args.limit, device=args.device, json=args.json,
                           codes_out=args.codes_out, allow_test_atoms=args.allow_test_atoms),
                command=args.command_line)


def cmd_backbones(args):
    from spikevit.backbones import BACKBONES
    for name, spec in sorted(BACKBONES.items()):
        print(f"{name:20s} N={spec.feature_dim or 'pixels'}  {'offline' if spec.offline else 'download'}  "
              f"{spec.description}")
    print("(any timm model name also works when timm is installed)")
