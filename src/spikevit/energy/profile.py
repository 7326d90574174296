"""One measurement engine: an operator-level profile of operations, spikes and energy for any model.

``profile(model, *inputs, **kwargs)`` runs ``model(*inputs, **kwargs)`` once without gradients under a
``TorchDispatchMode`` that sees every ``aten`` product the forward pass performs -- module calls and
functional calls alike (``F.linear``, ``torch.matmul``, ``@``, ``einsum``, ``scaled_dot_product_attention``,
convolutions) -- and counts each with the rules of :mod:`spikevit.energy.rules`: every operand is
classified as a spike, graded or analog tensor; products with a spike / graded operand cost accumulates
(ACs, the events actually processed), the others multiply-accumulates (MACs).  A ``TorchFunctionMode``
names each product by the functional call it came from (``"linear"``, ``"matmul"``, ``"conv2d"``, ...) and
module forward hooks attribute it to the innermost module it ran in.  Spiking modules
(:data:`~spikevit.energy.rules.SPIKING_RULES`) report their spikes and neurons from the same run.

    p = profile(model, images)
    p.macs, p.acs                     # totals (ints)
    p.ops                             # one OpRecord per counted product
    p.energy("sit45nm")               # joules: macs e_mac + acs e_ac + (2 macs + acs) e_flop
    p.by_module(), p.by_operator(), p.purity(), p.spiking_rows()
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from spikevit.energy import rules as _rules
from spikevit.energy.models import EnergyModel, get_energy_model
from spikevit.errors import require


@dataclass
class OpRecord:
    """One counted product.  ``operands``: kind per tensor operand (A, B) -- for a convolution (input,
    weight); ``dense``: the multiply count of the product whatever its operands (FLOPs_ANN)."""

    module: str
    op: str
    operands: tuple
    macs: int
    acs: int
    dense: int
    shapes: tuple = ()
    aten: str = ""
    part: str = ""
    calls: int = 1
    sources: tuple = ()       # per operand: the spiking module (or "<module>:softmax") that produced it
    zero_checks: int = 0      # elements of spike / graded operands that enter the product (not outputs of
                              # another product): one zero check each on event-driven hardware
    nonzero_macs: int = 0     # MACs whose first (activation) operand is non-zero: zero-skipping hardware
    constant: bool = False    # no operand depends on the model's inputs (e.g. a gate mask from parameters)

    @property
    def block(self) -> str:
        return block_of(self.module)

    def as_row(self) -> dict:
        return {"module": self.module, "op": self.op + (f" ({self.part})" if self.part else ""),
                "operands": " x ".join(self.operands), "macs": self.macs, "acs": self.acs, "dense": self.dense,
                "calls": self.calls, "shapes": " x ".join("[" + ",".join(map(str, s)) + "]" for s in self.shapes)}


@dataclass
class SpikeRecord:
    """Spikes of one spiking module: ``spikes`` over all its steps and calls, ``neurons`` (neuron
    instances x batch, summed over calls), ``steps`` executed per call (the last call's)."""

    module: str
    kind: str
    spikes: float = 0.0
    neurons: float = 0.0
    steps: int = 0
    calls: int = 0

    @property
    def spikes_per_neuron(self) -> float:
        return self.spikes / self.neurons if self.neurons else 0.0


def snn_flops(ann_flops: float, spikes: float, neurons: float) -> float:
    """FLOPs_SNN = FLOPs_ANN * spikes / neurons (SIT-conversion Eq. 17, DTS Sec. IV-E)."""
    return ann_flops * (spikes / neurons) if neurons else 0.0


def block_of(name: str) -> str:
    """Block of a qualified module name: its first component, plus the next one if that is an index
    (``blocks.3.attn.q.conv`` -> ``blocks.3``, ``sps.convs.1`` -> ``sps``, ``head`` -> ``head``)."""
    if not name:
        return "(model)"
    parts = name.split(".")
    if len(parts) > 1 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


@dataclass
class Profile:
    """The result of :func:`profile` (or of adding several: ``p1 + p2`` sums counts, e.g. over batches)."""

    ops: list[OpRecord] = field(default_factory=list)
    spiking: OrderedDict[str, SpikeRecord] = field(default_factory=OrderedDict)
    samples: int = 0
    module_order: list[str] = field(default_factory=list)
    output: object = field(default=None, repr=False)   # what the profiled call returned (not kept by ``+``)

    def __repr__(self) -> str:
        return (f"Profile(samples={self.samples}, macs={self.macs:,}, acs={self.acs:,}, products={len(self.ops)}, "
                f"spiking_layers={len(self.spiking)})")

    # -- totals ---------------------------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        return int(sum(r.macs for r in self.ops))

    @property
    def acs(self) -> int:
        return int(sum(r.acs for r in self.ops))

    @property
    def nonzero_macs(self) -> int:
        """MACs with a non-zero activation operand (what zero-skipping hardware performs of ``macs``)."""
        return int(sum(r.nonzero_macs for r in self.ops))

    @property
    def dense(self) -> int:
        """Multiplies of every counted product as if nothing were a spike (FLOPs_ANN of this run)."""
        return int(sum(r.dense for r in self.ops))

    @property
    def spikes(self) -> float:
        return float(sum(s.spikes for s in self.spiking.values()))

    @property
    def neurons(self) -> float:
        return float(sum(s.neurons for s in self.spiking.values()))

    def spiking_activity(self) -> float:
        """Spikes per neuron per executed step over all spiking modules (fraction)."""
        den = sum(s.neurons * max(s.steps, 1) for s in self.spiking.values())
        return self.spikes / den if den else 0.0

    def snn_flops(self) -> float:
        """FLOPs_SNN = FLOPs_ANN x spikes / neurons (SIT Eq. 17, DTS Sec. IV-E) with the run's totals."""
        return snn_flops(self.dense, self.spikes, self.neurons)

    def energy(self, model_name: str | EnergyModel = "sit45nm", **overrides) -> float:
        """Joules of the counted products: ``macs e_mac + acs e_ac + (2 macs + acs) e_flop``."""
        em = model_name.with_overrides(**overrides) if isinstance(model_name, EnergyModel) else \
            get_energy_model(model_name, **overrides)
        return self.macs * em.e_mac + self.acs * em.e_ac + (2 * self.macs + self.acs) * em.e_flop

    # -- combining ------------------------------------------------------------------------------------------
    def __add__(self, other: Profile) -> Profile:
        out = Profile(samples=self.samples + other.samples,
                      module_order=self.module_order or other.module_order)
        out.ops = _merge_ops(self.ops + other.ops)
        for src in (self.spiking, other.spiking):
            for name, s in src.items():
                t = out.spiking.setdefault(name, SpikeRecord(name, s.kind))
                t.spikes += s.spikes
                t.neurons += s.neurons
                t.steps = s.steps
                t.calls += s.calls
        return out

    def merged(self) -> Profile:
        """Same totals, one record per (module, op, part, operand kinds)."""
        p = Profile(ops=_merge_ops(self.ops), spiking=self.spiking, samples=self.samples,
                    module_order=self.module_order)
        return p

    # -- tables ---------------------------------------------------------------------------------------------
    def op_rows(self) -> list[dict]:
        return [r.as_row() for r in _merge_ops(self.ops)]

    def by_module(self, energy_model: str | None = None) -> list[dict]:
        """Per module: MACs, ACs, dense multiplies, spikes and neurons (if a spiking module)."""
        em = get_energy_model(energy_model) if energy_model else None
        rows: OrderedDict[str, dict] = OrderedDict()
        for name in self._ordered_modules():
            rows[name] = {"module": name, "macs": 0, "acs": 0, "dense": 0, "spikes": None, "neurons": None}
        for r in self.ops:
            d = rows.setdefault(r.module, {"module": r.module, "macs": 0, "acs": 0, "dense": 0, "spikes": None,
                                           "neurons": None})
            d["macs"] += r.macs
            d["acs"] += r.acs
            d["dense"] += r.dense
        for name, s in self.spiking.items():
            d = rows.setdefault(name, {"module": name, "macs": 0, "acs": 0, "dense": 0})
            d["spikes"], d["neurons"], d["kind"] = s.spikes, s.neurons, s.kind
        out = [d for d in rows.values() if d["dense"] or d.get("spikes") is not None]
        if em is not None:
            for d in out:
                d["energy_J"] = d["macs"] * em.e_mac + d["acs"] * em.e_ac + (2 * d["macs"] + d["acs"]) * em.e_flop
        return out

    def by_operator(self) -> list[dict]:
        """Per operator name (``linear``, ``conv2d``, ``matmul`` ...) and operand kinds."""
        rows: OrderedDict[tuple, dict] = OrderedDict()
        for r in self.ops:
            key = (r.op, r.operands)
            d = rows.setdefault(key, {"op": r.op, "operands": " x ".join(r.operands), "calls": 0, "macs": 0,
                                      "acs": 0, "dense": 0})
            d["calls"] += r.calls
            d["macs"] += r.macs
            d["acs"] += r.acs
            d["dense"] += r.dense
        return list(rows.values())

    def purity(self) -> list[dict]:
        """Spike purity per block: for each product, the kinds of its operands.

        One row per (block, module, op): ``operands`` such as ``spike x analog``; ``event_driven`` is True
        when at least one operand is a spike / graded tensor (the product costs no MACs).  Constant
        products (no operand depends on the inputs, e.g. a gate mask computed from parameters) are left
        out: they are not part of the data path (their counts stay in the totals).
        """
        rows = []
        for r in _merge_ops(self.ops):
            if r.constant:
                continue
            rows.append({"block": r.block, "module": r.module, "op": r.op + (f" ({r.part})" if r.part else ""),
                         "operands": " x ".join(r.operands), "event_driven": r.macs == 0 and r.dense > 0,
                         "macs": r.macs, "acs": r.acs})
        return rows

    def purity_summary(self) -> list[dict]:
        """Per block: products, how many are event-driven, and the share of dense work on spike operands."""
        blocks: OrderedDict[str, dict] = OrderedDict()
        for r in self.ops:
            if r.constant:
                continue
            d = blocks.setdefault(r.block, {"block": r.block, "products": set(), "event_driven": set(),
                                            "dense": 0, "dense_event_driven": 0, "macs": 0, "acs": 0})
            key = (r.module, r.op, r.part)
            d["products"].add(key)
            if r.macs == 0 and r.dense > 0:
                d["event_driven"].add(key)
                d["dense_event_driven"] += r.dense
            d["dense"] += r.dense
            d["macs"] += r.macs
            d["acs"] += r.acs
        out = []
        for d in blocks.values():
            out.append({"block": d["block"], "products": len(d["products"]),
                        "event_driven_products": len(d["event_driven"]),
                        "event_driven_work_percent": 100.0 * d["dense_event_driven"] / d["dense"] if d["dense"]
                        else 0.0, "macs": d["macs"], "acs": d["acs"]})
        return out

    def spiking_rows(self) -> list[dict]:
        n = max(self.samples, 1)
        return [{"module": s.module, "kind": s.kind, "steps": s.steps, "spikes_per_sample": s.spikes / n,
                 "neurons_per_sample": s.neurons / n, "spikes_per_neuron": s.spikes_per_neuron}
                for s in self.spiking.values()]

    def summary(self, energy_model: str | None = None) -> dict:
        out = {"samples": self.samples, "macs": self.macs, "acs": self.acs, "nonzero_macs": self.nonzero_macs,
               "dense": self.dense,
               "spikes": self.spikes, "neurons": self.neurons, "snn_flops": self.snn_flops(),
               "products": len(self.ops)}
        if energy_model:
            out["energy_J"] = self.energy(energy_model)
            out["energy_model"] = energy_model
        return out

    def _ordered_modules(self) -> list[str]:
        return list(self.module_order)


def _merge_ops(ops: list[OpRecord]) -> list[OpRecord]:
    merged: OrderedDict[tuple, OpRecord] = OrderedDict()
    for r in ops:
        key = (r.module, r.op, r.part, r.operands, r.aten, r.constant)
        t = merged.get(key)
        if t is None:
            merged[key] = OpRecord(r.module, r.op, r.operands, r.macs, r.acs, r.dense, r.shapes, r.aten, r.part,
                                   r.calls, r.sources, r.zero_checks, r.nonzero_macs, r.constant)
        else:
            t.macs += r.macs
            t.acs += r.acs
            t.dense += r.dense
            t.calls += r.calls
            t.zero_checks += r.zero_checks
            t.nonzero_macs += r.nonzero_macs
    return list(merged.values())


# ----------------------------------------------------------------------------------------------------------
# the counter
# ----------------------------------------------------------------------------------------------------------
_FUNCTION_NAMES = {
    "linear": "linear", "matmul": "matmul", "__matmul__": "matmul", "__rmatmul__": "matmul", "mm": "mm",
    "bmm": "bmm", "addmm": "addmm", "baddbmm": "baddbmm", "einsum": "einsum", "mv": "mv", "dot": "dot",
    "conv1d": "conv1d", "conv2d": "conv2d", "conv3d": "conv3d", "conv_transpose1d": "conv_transpose1d",
    "conv_transpose2d": "conv_transpose2d", "conv_transpose3d": "conv_transpose3d", "bilinear": "bilinear",
    "scaled_dot_product_attention": "scaled_dot_product_attention", "tensordot": "tensordot",
    "multi_head_attention_forward": "multi_head_attention", "inner": "inner", "outer": "outer",
}


class _Names(TorchFunctionMode):
    """Names the functional call a product came from (the outermost named call on the stack)."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _FUNCTION_NAMES.get(getattr(func, "__name__", ""))
        if name is None:
            return func(*args, **(kwargs or {}))
        self.stack.append(name)
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.stack.pop()


class _Counter(TorchDispatchMode):
    def __init__(self, profiler: _Profiler):
        super().__init__()
        self.p = profiler

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        rule = self.p.rules.get(packet)
        if not self.p.stack:                                   # only products inside the model's forward
            return out
        flat_in = tree_flatten((args, kwargs))[0]
        dependent = any(self.p.is_dependent(a) for a in flat_in)
        if dependent:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.p.mark_dependent(t)
        if rule is not None:
            self.p.record(packet, rule(args, kwargs, out), constant=not dependent)
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.p.mark_source(t, _PRODUCT + self.p.stack[-1])
        elif packet in _SOFTMAX and isinstance(out, torch.Tensor):
            self.p.mark_source(out, f"{self.p.stack[-1]}:softmax")
        elif packet in _COPIES and isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            src = self.p.source_of(args[0])                    # provenance survives copies (reshape of a view)
            if src is not None:
                self.p.mark_source(out, src)
        return out


_PRODUCT = "product:"
_SOFTMAX = (torch.ops.aten._softmax, torch.ops.aten.softmax)
_COPIES = tuple(getattr(torch.ops.aten, n) for n in ("clone", "_to_copy", "_unsafe_view", "contiguous",
                                                     "_reshape_copy", "alias", "detach", "lift_fresh")
                if hasattr(torch.ops.aten, n))


class _Profiler:
    """Hooks + modes of one profiling session; counts accumulate into ``self.profile`` over every call
    of the model while the session is open."""

    def __init__(self, model: nn.Module, rules: dict, max_level: int):
        self.model, self.rules, self.max_level = model, rules, max_level
        self.names = {m: n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.spiking_depth = 0
        self.profile = Profile(module_order=list(self.names.values()))
        self.fn_names = _Names()
        self.sources: dict[int, tuple] = {}                    # storage -> (weakref to tensor, producer)
        self.kinds: dict[tuple, tuple] = {}                    # tensor key -> (weakref to base, kind, c, sparse)
        self.dependent: dict[int, list] = {}                   # storages computed from the model's inputs
        self.handles = []
        self._modes = None

    # provenance: which spiking module (or softmax) produced an operand, through views
    def mark_source(self, t: torch.Tensor, name: str) -> None:
        try:
            self.sources[t.untyped_storage().data_ptr()] = (weakref.ref(t._base if t._base is not None else t), name)
        except (RuntimeError, TypeError):
            pass

    # input dependence: a product none of whose operands depends on the inputs is constant (gate masks
    # from parameters, weight-only arithmetic): performed, counted, but not part of the data path
    def mark_dependent(self, t: torch.Tensor) -> None:
        """Every live tensor object on a storage is remembered (a storage outlives some of its tensors,
        e.g. a clone whose ``_unsafe_view`` carries on)."""
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, TypeError, NotImplementedError):
            return
        owner = t._base if t._base is not None else t
        refs = [r for r in self.dependent.get(ptr, ()) if r() is not None]
        if not any(r() is owner for r in refs):
            refs.append(weakref.ref(owner))
        self.dependent[ptr] = refs

    def is_dependent(self, t) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, TypeError, NotImplementedError):
            return True                                        # unknown storage: assume it carries data
        for ref in self.dependent.get(ptr, ()):
            alive = ref()
            if alive is not None and alive.untyped_storage().data_ptr() == ptr:
                return True
        return False

    def source_of(self, t: torch.Tensor | None) -> str | None:
        if t is None:
            return None
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, TypeError):
            return None
        entry = self.sources.get(ptr)
        if entry is None:
            return None
        alive = entry[0]()
        return entry[1] if alive is not None and alive.untyped_storage().data_ptr() == ptr else None

    # operand kinds, cached per tensor (weights and activations read by several products: Q / K / V)
    def classify(self, t: torch.Tensor | None) -> _rules.Operand:
        if t is None:
            return _rules.Operand("analog")
        try:
            base = t._base if t._base is not None else t
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype,
                   t._version, t.layout)
        except (RuntimeError, NotImplementedError):
            return _rules.classify(t, self.max_level)
        hit = self.kinds.get(key)
        if hit is not None and hit[0]() is base:
            return _rules.Operand(hit[1], hit[2], t, hit[3])
        op = _rules.classify(t, self.max_level)
        if len(self.kinds) > 4096:
            self.kinds = {k: v for k, v in self.kinds.items() if v[0]() is not None}
        self.kinds[key] = (weakref.ref(base), op.kind, op.scale, op.sparse)
        return op

    # module attribution
    def _pre(self, m, args, kwargs=None):
        if not self.stack:                                     # a new call of the model
            self.sources.clear()
            self.dependent.clear()
            self.profile.samples += _batch_size(list(args) + list((kwargs or {}).values()))
            for a in tree_flatten((args, kwargs or {}))[0]:
                if isinstance(a, torch.Tensor):
                    self.mark_dependent(a)
        self.stack.append(self.names[m])
        if _rules.spiking_rule(m) is not None:
            self.spiking_depth += 1

    def _post(self, m, args, out):
        rule = _rules.spiking_rule(m)
        if rule is not None:
            self.spiking_depth -= 1
            if self.spiking_depth == 0 and isinstance(out, torch.Tensor):   # outermost spiking module only
                spikes, neurons, steps = rule(m, args, out)
                name = self.names[m]
                rec = self.profile.spiking.setdefault(name, SpikeRecord(name, _spiking_kind(m)))
                rec.spikes += spikes
                rec.neurons += neurons
                rec.steps = steps
                rec.calls += 1
                self.mark_source(out, name)
                for suffix, kind, sp, ne, st in _rules.extra_spike_records(m):
                    extra = self.profile.spiking.setdefault(f"{name}.{suffix}", SpikeRecord(f"{name}.{suffix}", kind))
                    extra.spikes += sp
                    extra.neurons += ne
                    extra.steps = st
                    extra.calls += 1
        if self.stack:
            self.stack.pop()

    def __enter__(self) -> Profile:
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, always_call=True))
        self._modes = [torch.no_grad(), self.fn_names, _Counter(self)]
        for mode in self._modes:
            mode.__enter__()
        return self.profile

    def __exit__(self, *exc):
        for mode in reversed(self._modes or []):
            mode.__exit__(*exc)
        self._modes = None
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.sources.clear()
        self.dependent.clear()
        self.stack.clear()
        self.spiking_depth = 0

    def record(self, packet, products, constant: bool = False) -> None:
        module = self.stack[-1]
        fname = self.fn_names.stack[0] if self.fn_names.stack else None
        for prod in products:
            tensors = (prod.a, prod.b) if isinstance(prod, _rules.Matmul) else (prod.x, prod.w)
            kinds = [self.classify(t) for t in tensors]
            dense = prod.dense()
            macs, acs, nonzero = _rules.count(prod, kinds, dense)
            shapes = (tuple(prod.a_shape), tuple(prod.b_shape)) if isinstance(prod, _rules.Matmul) else \
                (tuple(prod.x.shape), tuple(prod.w.shape))
            sources = tuple(self.source_of(t) for t in tensors)
            checks = sum(t.numel() for t, k, src in zip(tensors, kinds, sources)
                         if t is not None and k.kind != "analog" and not (src or "").startswith(_PRODUCT))
            self.profile.ops.append(OpRecord(module, fname or _rules.default_op_name(packet, prod),
                                             tuple(k.kind for k in kinds), int(macs), int(acs), int(dense), shapes,
                                             packet.__name__.split(".")[-1], prod.label, sources=sources,
                                             zero_checks=int(checks), nonzero_macs=int(nonzero),
                                             constant=constant))


def _spiking_kind(m: nn.Module) -> str:
    kind = type(m).__name__
    steps = getattr(m, "steps", None)
    if isinstance(steps, int):
        kind += f" (K={steps})"
    return kind


def _batch_size(inputs) -> int:
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            return int(x.shape[0])
    return 1


def profiling(model: nn.Module, *, rules: dict | None = None, max_level: int = _rules.DEFAULT_MAX_LEVEL):
    """Context manager: ``with profiling(model) as p: model(x1); model(x2)`` -- ``p`` (a :class:`Profile`)
    sums every call of ``model`` inside the block (no gradients are recorded inside).  Products outside
    the model's forward are not counted."""
    require(isinstance(model, nn.Module), f"profile needs an nn.Module, got {type(model).__name__}")
    return _Profiler(model, rules if rules is not None else _rules.PRODUCT_RULES, int(max_level))


def profile(model: nn.Module, *inputs, rules: dict | None = None, max_level: int = _rules.DEFAULT_MAX_LEVEL,
            samples: int | None = None, **kwargs) -> Profile:
    """Run ``model(*inputs, **kwargs)`` once without gradients and count every product it performs.

    rules: ``aten`` operator -> product rule (default :data:`spikevit.energy.rules.PRODUCT_RULES`).
    max_level: the largest level a graded operand may hold.
    samples: the number of samples in ``inputs`` (default: the first tensor's leading dimension).
    The model's output is kept as ``Profile.output``.
    """
    with profiling(model, rules=rules, max_level=max_level) as p:
        p.output = model(*inputs, **kwargs)
    if samples is not None:
        p.samples = int(samples)
    return p


def merge(profiles) -> Profile:
    """Sum of several profiles (e.g. one per batch)."""
    total = Profile()
    for q in profiles:
        total = total + q
    return total


__all__ = ["OpRecord", "Profile", "SpikeRecord", "block_of", "merge", "profile", "profiling", "snn_flops"]
