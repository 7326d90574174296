"""The one signature every LCA backend implements, and the check that enforces it."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

import torch

from spikevit.functional.lca.core import AllReduce, LCATrace, no_reduce

# name -> (default, or REQUIRED): the fixed keyword-only part of the signature, in this order
REQUIRED = inspect.Parameter.empty
FIXED_KEYWORDS = {"lam": REQUIRED, "tau": REQUIRED, "steps": REQUIRED, "rectify": True, "kind": "soft",
                  "exclude": None, "trace": False, "potentials": True, "allreduce": no_reduce}


@runtime_checkable
class LCABackend(Protocol):
    """``backend(phi (N, M), s (B, N), *, lam, tau, steps, rectify, kind, exclude, trace, potentials, allreduce,
    **options) -> LCATrace`` with (B, M) codes.

    ``exclude`` (B,) atom per row that must stay silent (-1: none); ``trace`` False,
    "active" or "energy"; ``potentials`` False skips u[K] (LCATrace.potentials is
    None); ``allreduce`` sums/maxes over dictionary shards (identity in one process).
    Backend-specific ``options`` are keyword-only with defaults and listed in
    ``fn.options``; ``stats["flops"]`` reports the work done (see :mod:`.core`).
    """

    options: frozenset

    def __call__(self, phi: torch.Tensor, s: torch.Tensor, *, lam: float, tau: float, steps: int,
                 rectify: bool = True, kind: str = "soft", exclude: torch.Tensor | None = None,
                 trace: bool | str = False, potentials: bool = True,
                 allreduce: AllReduce = no_reduce) -> LCATrace: ...


F = TypeVar("F", bound=Callable[..., LCATrace])


def lca_backend(fn: F) -> F:
    """Check that ``fn`` has the fixed backend signature; record its extra options in ``fn.options``.

    Raises TypeError naming the first difference (a missing or renamed argument,
    another default, an option without a default or not keyword-only).
    """
    params = list(inspect.signature(fn).parameters.values())
    name = getattr(fn, "__qualname__", repr(fn))
    if len(params) < 2 or [p.kind for p in params[:2]] != [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2:
        raise TypeError(f"LCA backend {name}: the first two arguments must be positional (phi, s)")
    rest = {p.name: p for p in params[2:]}
    for key, default in FIXED_KEYWORDS.items():
        p = rest.pop(key, None)
        if p is None or p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"LCA backend {name}: missing keyword-only argument {key!r}")
        if p.default is not default and p.default != default:
            raise TypeError(f"LCA backend {name}: {key!r} must default to {default!r}, not {p.default!r}")
    for p in rest.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise TypeError(f"LCA backend {name}: option {p.name!r} must be keyword-only with a default")
    fn.options = frozenset(rest)
    return fn
