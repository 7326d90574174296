"""DTSS gate: the paper's coeff/TS/TM/STE equations, prefix masks under adversarial parameters and training,
gradients from a task loss and from the mask loss, and skipped (not multiplied) steps at inference."""
from __future__ import annotations

import pytest
import torch

from spikevit.errors import SpikevitError
from spikevit.functional.dts import average_time_steps, coeff_matrix, init_time_params, time_mask, time_scores
from spikevit.nn import DTSS, DTSSLIF, LIF


def is_prefix(tm: torch.Tensor) -> bool:
    """0/1 values and non-increasing along the last axis."""
    tm = tm.detach()
    return bool(((tm == 0) | (tm == 1)).all() and (tm[..., 1:] <= tm[..., :-1]).all())


def test_coeff_and_scores_follow_eq4():
    c = coeff_matrix(4)
    assert c.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    tp = torch.tensor([0.3, 0.0, 0.9, 0.2])
    # TS = TP . coeff (row vector times matrix): TS[t] = sum_{j >= t} TP[j]
    assert time_scores(tp).tolist() == pytest.approx([1.4, 1.1, 1.1, 0.2])
    assert time_scores(tp).tolist() == pytest.approx((tp[None] @ c)[0].tolist())
    assert time_mask(tp).tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize("tmax", range(1, 7))
def test_initial_mask_is_the_first_init_steps(tmax):
    for k in range(tmax + 1):
        d = DTSS(tmax, k)
        assert d.mask().tolist() == [1.0] * k + [0.0] * (tmax - k)
        assert d.steps() == k
        ts = d.scores().detach()
        # the boundary scores sit strictly inside the STE window so the boundary can move both ways
        if 0 < k < tmax:
            assert 1.0 < ts[k - 1] < 2.0 and 0.0 < ts[k] < 1.0


def test_prefix_for_adversarial_parameters():
    g = torch.Generator().manual_seed(0)
    tmax = 6
    tp = torch.randn(20000, tmax, generator=g) * torch.logspace(-3, 3, 20000)[:, None]
    special = torch.tensor([[-5.0, 3.0, -0.2, 0.0, 1.0, -1.0], [0.0] * 6, [float("inf"), -1, 2, 0, 0, 1],
                            [1.0, float("nan"), 0, 0, 3, 0], [-1e30, 1e30, -1e30, 1e30, -1e30, 1e30]])
    tp = torch.cat([tp, special])
    tm = time_mask(tp)
    assert is_prefix(tm)
    assert is_prefix(time_mask(tp, min_steps=2)) and (time_mask(tp, min_steps=2)[:, :2] == 1).all()
    # a raw (unconstrained) cumulative sum, as the paper's formula without non-negativity, is NOT a prefix
    raw = ((tp @ coeff_matrix(tmax)) >= 1).float()
    assert not is_prefix(raw)


def test_straight_through_gradient_matches_eq6():
    d = DTSS(4, 2)
    with torch.no_grad():
        d.tp.copy_(torch.tensor([0.5, -0.4, 0.3, -1.5]))   # |TP| = .5 .4 .3 1.5 -> TS = 2.7 2.2 1.8 1.5
    tm = d.mask()
    assert tm.tolist() == [1, 1, 1, 1]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (tm * w).sum().backward()
    ts = d.scores().detach()
    window = ((ts > 0) & (ts < 2)).float()                 # [0, 0, 1, 1]
    # dL/dTP[j] = sign(TP[j]) * sum_{t <= j} w[t] * window[t]
    expect = torch.sign(d.tp.detach()) * torch.cumsum(w * window, 0)
    torch.testing.assert_close(d.tp.grad, expect)


def test_forward_masks_time_steps_and_checks_shape():
    d = DTSS(4, 3)
    y = torch.rand(4, 2, 5) + 0.1
    out = d(y)
    assert torch.equal(out[:3], y[:3]) and (out[3] == 0).all()
    with pytest.raises(SpikevitError, match="tmax=4"):
        d(torch.rand(3, 2, 5))


def test_prefix_under_training_with_a_hostile_optimiser():
    torch.manual_seed(0)
    d = DTSS(5, 2)
    opt = torch.optim.SGD(d.parameters(), lr=3.0)
    for step in range(300):
        loss = (d.mask() * torch.randn(5) * 10).sum()       # random-sign task gradients, huge lr
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 7 == 0:
            with torch.no_grad():
                d.tp.mul_(-1.0)                               # and flip the parameter signs now and then
        assert is_prefix(d.mask()), (step, d.tp)
    assert (d.tp.detach() < 0).any()                          # the parameters did go negative


