"""``spikevit reproduce``: one command per paper result (``--list`` describes them all)."""
from __future__ import annotations

import sys
import textwrap

from spikevit.cli.common import HELP_FMT, add_device_arg
from spikevit.errors import SpikevitError


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="reproduce a ViT-LCA / D-SELD table or figure with one command", formatter_class=HELP_FMT,
        description="Run one paper reproduction; it writes <out>/<NAME>/<NAME>.json, a markdown report, CSV "
                    "tables and PNG figures, each result beside the paper's number. `--list` shows every NAME.")
    p.add_argument("name", nargs="?", metavar="NAME", help="reproduction to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the reproductions, their paper numbers and needs")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (ImageFolder trees "
                   "<root>/<dataset>/<split>/<class>/... or torchvision format)")
    p.add_argument("--quick", action="store_true", help="smaller variant (fewer test images, smaller grids) that "
                   "finishes within 30 minutes on a 2-core CPU; the report states what it changed")
    p.add_argument("--out", default="results/reproduce", help="results folder (one sub-folder per reproduction)")
    p.set_defaults(out_kind="folder")
    p.add_argument("--cache", default=None, help="feature cache (default: the `spikevit lca` cache)")
    p.add_argument("--no-extract", action="store_true", help="fail instead of extracting missing features")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter of the reproduction (repeatable; `--list -v` shows them)")
    p.add_argument("-v", "--verbose", action="store_true", help="with --list: also show every parameter")
    add_device_arg(p)
    p.set_defaults(func=cmd_reproduce)


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpikevitError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def print_list(verbose: bool = False, file=None) -> None:
    """Print the reproductions to ``file`` (default: the current ``sys.stdout``, looked up at call time; a
    ``file=sys.stdout`` default would bind whatever stream was installed when this module was first imported)."""
    from spikevit.reproduce import list_reproductions

    file = sys.stdout if file is None else file

    for rep in list_reproductions():
        where = "offline" if rep.offline else "needs downloads/GPU"
        print(f"{rep.name:20s} [{where}] {rep.paper} {rep.target}", file=file)
        print(textwrap.fill(rep.summary, 100, initial_indent="    ", subsequent_indent="    "), file=file)
        nums = "; ".join(f"{k}: {v}" for k, v in rep.paper_numbers.items())
        print(textwrap.fill("paper: " + nums, 100, initial_indent="    ", subsequent_indent="      "), file=file)
        print(textwrap.fill("needs: " + rep.needs, 100, initial_indent="    ", subsequent_indent="      "), file=file)
        print(textwrap.fill("run time: " + rep.runtime, 100, initial_indent="    ", subsequent_indent="      "),
              file=file)
        changes = rep.quick_changes()
        if changes:
            print(textwrap.fill("--quick: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()), 100,
                                initial_indent="    ", subsequent_indent="      "), file=file)
        if verbose:
            print("    parameters: " + ", ".join(f"{k}={v}" for k, v in rep.params().items()), file=file)
        print(file=file)


def cmd_reproduce(args):
    if args.list:
        print_list(args.verbose)
        return 0
    if not args.name:
        raise SpikevitError("name a reproduction (spikevit reproduce NAME) or use --list")
    from pathlib import Path

    from spikevit.cli.lca import DEFAULT_CACHE
    from spikevit.reproduce import run_reproduction

    path = run_reproduction(args.name, quick=args.quick, overrides=_overrides(args.set),
                            data_root=Path(args.data_root) if args.data_root else None,
                            cache=Path(args.cache or DEFAULT_CACHE), out=Path(args.out), device=args.device,
                            extract=not args.no_extract, command=args.command_line)
    print(f"{args.name}: {path} (+ {Path(path).with_suffix('.md').name}, CSV tables, figures)")
    return 0
