"""Counting rules of :func:`spikevit.energy.profile`: one replaceable table per concern.

* :func:`classify` -- the kind of one operand: ``"spike"`` (only the values 0 and one constant c > 0),
  ``"graded"`` (non-negative integer multiples of one constant, at most ``max_level`` of it: multi-spike
  counts) or ``"analog"`` (anything else).
* :data:`PRODUCT_RULES` -- ``aten`` operator -> the products it performs (:class:`Matmul` /
  :class:`Conv`).  Covered: ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``mv``, ``addmv``, ``dot``,
  ``convolution`` (conv1d-3d and transposed convolutions) and the fused scaled-dot-product-attention
  kernels (two products each: ``Q K^T`` and ``A V``).  ``linear``, ``matmul``, ``@``, ``einsum`` and the
  math form of attention reach the table as the ``mm`` / ``bmm`` / ``addmm`` they decompose into.
* :data:`SPIKING_RULES` -- spiking module type -> ``(spikes, neurons, steps)`` of one call.

Counting one product with operands A, B (weights and activations alike):

* dense = the multiply count of the product (m k n for ``[m, k] @ [k, n]``, out elements x C_in/groups x
  kernel size for a convolution); bias additions are not counted.
* no spike / graded operand: ``macs = dense``, ``acs = 0``.
* exactly one spike / graded operand X: ``macs = 0``, ``acs = sum(op(W_X, 1))`` with ``W_X`` the 0/1 mask
  of X (spike) or its level X / c (graded), and the other operand replaced by ones: the accumulations an
  event-driven processor performs (nnz(x) x out_features for a linear layer; for a convolution the
  non-zero inputs in each output's receptive field, summed over outputs).
* two spike / graded operands (where the two rules meet; :func:`count`):

  - spike x spike: ``acs = sum(op(mask_A, mask_B))``, the AND count -- an accumulate happens only
    where both operands spike (the exact pair count of Spikformer's ``K^T V``);
  - spike x graded: the spike operand drives and the graded one is read as a weight matrix,
    ``acs = sum(op(mask_spike, 1))`` (Spikformer's ``Q (K^T V)``: nnz(Q) x d, the hand formula);
  - graded x graded: the cheaper of the two single-operand counts, ``min(sum(op(level_A, 1)),
    sum(op(1, level_B)))``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

aten = torch.ops.aten

KINDS = ("spike", "graded", "analog")

#: Largest level a graded operand may hold (a token-averaged spike map of a 16x16-patch ImageNet
#: Spikformer holds levels up to 196; a softmax output never passes the integer test).
DEFAULT_MAX_LEVEL = 256
_SAMPLE = 4096


@dataclass
class Operand:
    """One operand of a product: its kind, the constant c (spike / graded) and the tensor (or None
    when a fused kernel never materialises it, e.g. the attention matrix of flash attention)."""

    kind: str
    scale: float = 0.0
    tensor: torch.Tensor | None = None
    sparse: bool = False          # a sparse-layout tensor: only its stored entries are multiplied

    def _dense(self) -> torch.Tensor:
        return self.tensor.to_dense() if self.sparse else self.tensor

    def weight(self) -> torch.Tensor | None:
        """0/1 mask (spike), level (graded) or None (analog: every entry is processed)."""
        if self.kind == "analog" or self.tensor is None:
            return None
        if self.kind == "spike":
            # {0, c} / c is exactly {0, 1} in IEEE arithmetic: one pass instead of compare + convert
            return self._dense().to(_acc_dtype(self.tensor)) / self.scale if self.scale > 0 else self.mask()
        return torch.round(self._dense().to(_acc_dtype(self.tensor)) / self.scale)

    def mask(self) -> torch.Tensor | None:
        if self.kind == "analog" or self.tensor is None:
            return None
        return self.nonzero()

    def nonzero(self) -> torch.Tensor | None:
        """0/1 mask of the non-zero entries, whatever the kind (None when never materialised)."""
        if self.tensor is None:
            return None
        return (self._dense() != 0).to(_acc_dtype(self.tensor))


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Masks and levels are small integers (exact in float32); every sum over them is taken in float64."""
    return torch.float32


def _tolerance(dtype: torch.dtype) -> float:
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3


def _integer_multiples(values: torch.Tensor, c: float, max_level: int, tol: float) -> bool:
    q = values / c
    r = torch.round(q)
    return bool(((q - r).abs() <= tol).all()) and float(r.max()) <= max_level