def test_gradient_reaches_tp_from_task_and_from_mask_loss():
    """A task loss that rewards output at every step adds steps; the mask loss removes them."""
    torch.manual_seed(0)
    layer = DTSSLIF(tmax=4, init_steps=2, group="mlp", min_steps=1)
    x = torch.full((4, 8, 16), 1.5)                           # fires at every step
    opt = torch.optim.AdamW(layer.parameters(), lr=0.02, weight_decay=0.0)
    task_grads = []
    for _ in range(60):
        loss = -layer(x).mean()                               # more spikes kept = lower loss
        opt.zero_grad()
        loss.backward()
        task_grads.append(layer.dtss.tp.grad.clone())
        opt.step()
    assert layer.steps() == 4 and task_grads[0].abs().sum() > 0
    lam = 1.0
    for _ in range(120):
        loss = -layer(x).mean() + lam * layer.mask().sum()    # the mask loss dominates
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert layer.steps() == 1                                 # down to min_steps, never below


def test_inference_skips_masked_steps_instead_of_multiplying():
    layer = DTSSLIF(tmax=6, init_steps=2, group="qkv")
    calls = []
    layer.lif.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x = torch.rand(6, 3, 7) * 3
    masked = layer(x)                                         # training mode: all steps run, then masked
    assert masked.shape[0] == 6 and (masked[2:] == 0).all()
    layer.eval()
    skipped = layer(x)
    assert skipped.shape[0] == 2 and calls == [6, 2]          # the LIF ran only the 2 kept steps
    assert torch.equal(skipped, masked[:2])
    layer.skip_masked = False
    assert torch.equal(layer(x), masked)


def test_fixed_t_layer_has_no_gate():
    layer = DTSSLIF(tmax=3, dts=False, group="sps")
    assert layer.dtss is None and layer.steps() == 3 and not list(layer.parameters())
    x = torch.rand(3, 2, 4) * 2
    assert torch.equal(layer(x), LIF()(x))


def test_average_time_steps_eq3():
    assert average_time_steps([1, 2, 4, 1]) == 2.0
    with pytest.raises(SpikevitError):
        average_time_steps([])
    with pytest.raises(SpikevitError):
        init_time_params(4, 5)


def test_masked_steps_are_zero_even_when_the_input_is_nan_or_inf():
    d = DTSS(4, 2)
    y = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [float("nan"), float("inf")], [float("-inf"), 1.0]])
    out = d(y)
    assert out[2:].tolist() == [[0.0, 0.0], [0.0, 0.0]]                   # masked: exactly zero
    assert out[0].tolist() == [1.0, 0.0] and torch.isnan(out[1, 0]) and out[1, 1] == 1.0  # kept: untouched
    # every initial score TS = (4, 3, 2, 1) * 5/12 lies in the STE window (0, 2), so the masked steps send
    # dO/dTM = y (Eq. 10) back to TP: it must stay finite where y is NaN
    d.zero_grad()
    d(torch.where(torch.arange(4)[:, None] >= 2, torch.full((4, 2), float("nan")), torch.ones(4, 2))).sum().backward()
    assert torch.isfinite(d.tp.grad).all()
    lif = DTSSLIF(4, 1)
    x = torch.full((4, 3), 2.0)
    x[1:] = float("nan")                                                  # NaN input on the masked steps only
    assert lif(x).tolist() == [[1.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3]


@pytest.mark.parametrize("bad", [4.7, "4.5", float("nan"), 0, -1, True])
def test_non_integer_or_non_positive_tmax_is_refused(bad):
    with pytest.raises(SpikevitError, match="tmax"):
        DTSS(bad, 2)
    with pytest.raises(SpikevitError, match="tmax"):
        DTSSLIF(bad, 2)
    assert DTSS(4.0, 2).tmax == 4                                         # an integral float is an integer
    with pytest.raises(SpikevitError, match="init_steps"):
        DTSS(4, 1.5)
    with pytest.raises(SpikevitError, match="min_steps"):
        DTSS(4, 2, min_steps=0.5)
