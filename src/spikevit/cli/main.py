"""The ``spikevit`` command: one parser, each method a sub-command group.

Sub-command modules expose ``register(subparsers)``; each command is a thin
call into the library API.  A :class:`SpikevitError` becomes a one-line
message on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

from spikevit.errors import SpikevitError

# group name -> module with register(subparsers); modules that fail to import are skipped with a note
COMMAND_GROUPS = {
    "lca": "spikevit.cli.lca",
    "dts": "spikevit.cli.dts",
    "convert": "spikevit.cli.convert",
    "reproduce": "spikevit.cli.reproduce",
    "train": "spikevit.cli.train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikevit",
        description="Vision transformers and CNN features to spiking, neuromorphic form: exemplar LCA decoders "
                    "(ViT-LCA / D-SELD), dynamic time-step spiking ViTs (DTS), SIT ANN-to-SNN conversion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    sub.required = True
    for name, module in COMMAND_GROUPS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("spikevit.cli"):
                continue  # group not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "spikevit " + shlex.join(argv)   # recorded in every report this run writes
    try:
        result = args.func(args)
    except SpikevitError as exc:
        print(f"spikevit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikevit: interrupted (finished shards/checkpoints are kept; rerun to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())                  # silence the flush at interpreter exit
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
