"""Model registry (timm-style): ``create_model(name, **kw)``, ``list_models()``.

Model files register their variants with ``@register_model``; the modules
listed in ``_MODEL_MODULES`` are imported lazily on first use.
"""
from spikevit.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
