"""Attention blocks as SIT-conversion sees them: found in any model (:func:`find_attention`), made explicit
(:class:`ExplicitMultiheadAttention` for ``nn.MultiheadAttention``) and wrapped (:class:`SpikingAttention`),
whose forward runs the block's own code under a ``TorchFunctionMode`` that routes every softmax (and
``F.scaled_dot_product_attention``, decomposed) through the block's spiking softmax and, at
``spiking >= "attention"``, computes ``Q K^T`` and ``A V`` on the spikes of Q's and V's neurons.
:func:`spikevit.conversion.convert` puts these pieces together.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from spikevit.errors import SpikevitError, require
from spikevit.nn.spike_coding import spike_linear, spike_matmul_left, spike_matmul_right
from spikevit.nn.spiking_softmax import SpikingSoftmax

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax}
_SDPA = {F.scaled_dot_product_attention}
_DROPOUT = {F.dropout, torch.dropout, torch.Tensor.dropout} if hasattr(torch.Tensor, "dropout") else {F.dropout, torch.dropout}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}


# ----------------------------------------------------------------------------------------------------------
# explicit multi-head attention (replaces nn.MultiheadAttention)
# ----------------------------------------------------------------------------------------------------------
class ExplicitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` written out with an explicit ``softmax`` (same parameters, same outputs).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (out, weights | None)`` with the shapes of
    ``nn.MultiheadAttention`` (``[B, L, E]`` if ``batch_first`` else ``[L, B, E]``).
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        require(mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn,
                "nn.MultiheadAttention with add_bias_kv / add_zero_attn cannot be converted (not supported)")
        self.embed_dim, self.num_heads = mha.embed_dim, mha.num_heads
        self.head_dim = mha.head_dim
        self.batch_first = mha.batch_first
        self.dropout = mha.dropout
        self.same_dim = mha._qkv_same_embed_dim
        if self.same_dim:
            self.in_proj_weight = mha.in_proj_weight
        else:
            self.q_proj_weight, self.k_proj_weight, self.v_proj_weight = (
                mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.in_encoder: nn.Module | None = None        # SpikeEncoder of the input ("all" level)

    def _in_proj_weight(self) -> torch.Tensor:
        if self.same_dim:
            return self.in_proj_weight
        return torch.cat((self.q_proj_weight, self.k_proj_weight, self.v_proj_weight))

    def _qkv(self, x):
        """Self-attention: one projection of ``x [B, L, E]`` -> q, k, v (spike-coded input if encoded)."""
        w, b = self._in_proj_weight(), self.in_proj_bias
        code = self.in_encoder.encode(x) if self.in_encoder is not None else None
        y = spike_linear(code, w, b) if code is not None else F.linear(x, w, b)
        return y.chunk(3, dim=-1)

    def _proj(self, x, i):
        E = self.embed_dim
        if self.same_dim:
            w = self.in_proj_weight[i * E:(i + 1) * E]
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * E:(i + 1) * E]
        return F.linear(x, w, b)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        B, L, _ = query.shape
        S = key.shape[1]
        H, D = self.num_heads, self.head_dim
        if query is key and key is value and (self.same_dim or self.in_encoder is not None):
            q, k, v = self._qkv(query)
        else:
            require(self.in_encoder is None, "spike-coded inputs are supported for self-attention only "
                    "(query is key is value)")
            q, k, v = (self._proj(t, i) for i, t in enumerate((query, key, value)))
        q = q.reshape(B, L, H, D).transpose(1, 2)
        k = k.reshape(B, S, H, D).transpose(1, 2)
        v = v.reshape(B, S, H, D).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(D))   # [B, H, L, S]
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            m = attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(B, H, L, S)
            scores = scores.masked_fill(m, float("-inf")) if m.dtype == torch.bool else scores + m
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(B, 1, 1, S)
            scores = scores.masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool else scores + kpm
        attn = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(B, L, self.embed_dim)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attn.mean(1) if average_attn_weights else attn
        return out, weights


def explicit_mha(mha: nn.MultiheadAttention, check: bool = True, atol: float = 1e-4) -> ExplicitMultiheadAttention:
    """Build an :class:`ExplicitMultiheadAttention` sharing ``mha``'s parameters; verify it numerically."""
    exp = ExplicitMultiheadAttention(mha)
    if check:
        p = next(mha.parameters())
        g = torch.Generator().manual_seed(0)
        shape = (2, 5, mha.embed_dim) if mha.batch_first else (5, 2, mha.embed_dim)
        xq = torch.randn(shape, generator=g).to(p)
        was = mha.training
        mha.eval()
        exp.eval()
        with torch.no_grad():
            ref, _ = mha(xq, xq, xq, need_weights=False)
            got, _ = exp(xq, xq, xq, need_weights=False)
        mha.train(was)
        exp.train(was)
        err = float((ref - got).abs().max())
        if not err <= atol * max(1.0, float(ref.abs().max())):
            raise SpikevitError(f"explicit rewrite of nn.MultiheadAttention disagrees with it (max error {err:.3g})")
    return exp


