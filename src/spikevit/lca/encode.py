"""Public LCA encoder: input validation, backend choice, batching/streaming."""
from __future__ import annotations

from typing import Iterator

import torch

from spikevit.errors import SpikevitError
from spikevit.functional.lca import LCABackend, LCATrace, lca_backend, lca_factored, lca_gramian, lca_mixed
from spikevit.lca.params import LCA_DEFAULTS as D
from spikevit.lca.params import LCAParams
from spikevit.runtime import progress
from spikevit.validation import positive_int

# Exact backends (spikevit.functional.lca.LCABackend: one keyword signature, FLOPs in stats).  The research
# backends "active" and "screened" (spikevit.functional.lca.active / .screened) are left out: the committed
# benchmarks show no regime where either is faster than these (docs/lca-backends.md).
BACKENDS: dict[str, LCABackend] = {
    "gramian": lca_gramian,     # dense M x M Gramian every step (authors' formulation, the reference)
    "factored": lca_factored,   # u = phi^T z + diag(G) v: one (B, N) x (N, M) product per step
    "mixed": lca_mixed,         # bfloat16 screening product with a proven error bound, float32 on every atom that can matter
}

# Dictionary size from which "auto" picks the exact "mixed" backend (bfloat16 screening product) on
# CPUs with native bfloat16 matrix units (AVX512-BF16 / AMX-BF16); measured 1.6x faster than
# "factored" at M = 50,000 (benchmarks/lca_encode.py).  Without native bfloat16 the screening
# product is emulated and slow, so "factored" stays the choice there; on GPUs too (the dense
# product is cheap there and the screening's host synchronisations are not).
MIXED_MIN_ATOMS: int | None = 16384


def register_backend(name: str, fn) -> None:
    """Add an encoding backend; SpikevitError unless ``fn`` has the fixed :class:`LCABackend` signature."""
    try:
        BACKENDS[name] = lca_backend(fn)
    except TypeError as exc:
        raise SpikevitError(f"register_backend({name!r}, fn): {exc}") from None


