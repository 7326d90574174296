"""Shipped and user-fitted few-spike neuron parameters (safetensors, one file for all functions and K).

Tensor names are ``"<function>/<K>/<T|h|d>"`` (float64); the metadata holds, per entry, the fitting
domain, the number of points, the RMSE measured by simulation and how it was fitted.  The package
ships ``data/fewspike.safetensors`` (written by ``benchmarks/conversion/fit_fewspike.py``), so
nobody has to fit before converting.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

from spikevit.errors import SpikevitError, require
from spikevit.tensorio import load_tensors, save_tensors

KIND = "fewspike-params"
PACKAGE_PARAMS = Path(__file__).resolve().parent / "data" / "fewspike.safetensors"


def _key(function: str, steps: int) -> str:
    return f"{function}/{int(steps)}"


def read_params(path: str | os.PathLike | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """All entries of a parameter file: ``(tensors, {"<fn>/<K>": info})``; missing file -> empty."""
    path = Path(path) if path is not None else PACKAGE_PARAMS
    if not path.exists():
        return {}, {}
    tensors, meta = load_tensors(path, KIND)
    return tensors, meta.get("entries", {})


def store_fit(fit, path: str | os.PathLike, only_if_better: bool = True) -> bool:
    """Merge a :class:`~spikevit.conversion.fitting.FewSpikeFit` into ``path``; returns True if written.

    An existing entry for the same function, K and domain is replaced only by a lower RMSE
    (unless ``only_if_better=False``).
    """
    with _locked(path):
        return _store_fit(fit, path, only_if_better)


@contextmanager
def _locked(path):
    """Exclusive lock on ``<path>.lock`` (several fitting processes may merge into one file)."""
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:          # non-POSIX: no locking
            pass
        yield


def _store_fit(fit, path, only_if_better: bool) -> bool:
    tensors, entries = read_params(path)
    key = _key(fit.function, fit.steps)
    old = entries.get(key)
    same_domain = old is not None and tuple(old["domain"]) == tuple(fit.domain) and old["n_points"] == fit.n_points
    if only_if_better and same_domain and old["rmse"] <= fit.rmse:
        return False
    for name, v in (("T", fit.T), ("h", fit.h), ("d", fit.d)):
        tensors[f"{key}/{name}"] = v.detach().to(torch.float64).cpu()
    entries[key] = {"function": fit.function, "steps": fit.steps, "domain": list(fit.domain),
                    "n_points": fit.n_points, "rmse": fit.rmse, "max_abs_error": fit.max_abs_error,
                    "seconds": round(fit.seconds, 1), "evaluations": fit.evaluations, "config": fit.config}
    save_tensors(path, tensors, KIND, {"entries": entries})
    if Path(path).resolve() == PACKAGE_PARAMS:
        _package_params.cache_clear()
    return True


@lru_cache(maxsize=1)
def _package_params() -> tuple[dict[str, torch.Tensor], dict]:
    return read_params(PACKAGE_PARAMS)


def available(function: str = "exp", path: str | os.PathLike | None = None) -> list[int]:
    """The K values with fitted parameters for ``function``."""
    _, entries = _package_params() if path is None else read_params(path)
    return sorted(int(k.split("/")[1]) for k in entries if k.split("/")[0] == function)


def few_spike_parameters(function: str, steps: int, dtype: torch.dtype = torch.float32,
                         path: str | os.PathLike | None = None) -> dict:
    """``{"T", "h", "d": [K] tensors, "domain": (lo, hi), "rmse": float}`` of a fitted neuron."""
    tensors, entries = _package_params() if path is None else read_params(path)
    key = _key(function, steps)
    if key not in entries:
        have = sorted(int(k.split("/")[1]) for k in entries if k.split("/")[0] == function)
        where = "the shipped parameters" if path is None else str(path)
        raise SpikevitError(f"no fitted {function} few-spike neuron with {steps} steps in {where} "
                            f"(available K: {have or 'none'}); fit one with "
                            f"`spikevit convert fit-neuron --function {function} --steps {steps}`")
    info = entries[key]
    out = {name: tensors[f"{key}/{name}"].to(dtype).clone() for name in ("T", "h", "d")}
    out.update(domain=tuple(info["domain"]), rmse=info["rmse"])
    return out


def si_exp_parameters(steps: int) -> dict:
    """Fitted SI-exp neuron (exp on 10,000 evenly spaced points of [-1, 1]) with ``steps`` time steps.

    Returns ``{"T": [K], "h": [K], "d": [K]}`` float32 tensors for the dynamics (SIT Eqs. 2-4)::

        v[1] = x;  z[t] = H(v[t] - T[t]);  v[t+1] = v[t] - h[t] z[t];  out = sum_t d[t] z[t]

    with the Heaviside convention **H(0) = 1**: a spike is emitted when ``v[t] >= T[t]``.
    Shipped for K = 4..16 (see :func:`available`).
    """
    require(isinstance(steps, int), f"steps must be an int, got {type(steps).__name__}")
    p = few_spike_parameters("exp", steps)
    return {"T": p["T"], "h": p["h"], "d": p["d"]}
