"""Building registry models for a dataset (shared by ``spikevit train`` and the method commands)."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from spikevit.data import dataset_spec
from spikevit.errors import SpikevitError
from spikevit.models import create_model, list_models
from spikevit.models.registry import _MODELS, _load_all
from spikevit.train.data import dataset_geometry


def parse_model_args(pairs: list[str] | None) -> dict:
    """``["depth=2", "dts=true", "name=x"]`` -> ``{"depth": 2, "dts": True, "name": "x"}`` (JSON-ish values)."""
    import json

    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise SpikevitError(f"--model-arg expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        low = v.strip().lower()
        if low in ("true", "false"):
            out[k] = low == "true"
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def model_kwargs_for(name: str, dataset: str, img_size: int | None = None, extra: dict | None = None) -> dict:
    """Constructor kwargs for registry model ``name`` on ``dataset``.

    ``num_classes``, ``in_chans`` and ``img_size`` come from the dataset and are passed only when the
    constructor accepts them (named parameters or ``**kwargs``); ``extra`` is passed as given.
    """
    _load_all()
    if name not in _MODELS:
        raise SpikevitError(f"unknown model {name!r}; choose from {list_models()}")
    spec = dataset_spec(name=dataset)
    geo = dataset_geometry(dataset, img_size)
    auto = {"num_classes": spec.num_classes, "in_chans": geo.in_chans, "img_size": geo.img_size}
    params = inspect.signature(_MODELS[name]).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in auto.items() if v is not None and (takes_any or k in params)}
    kwargs.update(extra or {})
    return kwargs


def build_model(name: str, dataset: str, img_size: int | None = None, extra: dict | None = None,
                seed: int | None = None) -> tuple[nn.Module, dict]:
    """(model, run description ``{"model", "model_kwargs", "dataset", "init_seed"}``) for registry model ``name``.

    ``seed``: the initial weights depend on this seed only (the model is built under a forked, seeded
    CPU generator, so neither earlier random calls nor later ones change them); ``None`` draws from the
    global generator as it stands.
    """
    kwargs = model_kwargs_for(name, dataset, img_size, extra)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = create_model(name, **kwargs)
        except TypeError as exc:
            raise SpikevitError(f"model {name!r} rejected its arguments {kwargs}: {exc}") from None
    return model, {"model": name, "model_kwargs": kwargs, "dataset": dataset, "init_seed": seed}
