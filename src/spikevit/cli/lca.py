"""``spikevit lca``: exemplar LCA decoder (extract, fit, encode, evaluate, add, run)."""
from __future__ import annotations

from pathlib import Path

from spikevit.cli.common import HELP_FMT, add_data_args, add_device_arg, add_json_arg
from spikevit.lca.distributed import SHARDABLE, ShardedRun
from spikevit.lca.encode import BACKENDS
from spikevit.lca.params import LCA_DEFAULTS, LCAParams, check_tau
from spikevit.validation import (
    arg_non_negative_float,
    arg_non_negative_int,
    arg_positive_int,
    argtype,
)

DEFAULT_CACHE = str(Path.home() / ".cache" / "spikevit" / "features")


arg_tau = argtype(check_tau, "time constant")


def _add_backbone_args(p):
    p.add_argument("--backbone", default="pixels", help="feature extractor (see `spikevit lca backbones`)")
    p.add_argument("--weights", default="default", help="'default' (published weights), 'none' (random) or a "
                   "local .safetensors/.pth state dict")
    p.add_argument("--image-size", type=arg_positive_int, default=None, help="override the backbone's input size")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="feature cache directory")
    p.add_argument("--batch-size", type=arg_positive_int, default=64, help="images per backbone batch")
    p.add_argument("--limit-train", type=arg_positive_int, default=None, help="use a seeded random subset of the train split")
    p.add_argument("--limit-test", type=arg_positive_int, default=None, help="use a seeded random subset of the test split")
    p.add_argument("--workers", type=arg_non_negative_int, default=0, help="data loader worker processes")


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
    p.add_argument("--encode-batch", type=arg_positive_int, default=256, help="inputs per LCA batch")


def _add_dict_args(p):
    p.add_argument("--dictionary-size", type=arg_positive_int, default=None, help="number of exemplars M (default: all)")
    p.add_argument("--selection", default="random", choices=["random", "balanced"])
    p.add_argument("--seed", type=arg_non_negative_int, default=0)


def register(sub) -> None:
    lca = sub.add_parser("lca", help="exemplar LCA decoder (ViT-LCA / D-SELD)", formatter_class=HELP_FMT,
                         description="Frozen backbone features as the dictionary of a one-layer LCA network; "
                                     "sparse codes decoded to classes.")
    cmds = lca.add_subparsers(dest="command", metavar="STEP")
    cmds.required = True

    p = cmds.add_parser("run", help="extract + fit + evaluate in one go", formatter_class=HELP_FMT)
    add_data_args(p, "digits"); _add_backbone_args(p); _add_dict_args(p); _add_lca_args(p)
    add_device_arg(p); add_json_arg(p, "results/lca-run.json")
    p.add_argument("--dictionary-out", default=None, help="also save the dictionary here")
    p.add_argument("--shallow-train-size", type=arg_non_negative_int, default=5000, help="training codes for the "
                   "shallow NN (images outside the dictionary first, then leave-one-out coded exemplars); 0 disables it")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--probes", action="store_true", help="also report a cosine k-NN (k=10) and a logistic-"
                   "regression probe trained on all train features, for comparison")
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
    p.add_argument("--shallow-train-size", type=arg_non_negative_int, default=5000)
    p.add_argument("--allow-test-atoms", action="store_true", help="evaluate even though the dictionary holds "
                   "atoms taken from the evaluated split (the report then says so in its first lines)")
    p.add_argument("--seed", type=arg_non_negative_int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--probes", action="store_true", help="also report k-NN and logistic-regression probes")
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


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _extract(args, split):
    from spikevit.data.features import extract_features

    limit = args.limit_train if split == "train" else args.limit_test
    return extract_features(args.dataset, args.data_root, split, args.backbone, args.cache, weights=args.weights,
                            batch_size=args.batch_size, limit=limit, device=args.device,
                            num_workers=args.workers, image_size=args.image_size, download=args.download,
                            skip_bad_images=args.skip_bad_images)


def _features(args, split):
    """Features of ``split``: from the cache when complete (a --limit subset cut from a complete full-split
    extraction: the same seeded rows, no recomputation), else extracted (resuming)."""
    from spikevit.data.features import cached_features, load_features

    limit = args.limit_train if split == "train" else args.limit_test
    fs = cached_features(args.cache, args.dataset, args.backbone, split, weights=args.weights, limit=limit,
                         image_size=args.image_size, incomplete="skip")
    return fs if fs is not None else load_features(_extract(args, split))


def lca_params(args) -> LCAParams:
    """The :class:`LCAParams` of the ``--lam --tau --steps --signed --threshold --backend`` options."""
    return LCAParams(lam=args.lam, tau=args.tau, steps=args.steps, rectify=not args.signed,
                     threshold=args.threshold, backend=args.backend)



def cmd_extract(args):
    splits = ["train", "test"] if args.split == "both" else [args.split]
    for split in splits:
        print(f"{split}: {_extract(args, split)}")


def _dictionary_from(args, train):
    from spikevit.lca.dictionary import Dictionary
    return Dictionary.from_features(train.features, train.labels, args.dictionary_size, selection=args.selection,
                                    seed=args.seed, backbone=train.backbone, dataset=args.dataset,
                                    class_names=train.meta.get("classes", []), split="train", index=train.index)


def cmd_fit(args):
    d = _dictionary_from(args, _features(args, "train"))
    d.save(args.out)
    print(f"dictionary: {d.size} atoms of dimension {d.feature_dim}, {d.num_classes} classes -> {args.out}")


def _evaluate_and_report(args, dictionary, train, test):
    from spikevit.lca.pipeline import evaluate, write_evaluation

    result = evaluate(dictionary, test, train, **lca_params(args).kwargs(), batch_size=args.encode_batch,
                      device=args.device, shallow_train_size=args.shallow_train_size, seed=args.seed,
                      allow_test_atoms=getattr(args, "allow_test_atoms", False))
    if getattr(args, "probes", False):
        from spikevit.lca.baselines import knn_probe, logistic_probe
        from spikevit.runtime import pick_device
        train = train if train is not None else _features(args, "train")
        result.probes = {"knn_k10": knn_probe(train, test, device=pick_device(args.device)),
                         "logistic_regression": logistic_probe(train, test, seed=args.seed)}
    config = _config(args)
    if args.backend == "auto":  # record what "auto" resolved to on this machine
        from spikevit.lca.encode import choose_backend
        from spikevit.runtime import pick_device
        config["backend_resolved"] = choose_backend(dictionary.feature_dim, dictionary.size, pick_device(args.device))
    write_evaluation(result, args.json, command=args.command_line, config=config, plots=not args.no_plots)
    print(result.summary())


def cmd_run(args):
    train, test = _features(args, "train"), _features(args, "test")
    d = _dictionary_from(args, train)
    if args.dictionary_out:
        d.save(args.dictionary_out)
    _evaluate_and_report(args, d, train, test)


def cmd_evaluate(args):
    from spikevit.lca.dictionary import Dictionary
    from spikevit.lca.pipeline import check_evaluation_split
    d = Dictionary.load(args.dictionary)
    test = _features(args, "test")
    d.check_features(test.features, test.backbone)
    check_evaluation_split(d, test, args.allow_test_atoms)      # before any encoding
    train = _features(args, "train") if args.shallow_train_size or args.probes else None
    _evaluate_and_report(args, d, train, test)


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