# ----------------------------------------------------------------------------------------------------------
# routing softmax / SDPA through the spiking softmax
# ----------------------------------------------------------------------------------------------------------
def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _AttentionMode(TorchFunctionMode):
    """Inside one attention module's forward: softmax -> owner's softmax, SDPA decomposed, matmuls counted."""

    def __init__(self, owner: SpikingAttention):
        super().__init__()
        self.owner = owner
        self.attn_tensors: list[torch.Tensor] = []      # outputs of the softmax (and dropout of them)

    def _is_attn(self, t) -> bool:
        return any(t is a for a in self.attn_tensors)

    def _softmax(self, x, dim, dtype=None):
        out = self.owner.apply_softmax(x if dtype is None else x.to(dtype), dim)
        self.attn_tensors.append(out)
        return out

    def _matmul(self, func, a, b, args, kwargs):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() >= 2 and b.dim() >= 2):
            return func(*args, **kwargs)
        kind = "av" if self._is_attn(a) else "qk"
        out = self._product(kind, a, b) if self.owner.spiking_qkv else func(*args, **kwargs)
        self.owner.record_matmul(kind, out.numel() * a.shape[-1])
        return out

    def _product(self, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The attention products with Q, K, V out of spiking neurons (``spiking`` >= "attention").

        ``qk``: ``a = Q [*, L, D]`` (spikes), ``b = K^T [*, D, S]`` (K's neurons' decoded value, held as the
        synaptic operand);  ``av``: ``a = A [*, L, S]`` (spiking softmax), ``b = V [*, S, D]`` (spikes).
        """
        enc = self.owner.encoders
        if kind == "qk":
            k = b.transpose(-2, -1)
            k_code = enc["k"].encode(k)
            k_hat = k if k_code is None else k_code.decode()
            q = enc["q"].encode(a)
            if q is None:                                  # calibrating
                return torch.matmul(a, k_hat.transpose(-2, -1))
            return spike_matmul_left(q, k_hat.transpose(-2, -1))
        v = enc["v"].encode(b)
        return torch.matmul(a, b) if v is None else spike_matmul_right(a, v)

    def _sdpa(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        L, S = q.shape[-2], k.shape[-2]
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            rep = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        kt = k.transpose(-2, -1)
        scores = (self._product("qk", q, kt) if self.owner.spiking_qkv else torch.matmul(q, kt)) * scale
        self.owner.record_matmul("qk", scores.numel() * q.shape[-1])
        if is_causal:
            causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        attn = self.owner.apply_softmax(scores, -1)
        if dropout_p > 0:
            attn = F.dropout(attn, dropout_p)
        out = self._product("av", attn, v) if self.owner.spiking_qkv else torch.matmul(attn, v)
        self.owner.record_matmul("av", out.numel() * attn.shape[-1])
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAX:
            return self._softmax(args[0], _arg(args, kwargs, 1, "dim"), kwargs.get("dtype"))
        if func in _SDPA:
            return self._sdpa(*args, **kwargs)
        if func in _MATMUL:
            return self._matmul(func, args[0], args[1], args, kwargs)
        out = func(*args, **kwargs)
        if func in _DROPOUT and self._is_attn(args[0]):
            self.attn_tensors.append(out)
        return out


class SpikingAttention(nn.Module):
    """Wraps one attention module; its softmax runs as ``spiking_softmax`` (or exactly, if ``None``).

    Statistics of the last forward: ``macs`` = ``{"qk": ..., "av": ...}`` multiply-accumulates of the
    attention products; the spiking softmax keeps its own spike counts.
    """

    def __init__(self, inner: nn.Module, spiking_softmax: SpikingSoftmax | None, index: int,
                 encoders: nn.ModuleDict | None = None):
        super().__init__()
        self.inner = inner
        self.spiking_softmax = spiking_softmax
        self.index = index
        self.encoders = encoders          # {"q", "k", "v"}: SpikeEncoder (spiking >= "attention"), else None
        self.macs = {"qk": 0, "av": 0}
        self.softmax_calls = 0

    @property
    def converted(self) -> bool:
        return self.spiking_softmax is not None

    @property
    def spiking_qkv(self) -> bool:
        return self.encoders is not None

    def apply_softmax(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        self.softmax_calls += 1
        if self.spiking_softmax is None:
            return torch.softmax(x, dim)
        if dim not in (-1, x.dim() - 1):
            return self.spiking_softmax(x.transpose(dim, -1)).transpose(dim, -1)
        return self.spiking_softmax(x)

    def record_matmul(self, kind: str, macs: int) -> None:
        self.macs[kind] += int(macs)

    def forward(self, *args, **kwargs):
        self.macs = {"qk": 0, "av": 0}
        self.softmax_calls = 0
        with _AttentionMode(self):
            return self.inner(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"index={self.index}, converted={self.converted}, spiking_qkv={self.spiking_qkv}"


# ----------------------------------------------------------------------------------------------------------
# finding attention modules
# ----------------------------------------------------------------------------------------------------------
_SOURCE_CACHE: dict[type, bool] = {}


def _calls_softmax(cls: type) -> bool:
    """Does ``cls.forward`` (own source, not inherited from torch.nn) call softmax or SDPA?"""
    if cls not in _SOURCE_CACHE:
        fwd = getattr(cls, "forward", None)
        ok = False
        if fwd is not None and not cls.__module__.startswith("torch."):
            try:
                src = inspect.getsource(fwd)
            except (OSError, TypeError):
                src = ""
            ok = ".softmax(" in src or "softmax(" in src.replace("log_softmax(", "") or \
                "scaled_dot_product_attention(" in src
        _SOURCE_CACHE[cls] = ok
    return _SOURCE_CACHE[cls]


def find_attention(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Attention modules of ``model`` in module order: ``[(qualified name, module)]``.

    A module counts if it is an ``nn.MultiheadAttention`` or an already-converted
    :class:`SpikingAttention`, or if its own ``forward`` calls softmax / scaled-dot-product attention;
    the outermost such module is taken (nothing inside a found one is searched).
    """
    found: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, mod: nn.Module) -> None:
        for name, child in mod.named_children():
            q = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (nn.MultiheadAttention, SpikingAttention, ExplicitMultiheadAttention)) or \
                    (not isinstance(child, (nn.Softmax, SpikingSoftmax)) and _calls_softmax(type(child))):
                found.append((q, child))
            else:
                visit(q, child)

    visit("", model)
    return found


def attention_modules(model: nn.Module) -> list[SpikingAttention]:
    """The :class:`SpikingAttention` wrappers of a converted model, in block order."""
    return [m for m in model.modules() if isinstance(m, SpikingAttention)]
