"""Checks applied where input enters: CLI options (argparse ``type=``) and public-function arguments.

Every check raises :class:`~spikevit.errors.SpikevitError` with a one-line message naming the
argument, so the CLI prints ``spikevit: error: ...`` and exits with code 2 *before* any work starts.
The ``arg_*`` factories wrap the same checks as argparse ``type=`` callables (argparse then reports
``spikevit <cmd>: error: argument --steps: ...`` and exits 2).

Output paths are checked up front (:func:`check_output`): writable, not a folder, never one of the
command's input files; :func:`atomic_write_text` writes through a temporary file in the same folder.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from spikevit.errors import SpikevitError


# --------------------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------------------
def positive_int(value, name: str) -> int:
    """An integer >= 1 (bools and non-integral floats are refused)."""
    return _int(value, name, minimum=1)


def non_negative_int(value, name: str) -> int:
    """An integer >= 0."""
    return _int(value, name, minimum=0)


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, str, np.number)):
        raise SpikevitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        as_float = float(value)
        as_int = int(as_float) if math.isfinite(as_float) else None
    except (TypeError, ValueError):
        as_int = None
    if as_int is None or as_int != as_float:
        raise SpikevitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if as_int < minimum:
        raise SpikevitError(f"{name} must be an integer >= {minimum}, got {as_int}")
    return as_int


def finite_float(value, name: str, *, minimum: float | None = None, strictly: bool = False,
                 maximum: float | None = None) -> float:
    """A finite float, optionally bounded below (``> minimum`` if ``strictly`` else ``>=``) and above."""
    if isinstance(value, bool):
        raise SpikevitError(f"{name} must be a finite number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SpikevitError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(x):
        raise SpikevitError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (x <= minimum if strictly else x < minimum):
        raise SpikevitError(f"{name} must be {'>' if strictly else '>='} {minimum:g}, got {x:g}")
    if maximum is not None and x > maximum:
        raise SpikevitError(f"{name} must be <= {maximum:g}, got {x:g}")
    return x


def positive_float(value, name: str, *, maximum: float | None = None) -> float:
    """A finite float > 0."""
    return finite_float(value, name, minimum=0.0, strictly=True, maximum=maximum)


def non_negative_float(value, name: str, *, maximum: float | None = None) -> float:
    """A finite float >= 0."""
    return finite_float(value, name, minimum=0.0, maximum=maximum)


def device_name(value: str | None, name: str = "--device") -> str:
    """``auto``/``None`` or a device string torch understands whose backend exists here."""
    if value in (None, "", "auto"):
        return "auto"
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise SpikevitError(f"{name}: unknown device {value!r} (use cpu, cuda, cuda:N, mps or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpikevitError(f"{name}: {value!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpikevitError(f"{name}: {value!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise SpikevitError(f"{name}: {value!r} requested but MPS is not available here")
    elif dev.type != "cpu":
        raise SpikevitError(f"{name}: unsupported device {value!r} (use cpu, cuda, cuda:N, mps or auto)")
    return str(value)


# --------------------------------------------------------------------------------------------------------
# argparse types (same checks, argparse's error format and exit code 2)
# --------------------------------------------------------------------------------------------------------
def argtype(check, label: str, **kw):
    """An argparse ``type=`` callable running ``check(text, name, **kw)`` (a SpikevitError becomes argparse's
    one-line error, exit code 2)."""
    def convert(text: str):
        try:
            return check(text, "value", **kw)
        except SpikevitError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None
    convert.__name__ = label          # argparse names the type in its messages
    return convert


arg_positive_int = argtype(positive_int, "positive integer")
arg_non_negative_int = argtype(non_negative_int, "non-negative integer")
arg_positive_float = argtype(positive_float, "positive number")
arg_non_negative_float = argtype(non_negative_float, "non-negative number")
arg_finite_float = argtype(finite_float, "finite number")


def arg_float_range(lo: float, hi: float, *, strictly_above_lo: bool = False):
    """argparse type: a finite float in ``[lo, hi]`` (``(lo, hi]`` if ``strictly_above_lo``)."""
    return argtype(finite_float, f"number in {'(' if strictly_above_lo else '['}{lo:g}, {hi:g}]",
                    minimum=lo, strictly=strictly_above_lo, maximum=hi)


def arg_device(text: str) -> str:
    try:
        return device_name(text, "device")
    except SpikevitError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("device: ")) from None


arg_device.__name__ = "device"


# --------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------
def check_input_file(path, name: str) -> Path:
    """An existing, readable regular file."""
    p = Path(path)
    if not p.exists():
        raise SpikevitError(f"{name}: file not found: {p}")
    if p.is_dir():
        raise SpikevitError(f"{name}: {p} is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise SpikevitError(f"{name}: {p} is not readable")
    return p


def check_output(path, name: str, *, inputs: Iterable = (), directory: bool = False,
                 must_not_exist_as: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be written and is none of ``inputs``.

    ``directory``: ``path`` is a run folder (it may exist as a folder, not as a file); otherwise it is a
    file (it may exist as a file, which is then replaced atomically, never as a folder).  The nearest
    existing parent must be a writable folder.  Nothing is created here.
    """
    if path is None:
        return None
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise SpikevitError(f"{name}: {str(path)!r} is not a file name")
    if directory:
        if p.exists() and not p.is_dir():
            raise SpikevitError(f"{name}: {p} exists and is not a folder")
    elif p.is_dir():
        raise SpikevitError(f"{name}: {p} is a folder, expected a file name")
    target = p.resolve()
    for other in inputs:
        if other is None:
            continue
        o = Path(other)
        if o.exists() and target.exists() and os.path.samefile(o, target) or o.resolve() == target:
            raise SpikevitError(f"{name}: {p} is also an input of this command; refusing to overwrite it")
    parent = p if directory and p.exists() else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SpikevitError(f"{name}: cannot create {p}: {parent} is not a folder")
    try:                       # a real probe: catches read-only file systems and permissions alike
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise SpikevitError(f"{name}: cannot write {p} (creating a file in {parent} failed: {exc.strerror or exc})"
                            ) from None
    if p.exists() and not directory and not os.access(p, os.W_OK):
        raise SpikevitError(f"{name}: {p} is not writable (permission denied)")
    return p


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
