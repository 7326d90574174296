"""Spikformer-N-D with dynamic time-step spiking layers (DTS-SNN, Datta et al.; Spikformer, Zhou et al.).

Layout (timm order): time-distributed blocks, the model class, registered variants.

Every dot product (conv, linear, Q K^T V) reads spikes from a :class:`spikevit.nn.DTSSLIF` (LIF + DTSS
gate), so only accumulates are needed after the first, encoding conv; batch norm follows each
conv/linear, convs have no bias, there is no dropout / layer norm / softmax.  Tensors are time-first:
images ``[B, C, H, W]`` are encoded once (the encoding conv sees the same image at every step) and
broadcast to ``[T, B, ...]``; tokens are ``[T, B, D, N]``::

    SPS:    x = BN(conv0(img))                       (encoding layer, MACs)
            x = pool(BN(conv_i(LIF_i(x)))), i = 1..3 (pools on the last log2(patch) of the 4 stages)
            x = x + BN(conv_rpe(LIF_rpe(x)))         -> tokens [T, B, D, N]
    SSA:    s = LIF_in(x);  Q, K, V = LIF_q/k/v(BN(conv1x1_q/k/v(s)))
            x = x + BN(proj(LIF_attn(Q (K^T V) * scale)))       (per head; no softmax)
    MLP:    x = x + BN(fc2(LIF_2(BN(fc1(LIF_1(x))))))
    head:   logits = mean_t Linear(mean_tokens LIF_head(x))

Each DTSSLIF has a ``role`` (where it sits) and a ``group`` (the part of the network the mask loss names),
given by a registered *grouping* (:data:`GROUPINGS`):

    role          the LIF spikes ...                                  "paper" (default)   "feeds"
    sps           BN(conv_i) of SPS, i = 0..3 (conv_3 pooled)         sps                 sps
    block0_in     block 1's input: the SPS output x + RPE             sps                 qkv
    block_in      block b > 1's input: residual + BN(fc2) of b - 1    mlp                 qkv
    qkv           BN(conv_q / conv_k / conv_v): the Q, K, V tensors   qkv                 attn
    attn          Q (K^T V) * scale                                   attn                attn
    mlp_in        the residual + BN(proj) (the MLP's input)           attn                mlp
    mlp_hidden    BN(fc1)                                             mlp                 mlp
    head          the residual + BN(fc2) of the last block            mlp                 head

``paper`` follows DTS-SNN Eq. 7, where layer l is ``O_l = SN(W_l O_{l-1}) * TM_l``: a LIF belongs to the
part whose weights produce its input, so "the layers that compute the query, key, and value tensors"
(Sec. III-B) are the Q/K/V LIFs, and "attn" is the Q K^T V product and the projection after it.  This
maps one to one onto the paper's Spikformer, whose LIF follows each conv (Fig. 2: five SPS, five SSA and
two MLP layers per block): our SPS LIFs and block 1's input LIF are its five SPS LIFs, the MLP input LIF
spikes what its proj_lif spikes (the projection), the next block's input LIF (or the head LIF) what its
fc2_lif spikes.  ``feeds`` tags each LIF with the dot product it feeds (the earlier assignment).
Convs carry the part of their own weights (``q/k/v`` qkv, ``proj`` attn, ``fc1/fc2`` mlp, SPS convs sps)
under either grouping.  Fixed-T Spikformer: ``dts=False`` (all ``tmax`` steps everywhere).

Inference skips masked steps: in eval mode a DTSSLIF computes only its T_l kept steps, the layer it
feeds runs its conv on those T_l steps only and fills the remaining steps with its response to zero
input (BN(0), a per-channel constant: no multiply or accumulate), which is exactly what the masked
training-time computation produces.  ``set_skip_masked(False)`` computes the masked form instead.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from spikevit.errors import require
from spikevit.functional.dts import default_init_steps
from spikevit.models.registry import register_model
from spikevit.nn.dtss import DTSSLIF
from spikevit.validation import positive_int

GROUPS = ("sps", "qkv", "attn", "mlp", "head")
ROLES = ("sps", "block0_in", "block_in", "qkv", "attn", "mlp_in", "mlp_hidden", "head")
GROUPINGS: dict[str, dict[str, str]] = {
    "paper": {"sps": "sps", "block0_in": "sps", "block_in": "mlp", "qkv": "qkv", "attn": "attn", "mlp_in": "attn",
              "mlp_hidden": "mlp", "head": "mlp"},
    "feeds": {"sps": "sps", "block0_in": "qkv", "block_in": "qkv", "qkv": "attn", "attn": "attn", "mlp_in": "mlp",
              "mlp_hidden": "mlp", "head": "head"},
}
DEFAULT_GROUPING = "paper"


def _pad_steps(y: torch.Tensor, tmax: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Extend ``y [T_s, B, ...]`` to ``[tmax, B, ...]`` with ``fill`` (broadcastable to one step) or zeros."""
    missing = tmax - y.shape[0]
    if missing == 0:
        return y
    shape = (missing, *y.shape[1:])
    pad = y.new_zeros(shape) if fill is None else fill.to(y.dtype).expand(shape)
    return torch.cat([y, pad], 0)


