"""Frozen feature extractors: a registry of backbones, each with its own preprocessing.

``create_backbone(name, weights=...)`` returns a :class:`Backbone` (an
nn.Module mapping a preprocessed image batch to (B, N) features, plus its
transform).  ``weights``: "default" (the published ImageNet weights: needs a
download unless cached), "none" (random init, for offline tests), or a path
to a local ``.safetensors`` / ``.pth`` state dict (loaded safely).
"""
from spikevit.backbones.registry import (
    BACKBONES, Backbone, BackboneSpec, create_backbone, list_backbones, register_backbone,
)

__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "create_backbone", "list_backbones", "register_backbone"]