def classify(x: torch.Tensor, max_level: int = DEFAULT_MAX_LEVEL) -> Operand:
    """Kind of ``x`` (any shape, any layout).  An all-zero tensor is a spike tensor (no event at all)."""
    if x.layout != torch.strided:                            # sparse COO / CSR: judged by the stored values
        op = classify(x.values(), max_level)
        return Operand(op.kind, op.scale, x, sparse=True)
    if x.dtype == torch.bool:
        return Operand("spike", 1.0, x)
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)):
        return Operand("analog", 0.0, x)
    if x.numel() == 0:
        return Operand("spike", 0.0, x)
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0:
        return Operand("analog", 0.0, x)
    if hi == 0:
        return Operand("spike", 0.0, x)
    flat = x.reshape(-1).float()
    if float(torch.dot(flat, hi - flat)) == 0.0:      # every term x (hi - x) >= 0: zero iff x in {0, hi}
        return Operand("spike", hi, x)
    nz = x[x != 0].float()
    tol = _tolerance(x.dtype)
    cmin = float(nz.min())
    sample = nz[:_SAMPLE]
    # the unit c is the smallest non-zero value or an integer fraction of it (e.g. counts {2, 3}: c = 1)
    for div in range(1, 9):
        c = cmin / div
        if hi / c > max_level + tol:
            break
        if _integer_multiples(sample, c, max_level, tol) and _integer_multiples(nz, c, max_level, tol):
            return Operand("graded", c, x)
    return Operand("analog", 0.0, x)


# ----------------------------------------------------------------------------------------------------------
# products
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Matmul:
    """``a [..., m, k] @ b [..., k, n]`` (batch dims broadcast).  ``a``/``b`` may be None (never
    materialised: analog) -- then ``a_shape``/``b_shape`` give the shape."""

    a: torch.Tensor | None
    b: torch.Tensor | None
    a_shape: tuple
    b_shape: tuple
    label: str = ""

    def dense(self) -> int:
        batch = torch.broadcast_shapes(tuple(self.a_shape[:-2]), tuple(self.b_shape[:-2]))
        m, k = self.a_shape[-2], self.a_shape[-1]
        n = self.b_shape[-1]
        return int(math.prod(batch)) * m * k * n

    def accumulates(self, wa: torch.Tensor | None, wb: torch.Tensor | None) -> int:
        """sum(op(wa, wb)) with None standing for ones: sum_k colsum(wa)_k rowsum(wb)_k over the batch."""
        m, k = self.a_shape[-2], self.a_shape[-1]
        n = self.b_shape[-1]
        batch = torch.broadcast_shapes(tuple(self.a_shape[:-2]), tuple(self.b_shape[:-2]))
        ref = wa if wa is not None else wb
        f64 = torch.float64                                   # exact integer sums on every device
        ca = wa.sum(-2, dtype=f64) if wa is not None else torch.full((k,), float(m), dtype=f64, device=ref.device)
        rb = wb.sum(-1, dtype=f64) if wb is not None else torch.full((k,), float(n), dtype=f64, device=ref.device)
        prod = ca * rb
        total = torch.broadcast_to(prod, (*batch, k)).sum() if prod.shape[:-1] != batch else prod.sum()
        return round(float(total))


