"""Argument groups shared by several sub-commands (one definition, same defaults everywhere)."""
from __future__ import annotations

import argparse

from spikevit.validation import arg_device

HELP_FMT = argparse.ArgumentDefaultsHelpFormatter


def add_data_args(p: argparse.ArgumentParser, dataset_default: str | None = None) -> None:
    p.add_argument("--dataset", default=dataset_default, required=dataset_default is None,
                   help="mnist, cifar10, cifar100, imagenet, imagefolder or digits (embedded)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset (torchvision format or "
                   "ImageFolder tree <root>/<dataset>/<split>/<class>/...)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data-root")
    p.add_argument("--skip-bad-images", action="store_true", help="decode every image up front and leave out "
                   "(and report) unreadable files instead of stopping at the first one")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=arg_device, default="auto", help="cpu, cuda, cuda:1, mps or auto (best available)")


def add_json_arg(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--json", default=default, help="write results here (JSON; a .md report and CSVs beside it)")
