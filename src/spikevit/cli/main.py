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
from pathlib import Path

from spikevit.errors import SpikevitError, require
from spikevit.validation import check_input_file, check_output

# group name -> module with register(subparsers); modules that fail to import are skipped with a note
COMMAND_GROUPS = {
    "lca": "spikevit.cli.lca",
    "dts": "spikevit.cli.dts",
    "convert": "spikevit.cli.convert",
    "reproduce": "spikevit.cli.reproduce",
    "train": "spikevit.cli.train",
    "profile": "spikevit.cli.profile",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``spikevit lca run: error: argument --steps: ...``), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spikevit",
        description="Vision transformers and CNN features to spiking, neuromorphic form: exemplar LCA decoders "
                    "(ViT-LCA / D-SELD), dynamic time-step spiking ViTs (DTS), SIT ANN-to-SNN conversion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(command_line="spikevit")   # main() records the real command line here
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


# options naming files a command reads, and files it writes; checked before any work starts
INPUT_FILES = ("dictionary", "checkpoint", "reference")
INPUT_FOLDERS = ("features",)
OUTPUT_FILES = ("json", "dictionary_out")


def check_paths(args: argparse.Namespace) -> None:
    """Inputs exist; outputs (``--json``, ``--out`` ...) are writable and none of the inputs.

    ``--out`` is a run folder where the sub-command says so (``set_defaults(out_kind="folder")``), else a file.
    """
    inputs = []
    for name in INPUT_FILES:
        for path in _as_list(getattr(args, name, None)):
            inputs.append(check_input_file(path, _flag(name)))
    for name in INPUT_FOLDERS:
        for path in _as_list(getattr(args, name, None)):
            require(Path(path).is_dir(), f"{_flag(name)}: folder not found: {path}")
            inputs.append(Path(path))
    for name in OUTPUT_FILES:
        if getattr(args, name, None) is not None:
            check_output(getattr(args, name), _flag(name), inputs=inputs)
    if getattr(args, "out", None) is not None:
        check_output(args.out, "--out", inputs=inputs, directory=getattr(args, "out_kind", "file") == "folder")


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help (0) or a usage error (2): returned like any other exit code
        return int(exc.code or 0)
    args.command_line = "spikevit " + shlex.join(argv)   # recorded in every report this run writes
    try:
        check_paths(args)
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