@dataclass
class Conv:
    """``aten.convolution(x, w, ...)``: x ``[N, C_in, *S]`` (or unbatched), w ``[C_out, C_in/g, *K]``."""

    x: torch.Tensor
    w: torch.Tensor
    stride: list
    padding: list
    dilation: list
    transposed: bool
    output_padding: list
    groups: int
    out: torch.Tensor
    label: str = ""

    def dense(self) -> int:
        if self.transposed:  # every input element meets every kernel tap of its group's output channels
            cout_per_group = self.w.shape[1]
            return int(self.x.numel()) * cout_per_group * int(math.prod(self.w.shape[2:]))
        return int(self.out.numel()) * int(self.w.shape[1]) * int(math.prod(self.w.shape[2:]))

    def _conv(self, x, w):
        return torch.convolution(x, w, None, self.stride, self.padding, self.dilation, self.transposed,
                                 self.output_padding, self.groups)

    def accumulates(self, wx: torch.Tensor | None, ww: torch.Tensor | None) -> int:
        if ww is None and wx is not None and not self.transposed:
            # one-channel form: per group, channel-summed input convolved with a ones kernel, x C_out/g
            g = self.groups
            spatial = wx.shape[-(self.w.dim() - 2):]
            lead = wx.shape[: wx.dim() - self.w.dim() + 1]            # (N,) or ()
            xs = wx.reshape(*lead, g, wx.shape[len(lead)] // g, *spatial).sum(len(lead) + 1)
            ones = torch.ones(g, 1, *self.w.shape[2:], dtype=wx.dtype, device=wx.device)
            y = torch.convolution(xs, ones.to(xs.dtype), None, self.stride, self.padding, self.dilation, False,
                                  self.output_padding, g)
            return round(float(y.sum(dtype=torch.float64))) * (self.w.shape[0] // g)
        ref = wx if wx is not None else ww
        x = wx if wx is not None else torch.ones(self.x.shape, dtype=ref.dtype, device=ref.device)
        w = ww if ww is not None else torch.ones(self.w.shape, dtype=ref.dtype, device=ref.device)
        return round(float(self._conv(x, w).sum(dtype=torch.float64)))


def count(prod, kinds: list[Operand], dense: int) -> tuple[int, int, int]:
    """``(macs, acs, nonzero_macs)`` of one product whose operands have ``kinds`` (module docstring).

    ``nonzero_macs``: the MACs whose first operand (the activation: input of a linear layer or a
    convolution, left factor of a matmul) is non-zero -- what a zero-skipping accelerator performs on
    analog operands (the LCA workload's ``M Mhat`` term); 0 for event-driven products.  A sparse-layout
    operand is charged for its stored entries only (``macs`` too).
    """
    events = [k.kind for k in kinds]
    if any(k.kind == "spike" and k.scale == 0 and k.tensor is not None for k in kinds):
        return 0, 0, 0                                     # an all-zero operand: nothing to accumulate
    if events == ["analog", "analog"]:
        stored = [k.nonzero() if k.sparse else None for k in kinds]
        macs = dense if stored == [None, None] else prod.accumulates(*stored)
        first = kinds[0].nonzero()
        nonzero = macs if first is None else prod.accumulates(first, stored[1])
        return macs, 0, nonzero
    if "analog" in events:
        return 0, prod.accumulates(*(k.weight() for k in kinds)), 0
    if events == ["spike", "spike"]:
        return 0, prod.accumulates(kinds[0].mask(), kinds[1].mask()), 0
    if "spike" in events:
        return 0, prod.accumulates(*(k.mask() if k.kind == "spike" else None for k in kinds)), 0
    return 0, min(prod.accumulates(kinds[0].weight(), None), prod.accumulates(None, kinds[1].weight())), 0


def _mm(args, kwargs, out):
    a, b = args[0], args[1]
    return [Matmul(a, b, tuple(a.shape), tuple(b.shape))]


def _addmm(args, kwargs, out):  # bias (args[0]) is not a product
    a, b = args[1], args[2]
    return [Matmul(a, b, tuple(a.shape), tuple(b.shape))]


def _mv(args, kwargs, out):
    a, v = args[0], args[1]
    return [Matmul(a, v.unsqueeze(-1), tuple(a.shape), (v.shape[0], 1))]


def _addmv(args, kwargs, out):
    a, v = args[1], args[2]
    return [Matmul(a, v.unsqueeze(-1), tuple(a.shape), (v.shape[0], 1))]


def _dot(args, kwargs, out):
    a, b = args[0], args[1]
    return [Matmul(a.unsqueeze(0), b.unsqueeze(-1), (1, a.shape[0]), (b.shape[0], 1))]


def _convolution(args, kwargs, out):
    x, w = args[0], args[1]
    stride, padding, dilation, transposed, output_padding, groups = args[3:9]
    return [Conv(x, w, list(stride), list(padding), list(dilation), bool(transposed), list(output_padding),
                 int(groups), out)]


def _sdpa(args, kwargs, out):
    """Fused attention kernels: Q K^T (q ``[..., L, E]``, k ``[..., S, E]``) and A V (A ``[..., L, S]``
    is never materialised and is softmax output: analog).  Masks are ignored (dense count)."""
    q, k, v = args[0], args[1], args[2]
    if k.dim() >= 3 and q.dim() >= 3 and k.shape[-3] != q.shape[-3] and q.shape[-3] % k.shape[-3] == 0:
        rep = q.shape[-3] // k.shape[-3]                          # grouped-query attention
        k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
    kt = k.transpose(-2, -1)
    a_shape = (*q.shape[:-1], k.shape[-2])
    return [Matmul(q, kt, tuple(q.shape), tuple(kt.shape), "q@k^T"),
            Matmul(None, v, a_shape, tuple(v.shape), "attn@v")]


def _sdpa_ops() -> list:
    names = ["_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable"]
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


#: aten operator (overload packet) -> rule(args, kwargs, out) -> list of products.  Replace or extend freely.
PRODUCT_RULES: dict = {
    aten.mm: _mm, aten.bmm: _mm, aten.addmm: _addmm, aten.baddbmm: _addmm, aten.mv: _mv, aten.addmv: _addmv,
    aten.dot: _dot, aten.convolution: _convolution, aten._sparse_addmm: _addmm, **{op: _sdpa for op in _sdpa_ops()},
}


def default_op_name(packet, product) -> str:
    """Operator label when no functional call named it (e.g. a product reached from C++)."""
    if isinstance(product, Conv):
        d = product.w.dim() - 2
        return f"conv_transpose{d}d" if product.transposed else f"conv{d}d"
    if packet in _sdpa_ops():
        return "scaled_dot_product_attention"
    return packet.__name__.split(".")[-1]


# ----------------------------------------------------------------------------------------------------------
# spiking modules
# ----------------------------------------------------------------------------------------------------------
def _binary_output(module, args, out) -> tuple[float, float, int]:
    """A multi-step neuron ``[T, B, ...] -> [T, B, ...]`` emitting one spike per non-zero output."""
    steps = int(out.shape[0]) if out.dim() else 1
    neurons = out.numel() // steps if steps else int(math.prod(out.shape[1:]))
    return float((out != 0).sum()), float(neurons), steps


def _gated_lif(module, args, out) -> tuple[float, float, int]:
    """DTSS-gated LIF: output ``[T_l, B, ...]`` (masked steps skipped) or ``[tmax, B, ...]`` (masked form,
    the gated-off steps are zero and not executed)."""
    spikes, _, steps = _binary_output(module, args, out)
    neurons = out[0].numel() if out.shape[0] else float(math.prod(out.shape[1:]))
    return spikes, float(neurons), int(module.steps()) if out.shape[0] == module.tmax else steps


def _last_stats(module, args, out) -> tuple[float, float, int]:
    """Few-spike neurons (SI-exp, few-spike activations): the module keeps ``last_spikes`` /
    ``last_neurons`` of its last call; ``steps`` is its K."""
    return float(module.last_spikes), float(module.last_neurons), int(getattr(module, "steps", 1))


def extra_spike_records(module) -> list[tuple[str, str, float, float, int]]:
    """Second spiking populations inside one module: ``(suffix, kind, spikes, neurons, steps)``.

    The SIT spiking softmax with quantised SI-norm (``norm_steps``) reports its SI-norm neurons here
    (``<module>.si_norm``): output multiples of 1 / norm_steps, one spike per unit.
    """
    spikes = getattr(module, "last_norm_spikes", None)
    if spikes is None:
        return []
    steps = int(getattr(module, "norm_steps", 0) or 0)
    return [("si_norm", f"SI-norm (K={steps})", float(spikes), float(module.last_neurons), steps)]


def _spiking_rules() -> dict:
    from spikevit.nn.dtss import DTSSLIF
    from spikevit.nn.lif import LIF
    from spikevit.nn.spiking_softmax import FewSpikeActivation, SpikingSoftmax

    return {DTSSLIF: _gated_lif, LIF: _binary_output, SpikingSoftmax: _last_stats,
            FewSpikeActivation: _last_stats}


def _sj_node(module, args, out) -> tuple[float, float, int]:
    if getattr(module, "step_mode", "s") == "m":
        return _binary_output(module, args, out)
    return float((out != 0).sum()), float(out.numel()), 1


#: spiking module type -> rule(module, args, out) -> (spikes, neurons, steps); subclasses match too.
#: Any other module with ``last_spikes`` and ``last_neurons`` attributes is reported through ``_last_stats``.
SPIKING_RULES: dict[type, Callable] = _spiking_rules()


def spiking_rule(module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in SPIKING_RULES:
            return SPIKING_RULES[cls]
        if cls.__name__ == "BaseNode" and cls.__module__.startswith("spikingjelly."):
            return _sj_node                     # SpikingJelly neurons, recognised without importing it
    if hasattr(module, "last_spikes") and hasattr(module, "last_neurons"):
        return _last_stats
    return None
