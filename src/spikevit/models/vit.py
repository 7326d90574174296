"""Small vision transformer for 32x32 images (CIFAR), the ANN that SIT-conversion converts.

Layout (timm order): blocks, model class, registered variants.

``SmallViT``: a convolutional stem (3x3 convs, stride 4 in total) turns a
``[B, 3, 32, 32]`` image into ``(32/4)^2 = 64`` tokens of width ``dim``, then
``depth`` pre-norm transformer blocks, global average pooling and a linear head.
Attention is written out explicitly::

    A = softmax(squeeze(Q K^T * d_head^-0.5)),   out = A V

with the softmax an ``nn.Softmax(dim=-1)`` sub-module (``Attention.softmax``)
so that :func:`spikevit.conversion.convert` can swap it for a
:class:`spikevit.nn.SpikingSoftmax`.  ``squeeze`` is ``None`` (plain ViT),
``"sigmoid"`` (the SIT paper's range restriction: softmax inputs in (0, 1),
inside the SI-exp neuron's fitted range [-1, 1]) or ``"tanh"`` (inputs in
(-1, 1)).
"""
from __future__ import annotations

import torch
from torch import nn

from spikevit.errors import SpikevitError, require
from spikevit.models.registry import register_model

SQUEEZES = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_squeeze(squeeze: str | None) -> nn.Module:
    """``nn.Identity`` for ``None``, else the named range restriction (sigmoid, tanh)."""
    if squeeze in (None, "none"):
        return nn.Identity()
    if squeeze not in SQUEEZES:
        raise SpikevitError(f"unknown attention squeeze {squeeze!r}; choose from None, {sorted(SQUEEZES)}")
    return SQUEEZES[squeeze]()


class Attention(nn.Module):
    """Multi-head self-attention, explicit softmax sub-module. x: ``[B, N, C]`` -> ``[B, N, C]``."""

    def __init__(self, dim: int, num_heads: int, squeeze: str | None = None):
        super().__init__()
        require(dim % num_heads == 0, f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.squeeze = make_squeeze(squeeze)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = self.softmax(self.squeeze((q @ k.transpose(-2, -1)) * self.scale))   # [B, H, N, N]
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, squeeze: str | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, squeeze)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvStem(nn.Module):
    """3x3 conv stem, total stride 4: ``[B, C_in, H, W]`` -> ``[B, dim, H/4, W/4]``.

    conv s2 (C_in -> dim/4) + BN + GELU, conv s1 (dim/4 -> dim/2) + BN + GELU, conv s2 (dim/2 -> dim).
    """

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        c1, c2 = dim // 4, dim // 2
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.GELU(),
            nn.Conv2d(c2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallViT(nn.Module):
    """Conv-stem ViT for small images. ``forward``: ``[B, 3, H, W]`` -> logits ``[B, num_classes]``."""

    def __init__(self, img_size: int = 32, in_chans: int = 3, num_classes: int = 10, dim: int = 192,
                 depth: int = 6, num_heads: int = 4, mlp_ratio: float = 2.0, squeeze: str | None = "tanh"):
        super().__init__()
        require(img_size % 4 == 0, f"img_size {img_size} must be a multiple of 4 (stem stride)")
        self.num_classes = num_classes
        self.squeeze = squeeze
        self.stem = ConvStem(in_chans, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // 4) ** 2, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, squeeze) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> tokens ``[B, N, dim]`` after the final norm."""
        require(x.dim() == 4, f"SmallViT expects images [B, C, H, W], got shape {tuple(x.shape)}")
        x = self.stem(x).flatten(2).transpose(1, 2)
        require(x.shape[1] == self.pos_embed.shape[1],
                f"input gives {x.shape[1]} tokens, the model was built for {self.pos_embed.shape[1]} "
                f"(img_size {int(self.pos_embed.shape[1] ** 0.5) * 4})")
        return self.norm(self.blocks(x + self.pos_embed))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def vit_cifar_tiny(num_classes: int = 10, img_size: int = 32, squeeze: str | None = "tanh", **kw) -> SmallViT:
    """Conv-stem ViT, dim 128, 4 blocks, 4 heads, MLP x2; tanh-squeezed attention logits in (-1, 1)."""
    return SmallViT(img_size=img_size, num_classes=num_classes, squeeze=squeeze,
                    **{"dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, **kw})


@register_model
def vit_cifar_micro(num_classes: int = 10, img_size: int = 32, squeeze: str | None = "tanh", **kw) -> SmallViT:
    """dim 64, 2 blocks, 2 heads: for tests and smoke runs."""
    return SmallViT(img_size=img_size, num_classes=num_classes, squeeze=squeeze,
                    **{"dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, **kw})