_BF16_CPU: bool | None = None


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bfloat16 dot-product / matrix instructions (Linux /proc/cpuinfo)."""
    global _BF16_CPU
    if _BF16_CPU is None:
        try:
            with open("/proc/cpuinfo") as fh:
                flags = set()
                for line in fh:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
            _BF16_CPU = bool(flags & {"avx512_bf16", "amx_bf16"})
        except OSError:
            _BF16_CPU = False
    return _BF16_CPU


def choose_backend(n: int, m: int, device: torch.device | None = None) -> str:
    """Pick the cheapest exact backend for an (N, M) dictionary on ``device``.

    The dense Gramian only pays off when M <= N (G is then no larger than phi);
    otherwise the factored form, or on CPUs with native bfloat16 from
    ``MIXED_MIN_ATOMS`` atoms on the "mixed" backend (same codes, bfloat16 screening).
    """
    if m <= n:
        return "gramian"
    dev_type = torch.device(device).type if device is not None else "cpu"
    if dev_type == "cpu" and MIXED_MIN_ATOMS is not None and m >= MIXED_MIN_ATOMS and cpu_has_native_bf16():
        return "mixed"
    return "factored"


def check_dictionary_inputs(dictionary, inputs, where: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    """Validate (N, M) dictionary and (B, N) inputs; return float tensors on one device."""
    if not isinstance(dictionary, torch.Tensor) or not isinstance(inputs, torch.Tensor):
        raise SpikevitError(f"{where}: dictionary and inputs must be torch tensors, got "
                            f"{type(dictionary).__name__} and {type(inputs).__name__}")
    if dictionary.ndim != 2:
        raise SpikevitError(f"{where}: dictionary must be 2-D (N features, M atoms), got shape {tuple(dictionary.shape)}")
    if inputs.ndim != 2:
        raise SpikevitError(f"{where}: inputs must be 2-D (B samples, N features), got shape {tuple(inputs.shape)}")
    n, m = dictionary.shape
    if m == 0 or n == 0:
        raise SpikevitError(f"{where}: empty dictionary (shape {tuple(dictionary.shape)}): it needs at least one atom")
    if inputs.shape[1] != n:
        raise SpikevitError(f"{where}: inputs have {inputs.shape[1]} features but the dictionary atoms have {n} "
                            "(features from a different backbone or size?)")
    if not (dictionary.is_floating_point() and inputs.is_floating_point()):
        raise SpikevitError(f"{where}: dictionary and inputs must be floating point tensors")
    if not torch.isfinite(dictionary).all():
        raise SpikevitError(f"{where}: dictionary contains NaN or inf values")
    if not torch.isfinite(inputs).all():
        bad = torch.nonzero(~torch.isfinite(inputs).all(1)).squeeze(1)[:5].tolist()
        raise SpikevitError(f"{where}: inputs contain NaN or inf values (rows {bad}...)")
    dtype = torch.promote_types(dictionary.dtype, inputs.dtype)
    dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return dictionary.to(dtype), inputs.to(device=dictionary.device, dtype=dtype)


def check_params(lam, tau, steps, threshold, backend) -> None:
    """The LCA settings of one call (:class:`LCAParams` checks them) and a known backend name."""
    LCAParams(lam=lam, tau=tau, steps=steps, threshold=threshold)
    if backend != "auto" and backend not in BACKENDS:
        raise SpikevitError(f"unknown LCA backend {backend!r}; choose from {['auto', *BACKENDS]}")


def encode_trace(dictionary: torch.Tensor, inputs: torch.Tensor, *, lam: float = D.lam, tau: float = D.tau,
                 steps: int = D.steps, rectify: bool = D.rectify, threshold: str = D.threshold,
                 backend: str = D.backend,
                 exclude: torch.Tensor | None = None, trace: bool = False, **backend_kwargs) -> LCATrace:
    """Like :func:`encode` but returns an :class:`LCATrace` (codes, u[K], optional traces)."""
    check_params(lam, tau, steps, threshold, backend)
    phi, s = check_dictionary_inputs(dictionary, inputs)
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=phi.device, dtype=torch.long)
        if exclude.shape != (s.shape[0],) or exclude.max() >= phi.shape[1]:
            raise SpikevitError("exclude must hold one atom index (or -1) per input row")
    name = choose_backend(*phi.shape, phi.device) if backend == "auto" else backend
    fn = BACKENDS[name]
    unknown = sorted(set(backend_kwargs) - {"potentials", "allreduce"} - fn.options)
    if unknown:
        raise SpikevitError(f"LCA backend {name!r} does not take option(s) {unknown}")
    return fn(phi, s, lam=float(lam), tau=float(tau), steps=int(steps), rectify=rectify,
              kind=threshold, exclude=exclude, trace=trace, **backend_kwargs)


def encode(dictionary: torch.Tensor, inputs: torch.Tensor, *, lam: float = D.lam, tau: float = D.tau,
           steps: int = D.steps, rectify: bool = D.rectify, threshold: str = D.threshold, backend: str = D.backend,
           exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse codes a[K] of ``inputs`` (B, N) over ``dictionary`` (N, M) -> (B, M).

    Runs SPEC Eq. 2 exactly: u[0] = 0, K = ``steps`` updates
    u += (1/tau)(b - u - (G - diag G) a), a = T_lam(u); returns a[K].
    Atoms are used as given (no renormalisation).  ``rectify=True`` (default,
    as in the authors' code) gives a = max(u - lam, 0); ``rectify=False`` the
    signed soft threshold; ``threshold="hard"`` keeps u where it crosses lam.
    ``backend`` is "auto", "gramian" (dense M x M, the reference),
    "factored" (no M x M matrix) or "mixed" (factored with a bfloat16
    screening product); all agree to float32 round-off.
    ``exclude`` (B,) optionally silences one atom per input (-1: none).
    """
    return encode_trace(dictionary, inputs, lam=lam, tau=tau, steps=steps, rectify=rectify,
                        threshold=threshold, backend=backend, exclude=exclude, potentials=False).codes


def encode_batches(dictionary: torch.Tensor, inputs: torch.Tensor, *, batch_size: int = 256,
                   device: torch.device | None = None, show_progress: bool = True,
                   exclude: torch.Tensor | None = None, **kwargs) -> Iterator[tuple[slice, LCATrace]]:
    """Stream ``inputs`` through the encoder in batches (bounded memory).

    Yields ``(rows, trace)`` per batch, ``rows`` the slice of ``inputs`` it covers.
    Inputs may live on the CPU (or be memory-mapped); each batch is moved to
    ``device`` (default: the dictionary's).
    """
    batch_size = positive_int(batch_size, "batch_size")
    device = device or dictionary.device
    phi = dictionary.to(device)
    total = inputs.shape[0]
    bar = progress(total=total, desc="LCA encode", unit="img", **({} if show_progress else {"disable": True}))
    try:
        for start in range(0, total, batch_size):
            rows = slice(start, min(start + batch_size, total))
            ex = None if exclude is None else exclude[rows].to(device)
            out = encode_trace(phi, inputs[rows].to(device), exclude=ex, **kwargs)
            bar.update(rows.stop - rows.start)
            yield rows, out
    finally:
        bar.close()