class ConvBN(nn.Module):
    """Time-distributed conv (no bias, stride 1, 'same' padding) + batch norm.

    s: spikes ``[T_s, B, C, *S]`` with T_s <= tmax -> ``[tmax, B, C', *S]``; steps T_s.. get BN(0).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, dims: int = 1, group: str = ""):
        super().__init__()
        self.group = group  # the part of the network these weights belong to (sps, qkv, attn, mlp)
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.conv = conv(cin, cout, kernel, stride=1, padding=kernel // 2, bias=False)
        self.bn = norm(cout)
        self.dims = dims

    def _live_bn(self, y: torch.Tensor, live: int) -> torch.Tensor:
        """Training-mode batch norm of ``y [T, B, C, *S]`` with statistics over the first ``live`` steps.

        Masked steps carry conv(0) = 0; counting them in the statistics would shift and rescale the live
        steps by an amount that depends on the mask.  With live-step statistics a layer sees exactly
        what a fixed-T network with T = live steps sees, and the masked steps get BN(0) with the same
        statistics, as at inference (where the running statistics, also from live steps, are used).
        """
        bn = self.bn
        dims = [0, 1, *range(3, y.dim())]
        ylive = y[:live]
        mean = ylive.mean(dims)
        var = ylive.var(dims, unbiased=False)
        n = ylive.numel() / ylive.shape[2]
        with torch.no_grad():
            bn.num_batches_tracked += 1
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(m * mean)
            bn.running_var.mul_(1 - m).add_(m * var * n / max(n - 1, 1))
        shape = (1, 1, -1, *([1] * (y.dim() - 3)))
        scale = (bn.weight / torch.sqrt(var + bn.eps)).view(shape)
        return (y - mean.view(shape)) * scale + bn.bias.view(shape)

    def zero_response(self) -> torch.Tensor:
        """BN(conv(0)) = BN(0): ``[1, C', 1, ...]`` (eval mode: beta - gamma * mean / sqrt(var + eps))."""
        z = self.bn.weight.new_zeros(1, self.bn.num_features, *([1] * self.dims))
        return self.bn(z)

    def forward(self, s: torch.Tensor, tmax: int, live: int | None = None) -> torch.Tensor:
        """``live``: in training, the number of leading steps where the input spikes are not masked off;
        batch-norm statistics then come from those steps only (see :meth:`_live_bn`)."""
        steps, batch = s.shape[:2]
        if steps == tmax:
            y = self.conv(s.flatten(0, 1))
            if self.training and live is not None and 0 < live < steps:
                return self._live_bn(y.unflatten(0, (steps, batch)), live)
            return self.bn(y).unflatten(0, (steps, batch))
        require(not self.training, "masked steps are only skipped in eval mode")
        fill = self.zero_response()
        if steps == 0:
            return fill.expand(tmax, batch, self.bn.num_features, *s.shape[3:]).clone()
        y = self.bn(self.conv(s.flatten(0, 1))).unflatten(0, (steps, batch))
        return _pad_steps(y, tmax, fill)


def live_steps(lif: DTSSLIF) -> int | None:
    """Kept steps of a gated LIF in training with live-step batch norm on (``None``: use plain BN)."""
    if lif.dtss is None or not lif.training or not getattr(lif, "live_bn", False):
        return None
    return lif.steps()


class SpikeAttention(nn.Module):
    """Spiking self-attention product without softmax: per head ``Q (K^T V) * scale``.

    q, k, v: ``[T_q|T_k|T_v, B, D, N]`` spikes -> ``[tmax, B, D, N]``; steps where any of them is
    absent (masked) are zero and are not computed.  ``(Q K^T) V`` equals ``Q (K^T V)``; the latter costs
    2 N d^2 instead of 2 N^2 d accumulates per head.
    """

    def __init__(self, heads: int, scale: float):
        super().__init__()
        self.heads, self.scale = heads, scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tmax: int) -> torch.Tensor:
        steps = min(q.shape[0], k.shape[0], v.shape[0])
        _, batch, dim, n = q.shape

        def heads(x):  # [steps, B, D, N] -> [steps, B, H, N, d]
            return x[:steps].reshape(steps, batch, self.heads, dim // self.heads, n).transpose(-1, -2)

        qh, kh, vh = heads(q), heads(k), heads(v)
        out = (qh @ (kh.transpose(-1, -2) @ vh)) * self.scale
        return _pad_steps(out.transpose(-1, -2).reshape(steps, batch, dim, n), tmax)

    group = "attn"  # the paper's "attn" part: Q K^T V and the scaling

    def extra_repr(self) -> str:
        return f"heads={self.heads}, scale={self.scale}"


class _LayerFactory:
    """Builds DTSSLIF layers with the model's shared settings; ``grouping`` maps a role to its group."""

    def __init__(self, tmax, dts, init_steps, min_steps, leak, vth, gamma, detach_reset, grouping: dict[str, str]):
        self.kw = dict(tmax=tmax, dts=dts, init_steps=init_steps, min_steps=min_steps, leak=leak, gamma=gamma,
                       detach_reset=detach_reset)
        self.vth, self.grouping = vth, grouping

    def __call__(self, role: str, vth: float | None = None) -> DTSSLIF:
        require(role in ROLES, f"unknown LIF role {role!r}")
        lif = DTSSLIF(group=self.grouping[role], vth=self.vth if vth is None else vth, **self.kw)
        lif.role = role
        return lif


class SPS(nn.Module):
    """Spiking patch splitting: image ``[B, C, H, W]`` -> tokens ``[T, B, D, (H/p)(W/p)]``."""

    def __init__(self, make: _LayerFactory, tmax: int, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        require(patch_size in (1, 2, 4, 8, 16), f"patch_size must be a power of two <= 16, got {patch_size}")
        require(dim % 8 == 0, f"embedding dim must be divisible by 8, got {dim}")
        self.tmax = tmax
        chans = [dim // 8, dim // 4, dim // 2, dim]
        n_pool = int(math.log2(patch_size))
        self.pool_after = [i >= 4 - n_pool for i in range(4)]
        self.enc = nn.Sequential(nn.Conv2d(in_chans, chans[0], 3, padding=1, bias=False), nn.BatchNorm2d(chans[0]))
        self.lifs = nn.ModuleList([make("sps") for _ in range(3)])
        self.convs = nn.ModuleList([ConvBN(chans[i], chans[i + 1], 3, dims=2, group="sps") for i in range(3)])
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.rpe_lif = make("sps")
        self.rpe = ConvBN(dim, dim, 3, dims=2, group="sps")

    def _pool(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if not self.pool_after[i]:
            return x
        return self.pool(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.enc(img)                                           # computed once, identical at every step
        x = x.unsqueeze(0).expand(self.tmax, *x.shape)
        x = self._pool(x, 0)
        for i, (lif, conv) in enumerate(zip(self.lifs, self.convs)):
            x = self._pool(conv(lif(x), self.tmax, live_steps(lif)), i + 1)
        x = x + self.rpe(self.rpe_lif(x), self.tmax, live_steps(self.rpe_lif))
        return x.flatten(3)


class SSA(nn.Module):
    """Spiking self-attention block: ``[T, B, D, N] -> [T, B, D, N]`` (the residual branch)."""

    def __init__(self, make: _LayerFactory, tmax: int, dim: int, heads: int, scale: float, attn_vth: float,
                 first: bool = False):
        super().__init__()
        require(dim % heads == 0, f"dim {dim} is not divisible by heads {heads}")
        self.tmax = tmax
        self.lif_in = make("block0_in" if first else "block_in")
        self.q, self.k, self.v = (ConvBN(dim, dim, group="qkv") for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = make("qkv"), make("qkv"), make("qkv")
        self.attn = SpikeAttention(heads, scale)
        self.attn_lif = make("attn", vth=attn_vth)
        self.proj = ConvBN(dim, dim, group="attn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, live = self.lif_in(x), live_steps(self.lif_in)
        q, k, v = (lif(conv(s, self.tmax, live)) for conv, lif in ((self.q, self.q_lif), (self.k, self.k_lif),
                                                                  (self.v, self.v_lif)))
        return self.proj(self.attn_lif(self.attn(q, k, v, self.tmax)), self.tmax, live_steps(self.attn_lif))


class MLP(nn.Module):
    def __init__(self, make: _LayerFactory, tmax: int, dim: int, hidden: int):
        super().__init__()
        self.tmax = tmax
        self.lif1, self.fc1 = make("mlp_in"), ConvBN(dim, hidden, group="mlp")
        self.lif2, self.fc2 = make("mlp_hidden"), ConvBN(hidden, dim, group="mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.lif1(x), self.tmax, live_steps(self.lif1))
        return self.fc2(self.lif2(h), self.tmax, live_steps(self.lif2))


class Block(nn.Module):
    def __init__(self, make, tmax, dim, heads, mlp_ratio, scale, attn_vth, first: bool = False):
        super().__init__()
        self.attn = SSA(make, tmax, dim, heads, scale, attn_vth, first)
        self.mlp = MLP(make, tmax, dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(nn.Module):
    """Spikformer-``depth``-``dim``. ``forward(img [B, C, H, W]) -> logits [B, num_classes]``.

    tmax: time steps (fixed T when ``dts=False``; the maximum when ``dts=True``).
    dts / init_steps / min_steps: DTSS gates on every LIF layer, starting with ``init_steps`` kept steps
        (default :func:`~spikevit.functional.dts.default_init_steps`: max(1, tmax // 2), the paper's best)
        and never fewer than ``min_steps`` (1: a layer keeps at least its first step, so no layer is
        disconnected).
    leak, vth, gamma, detach_reset: LIF settings (Eq. 1-2); ``attn_vth`` is the threshold of the LIF
        after Q K^T V (0.5 in Spikformer); ``scale`` the attention scale (0.125 in Spikformer).
    live_bn: in training, batch norm after a gated LIF takes its statistics from the kept steps only
        (the paper is silent; counting the masked, all-zero steps distorts the kept ones, e.g. a 4-step
        model with 2 kept steps then differs from a 2-step model).  ``False``: statistics over all steps.
    grouping: which group (sps, qkv, attn, mlp, head) each LIF is tagged with, for the mask loss and the
        reports: ``"paper"`` (DTS-SNN Eq. 7 / Sec. III-B, default) or ``"feeds"`` (see the module docstring).
    """

    def __init__(self, img_size: int = 32, in_chans: int = 3, num_classes: int = 10, depth: int = 4,
                 dim: int = 384, heads: int = 12, mlp_ratio: float = 4.0, patch_size: int = 4, tmax: int = 4,
                 dts: bool = False, init_steps: int | None = None, min_steps: int = 1, leak: float = 0.5,
                 vth: float = 1.0, attn_vth: float = 0.5, gamma: float = 1.0, scale: float = 0.125,
                 detach_reset: bool = False, live_bn: bool = True, grouping: str = DEFAULT_GROUPING):
        super().__init__()
        require(grouping in GROUPINGS, f"unknown layer grouping {grouping!r}; choose from {sorted(GROUPINGS)}")
        tmax = positive_int(tmax, "tmax")
        require(img_size % patch_size == 0, f"img_size {img_size} is not divisible by patch_size {patch_size}")
        init_steps = default_init_steps(tmax) if init_steps is None else init_steps
        require(0 <= init_steps <= tmax, f"init_steps must lie in [0, tmax={tmax}], got {init_steps}")
        self.tmax, self.dts, self.num_classes, self.grouping = tmax, dts, num_classes, grouping
        self.num_tokens = (img_size // patch_size) ** 2
        make = _LayerFactory(tmax, dts, init_steps, min_steps, leak, vth, gamma, detach_reset, GROUPINGS[grouping])
        self.sps = SPS(make, tmax, in_chans, dim, patch_size)
        self.blocks = nn.ModuleList([Block(make, tmax, dim, heads, mlp_ratio, scale, attn_vth, first=i == 0)
                                     for i in range(depth)])
        self.head_lif = make("head")
        self.last_step_logits: torch.Tensor | None = None
        self.head = nn.Linear(dim, num_classes)
        for m in self.spiking_layers().values():
            m.live_bn = live_bn

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [T, B, D, N]`` (residual stream after the last block)."""
        x = self.sps(img)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, D, N] -> [tmax, B, K]``: the classifier on token-averaged spikes at every step.

        Steps the head LIF skipped get the classifier's response to zero input (its bias).
        """
        s = self.head_lif(x).mean(-1)                                  # [T_h, B, D]
        out = self.head(s)                                             # [T_h, B, K]
        return _pad_steps(out, self.tmax, self.head.bias.view(1, 1, -1))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, D, N] -> [B, K]``: the mean over steps of :meth:`forward_steps`.

        In training the per-step logits ``[tmax, B, K]`` stay in ``self.last_step_logits`` (with their
        graph) for per-step losses such as TET; in eval mode the attribute is ``None``.
        """
        steps = self.forward_steps(x)
        self.last_step_logits = steps if self.training else None
        return steps.mean(0)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(img))

    # -- dynamic time steps ----------------------------------------------------------------------
    def spiking_layers(self) -> dict[str, DTSSLIF]:
        """Every DTSS-wrapped LIF layer by module name (forward order)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, DTSSLIF)}

    def time_steps(self) -> dict[str, int]:
        """T_l of every LIF layer."""
        return {n: m.steps() for n, m in self.spiking_layers().items()}

    def set_skip_masked(self, flag: bool) -> None:
        for m in self.spiking_layers().values():
            m.skip_masked = flag


def _spikformer(depth: int, dim: int, heads: int, patch: int, size: int, kw: dict) -> Spikformer:
    return Spikformer(**{"depth": depth, "dim": dim, "heads": heads, "img_size": size, "patch_size": patch, **kw})


@register_model
def spikformer_4_384(**kw) -> Spikformer:
    """CIFAR-10/100 (32x32, 64 tokens): 4 blocks, D 384, 12 heads, MLP x4; 9.3 M parameters."""
    return _spikformer(4, 384, 12, 4, 32, kw)


@register_model
def spikformer_8_384(**kw) -> Spikformer:
    """CIFAR: 8 blocks, D 384, 12 heads."""
    return _spikformer(8, 384, 12, 4, 32, kw)


@register_model
def spikformer_8_512(**kw) -> Spikformer:
    """ImageNet (224x224, patch 16, 196 tokens): 8 blocks, D 512, 8 heads, MLP x4."""
    return _spikformer(8, 512, 8, 16, 224, kw)


@register_model
def spikformer_8_768(**kw) -> Spikformer:
    """ImageNet: 8 blocks, D 768, 12 heads."""
    return _spikformer(8, 768, 12, 16, 224, kw)


@register_model
def spikformer_2_128(**kw) -> Spikformer:
    """Small CPU model for MNIST / CIFAR studies: 2 blocks, D 128, 4 heads."""
    return _spikformer(2, 128, 4, 4, 32, kw)


@register_model
def spikformer_1_64(**kw) -> Spikformer:
    """Tiny model for tests and smoke runs: 1 block, D 64, 2 heads."""
    return _spikformer(1, 64, 2, 4, 32, kw)
