"""Name -> constructor registry for trainable models (Spikformer, small ViT, ...)."""
from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from spikevit.errors import SpikevitError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# model files; each registers its variants when imported
_MODEL_MODULES = ("spikevit.models.spikformer", "spikevit.models.vit", "spikevit.models.hybrids")
_loaded = False


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: register ``fn`` under ``name`` (default: its function name, '_' -> '-')."""
    def wrap(f):
        _MODELS[name or f.__name__.replace("_", "-")] = f
        return f
    return wrap(fn) if fn is not None else wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    _loaded = True


def list_models() -> list[str]:
    _load_all()
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    _load_all()
    if name not in _MODELS:
        raise SpikevitError(f"unknown model {name!r}; choose from {sorted(_MODELS)}")
    return _MODELS[name](**kwargs)
