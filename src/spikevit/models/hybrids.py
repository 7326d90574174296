"""The SIT paper's CNN-transformer hybrids from timm, registered for ``spikevit train`` / ``convert run``.

``edgenext-xx-small``: timm ``edgenext_xx_small`` (EdgeNeXt, the paper's headline model; 3 XCA attention
blocks), 1.16 M parameters with a 10-class head.  timm is imported when the model is built.
"""
from __future__ import annotations

from torch import nn

from spikevit.errors import SpikevitError
from spikevit.models.registry import register_model


def _timm(arch: str, num_classes: int, in_chans: int, **kw) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise SpikevitError(f"{arch} needs timm (pip install 'spikevit[timm]')") from None
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)


@register_model
def edgenext_xx_small(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None, **kw) -> nn.Module:
    """timm EdgeNeXt-XX-Small (random init; convolutional stem: any input size, ``img_size`` is unused)."""
    return _timm("edgenext_xx_small", num_classes, in_chans, **kw)
