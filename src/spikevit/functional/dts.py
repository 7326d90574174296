"""Dynamic time-step spiking (DTSS) mask maths (DTS-SNN Eq. 3-7).

Per LIF layer l with Tmax steps and trainable parameters TP (length Tmax)::

    coeff[j, t] = 1 if j >= t else 0            (lower-triangular ones, Tmax x Tmax)
    TS = |TP| @ coeff,  i.e. TS[t] = sum_{j >= t} |TP[j]|       (score, non-increasing in t)
    TM[t] = 1 if TS[t] >= 1 else 0              (mask; dTM/dTS := 1 on 0 < TS < 2, straight through)
    O[t] = Y[t] * TM[t],  T_l = sum_t TM[t],  T_avg = mean_l T_l

The paper initialises TP non-negative and relies on that for TS to be non-increasing; here the
non-negativity is structural (``|TP|`` in the forward), so TS is non-increasing, and the kept steps
form a prefix, whatever values an optimiser writes into TP (negative, huge, NaN: NaN scores keep
nothing).  ``min_steps`` optionally forces the first steps on (no gradient flows through them).
"""
from __future__ import annotations

import torch

from spikevit.errors import require
from spikevit.validation import positive_int


def coeff_matrix(tmax: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The paper's lower-triangular all-ones matrix (Eq. 4), ``[tmax, tmax]``."""
    return torch.tril(torch.ones(tmax, tmax, device=device, dtype=dtype))


def time_scores(tp: torch.Tensor) -> torch.Tensor:
    """TS = |TP| @ coeff: ``[tmax] -> [tmax]``, TS[t] = sum_{j >= t} |TP[j]| (non-increasing)."""
    return tp.abs() @ coeff_matrix(tp.shape[-1], tp.device, tp.dtype)


class MaskSTE(torch.autograd.Function):
    """TM = H(TS >= 1) forward; dTM/dTS = 1 on 0 < TS < 2 (Eq. 5-6)."""

    @staticmethod
    def forward(ctx, ts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ts)
        return (ts >= 1).to(ts.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (ts,) = ctx.saved_tensors
        return grad_out * ((ts > 0) & (ts < 2)).to(grad_out.dtype)


def time_mask(tp: torch.Tensor, min_steps: int = 0) -> torch.Tensor:
    """TM ``[tmax]`` (0/1, a prefix of ones) from the parameters TP, differentiable through the STE."""
    tm = MaskSTE.apply(time_scores(tp))
    if min_steps > 0:
        forced = torch.arange(tp.shape[-1], device=tp.device) < min_steps
        tm = torch.where(forced, torch.ones_like(tm), tm)
    return tm


def kept_steps(tm: torch.Tensor) -> int:
    """Number of leading ones of a prefix mask (= T_l = sum(TM))."""
    return int(tm.detach().sum().round().item())


def default_init_steps(tmax: int) -> int:
    """The initial kept steps of a DTSS gate when none is given: ``max(1, tmax // 2)``, half the maximum
    (DTS-SNN Sec. IV, Table IV: "initializing the time step to half of the maximum value yields the best
    accuracy-efficiency trade-off").  The one place this default is written; the gate, the Spikformer,
    :class:`spikevit.dts.DTSSpec` and the CLI take it from here."""
    return max(1, positive_int(tmax, "tmax") // 2)


def init_time_params(tmax: int, init_steps: int) -> torch.Tensor:
    """TP with all entries equal to c so that exactly the first ``init_steps`` scores reach 1.

    TS[t] = (tmax - t) c; keeping t < k needs (tmax - k + 1) c >= 1 > (tmax - k) c.  c is the middle of
    that interval, so every score starts strictly inside (0, 2) where the STE passes gradient (except
    the earliest ones when k = tmax, which never need to move up).
    """
    require(tmax >= 1, f"tmax must be >= 1, got {tmax}")
    require(0 <= init_steps <= tmax, f"init_steps must lie in [0, tmax={tmax}], got {init_steps}")
    gap = tmax - init_steps
    if init_steps == 0:
        c = 0.5 / tmax                      # TS[0] = 0.5: nothing kept, still inside the STE window
    elif gap == 0:
        c = 1.5                             # the last score is 1.5
    else:
        c = 0.5 * (1.0 / (gap + 1) + 1.0 / gap)
    return torch.full((tmax,), c)


def average_time_steps(steps: list[int] | torch.Tensor) -> float:
    """T_avg = (1/L) sum_l T_l (Eq. 3)."""
    steps = torch.as_tensor(steps, dtype=torch.float64)
    require(steps.numel() > 0, "T_avg needs at least one layer")
    return float(steps.mean())


def hoyer_square(z: torch.Tensor) -> torch.Tensor:
    """Hoyer's sparsity measure H(z) = ||z||_1^2 / ||z||_2^2 over all entries (0 when z is all zero).

    H lies in [1, z.numel()] for a non-zero z: 1 when one entry is non-zero, numel when all are equal.
    The Hoyer regulariser of Datta et al. (2022, DTS-SNN ref. [9]) applies it to the clipped membrane
    potential ``clip(U / Vth, 0, 1)`` of each spiking layer.
    """
    l1 = z.abs().sum()
    l2 = z.square().sum()
    return torch.where(l2 > 0, l1.square() / l2.clamp_min(torch.finfo(z.dtype).tiny), l2)
