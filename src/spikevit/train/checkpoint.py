"""Training checkpoints as safetensors (never pickle): model + optimizer + schedule + epoch + RNG states.

Layout of a ``spikevit-train-checkpoint`` file: tensors ``model.<name>``, ``optim.<param-index>.<key>``,
``rng.<rank>.<source>``; JSON metadata ``{"epoch", "run", "config", "optim_groups", "optim_scalars",
"schedule", "history", "world_size"}``.  A ``spikevit-model`` file holds only ``model.<name>`` plus the
``run`` description needed to rebuild the model from the registry.  Files are written atomically
(tmp + rename), so a kill while saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikevit.errors import SpikevitError
from spikevit.tensorio import load_tensors, read_metadata, save_tensors

CHECKPOINT_KIND = "spikevit-train-checkpoint"
MODEL_KIND = "spikevit-model"


# ----------------------------------------------------------------------------- RNG state as tensors
def rng_state_tensors(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's torch / CUDA / numpy / python RNG states, each as a tensor."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor([*np_state[1].tolist(), int(np_state[2]), int(np_state[3])], dtype=torch.int64),
        "numpy_gauss": torch.tensor([float(np_state[4])], dtype=torch.float64),
        "python": torch.tensor([*py_state[1], 0 if py_state[2] is None else 1], dtype=torch.int64),
        "python_gauss": torch.tensor([0.0 if py_state[2] is None else float(py_state[2])], dtype=torch.float64),
    }
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state_tensors(state: dict[str, torch.Tensor], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    npk = state["numpy"].tolist()
    np.random.set_state(("MT19937", np.asarray(npk[:624], dtype=np.uint32), npk[624], npk[625],
                         float(state["numpy_gauss"][0])))
    py = state["python"].tolist()
    gauss = float(state["python_gauss"][0]) if py[-1] else None
    random.setstate((3, tuple(py[:-1]), gauss))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8), device)


# ----------------------------------------------------------------------------- optimizer state
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict, list[dict]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, scalars, groups


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict,
                           groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = val
    for name, val in scalars.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    if len(groups) != len(opt.param_groups) or any(
            len(g["params"]) != len(c["params"]) for g, c in zip(groups, opt.param_groups)):
        raise SpikevitError("checkpoint optimizer has a different parameter grouping than this model/config")
    opt.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- files
def save_checkpoint(path: str | Path, model: nn.Module, opt: torch.optim.Optimizer, schedule_state: dict,
                    epoch: int, run: dict, config: dict, history: list[dict],
                    rng_by_rank: list[dict[str, torch.Tensor]]) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_t, scalars, groups = optimizer_to_tensors(opt)
    tensors.update(opt_t)
    for r, st in enumerate(rng_by_rank):
        tensors.update({f"rng.{r}.{k}": v for k, v in st.items()})
    meta = {"epoch": int(epoch), "run": run, "config": config, "optim_groups": groups, "optim_scalars": scalars,
            "schedule": schedule_state, "history": history, "world_size": len(rng_by_rank)}
    return save_tensors(path, tensors, CHECKPOINT_KIND, meta)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a training checkpoint; foreign or corrupt files raise SpikevitError."""
    tensors, meta = load_tensors(path, CHECKPOINT_KIND)
    for key in ("epoch", "run", "config", "optim_groups", "schedule", "history"):
        if key not in meta:
            raise SpikevitError(f"{path}: training checkpoint metadata lacks {key!r} (corrupt or foreign file)")
    return tensors, meta


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def rng_of_rank(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor] | None:
    st = prefixed(tensors, f"rng.{rank}.")
    return st or None


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a clear message naming missing / unexpected / mis-shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise SpikevitError(f"{source} does not fit this model: missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]}, shape mismatch {shapes[:5]}")
    model.load_state_dict(state)


def save_model(path: str | Path, model: nn.Module, run: dict, results: dict | None = None) -> Path:
    """Trained weights + the registry description (``run["model"]``, ``run["model_kwargs"]``)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    return save_tensors(path, tensors, MODEL_KIND, {"run": run, "results": results or {}})


def read_run(path: str | Path) -> dict:
    """The ``run`` description stored in a model or checkpoint file (header only)."""
    path = Path(path)
    try:
        meta = read_metadata(path, MODEL_KIND)
    except SpikevitError as exc:
        if "this is a" not in str(exc):
            raise
        meta = read_metadata(path, CHECKPOINT_KIND)
    if "run" not in meta:
        raise SpikevitError(f"{path}: no model description in its metadata")
    return meta["run"]


def load_trained_model(path: str | Path, map_location: str | torch.device = "cpu", **overrides) -> tuple[nn.Module, dict]:
    """Rebuild a model from a ``spikevit-model`` (or training checkpoint) file via the model registry.

    Returns (model in eval mode, run description).  ``overrides`` replace stored constructor kwargs
    (only those that do not change parameter shapes make sense, e.g. inference options).
    """
    from spikevit.models import create_model

    path = Path(path)
    run = read_run(path)
    kind = MODEL_KIND
    try:
        tensors, _ = load_tensors(path, MODEL_KIND)
    except SpikevitError as exc:
        if "this is a" not in str(exc):
            raise
        tensors, _ = load_tensors(path, CHECKPOINT_KIND)
        kind = CHECKPOINT_KIND
    kwargs = {**run.get("model_kwargs", {}), **overrides}
    model = create_model(run["model"], **kwargs)
    load_model_state(model, prefixed(tensors, "model."), f"{path} ({kind})")
    return model.to(map_location).eval(), run
