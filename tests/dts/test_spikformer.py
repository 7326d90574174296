"""Spikformer-N-D: published size, layer groups, LIF before every dot product, eval-time skipping equal to
the masked computation (and really skipping the work), SpikingJelly LIF inside the fixed-T model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spikevit.dts import mask_loss
from spikevit.errors import SpikevitError
from spikevit.models import create_model
from spikevit.models.spikformer import ConvBN, SpikeAttention, Spikformer


def tiny(**kw) -> Spikformer:
    args = dict(num_classes=10, img_size=16, in_chans=3, tmax=4, dts=True, init_steps=2)
    args.update(kw)
    return create_model("spikformer-1-64", **args)


def randomise(model: Spikformer, seed: int = 0) -> Spikformer:
    """Random BN statistics and random (prefix) masks so that every code path is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.8)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 0.3)
    for m in model.spiking_layers().values():
        if m.dtss is not None:
            m.dtss.tp.data.copy_(torch.randn(model.tmax, generator=g))
    return model


def test_spikformer_4_384_has_the_published_size():
    model = create_model("spikformer-4-384", num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 9.32e6) / 9.32e6 < 0.005          # Spikformer-4-384 (CIFAR-10): 9.32 M parameters
    model = create_model("spikformer-8-512", num_classes=1000)
    assert abs(sum(p.numel() for p in model.parameters()) - 29.68e6) / 29.68e6 < 0.01  # Spikformer-8-512: 29.68 M


def _counts(model) -> dict[str, int]:
    counts = {}
    for m in model.spiking_layers().values():
        counts[m.group] = counts.get(m.group, 0) + 1
    return counts


# DTS-SNN Fig. 2 / Spikformer: each conv is followed by its LIF; per block five SSA LIFs (q, k, v: "qkv";
# attn, proj: "attn") and two MLP LIFs (fc1, fc2), five SPS LIFs.  Under the paper's grouping our LIFs map
# one to one onto those (the MLP-input LIF spikes the projection, the next block's input / head LIF fc2).
PAPER = {"sps.lifs.0": "sps", "sps.lifs.1": "sps", "sps.lifs.2": "sps", "sps.rpe_lif": "sps",
         "blocks.0.attn.lif_in": "sps", "blocks.0.attn.q_lif": "qkv", "blocks.0.attn.k_lif": "qkv",
         "blocks.0.attn.v_lif": "qkv", "blocks.0.attn.attn_lif": "attn", "blocks.0.mlp.lif1": "attn",
         "blocks.0.mlp.lif2": "mlp", "blocks.1.attn.lif_in": "mlp", "blocks.1.attn.q_lif": "qkv",
         "blocks.1.attn.k_lif": "qkv", "blocks.1.attn.v_lif": "qkv", "blocks.1.attn.attn_lif": "attn",
         "blocks.1.mlp.lif1": "attn", "blocks.1.mlp.lif2": "mlp", "head_lif": "mlp"}
FEEDS = {"sps.lifs.0": "sps", "sps.lifs.1": "sps", "sps.lifs.2": "sps", "sps.rpe_lif": "sps",
         "blocks.0.attn.lif_in": "qkv", "blocks.0.attn.q_lif": "attn", "blocks.0.attn.k_lif": "attn",
         "blocks.0.attn.v_lif": "attn", "blocks.0.attn.attn_lif": "attn", "blocks.0.mlp.lif1": "mlp",
         "blocks.0.mlp.lif2": "mlp", "blocks.1.attn.lif_in": "qkv", "blocks.1.attn.q_lif": "attn",
         "blocks.1.attn.k_lif": "attn", "blocks.1.attn.v_lif": "attn", "blocks.1.attn.attn_lif": "attn",
         "blocks.1.mlp.lif1": "mlp", "blocks.1.mlp.lif2": "mlp", "head_lif": "head"}


@pytest.mark.parametrize("grouping,table", [("paper", PAPER), ("feeds", FEEDS)])
def test_layer_groupings_name_every_lif(grouping, table):
    kw = {} if grouping == "paper" else {"grouping": grouping}      # the paper's grouping is the default
    model = create_model("spikformer-2-128", num_classes=10, img_size=16, tmax=2, dts=True, dim=32, heads=2, **kw)
    assert {n: m.group for n, m in model.spiking_layers().items()} == table
    if grouping == "paper":    # Fig. 2's count per part: 5 SPS LIFs; per block 3 qkv, 2 attn, 2 mlp
        assert _counts(model) == {"sps": 5, "qkv": 2 * 3, "attn": 2 * 2, "mlp": 2 * 2}
    with pytest.raises(SpikevitError, match="grouping"):
        create_model("spikformer-1-64", grouping="bogus")


def test_layer_groups_and_a_lif_before_every_dot_product():
    model = tiny()
    assert _counts(model) == {"sps": 5, "qkv": 3, "attn": 2, "mlp": 2}
    assert _counts(tiny(grouping="feeds")) == {"sps": 4, "qkv": 1, "attn": 4, "mlp": 2, "head": 1}
    # every conv except the encoding conv and every attention product reads LIF spikes: record the inputs
    seen = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append(a[0])) for m in model.modules()
             if isinstance(m, (ConvBN, SpikeAttention))]
    hooks.append(model.head.register_forward_hook(lambda m, a, o: seen.append(a[0] * model.num_tokens)))
    model(torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert len(seen) == 3 + 1 + 3 + 1 + 1 + 2 + 1
    for x in seen[:-1]:
        values = set(torch.unique(x).tolist())       # binary spikes: {0, Vth} (Vth = 0.5 after Q K^T V)
        assert values <= {0.0, 1.0} or values <= {0.0, 0.5}, values
    assert torch.allclose(seen[-1], seen[-1].round(), atol=1e-4)  # head: token sums of spikes
    assert all(not m.conv.bias for m in model.modules() if isinstance(m, ConvBN))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eval_skipping_equals_masked_computation(seed):
    torch.manual_seed(seed)
    model = randomise(tiny(), seed).eval()
    steps = model.time_steps()
    assert len(set(steps.values())) > 1               # layers differ in T_l
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        fast = model(x)
        model.set_skip_masked(False)
        slow = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_eval_skipping_does_not_compute_masked_steps():
    torch.manual_seed(0)
    model = randomise(tiny(), 3).eval()
    steps = model.time_steps()
    names = {m: n for n, m in model.spiking_layers().items()}
    lif_steps, conv_rows = {}, []
    for m in names:
        m.lif.register_forward_hook(lambda mod, a, o, m=m: lif_steps.__setitem__(names[m], a[0].shape[0]))
    for m in model.modules():
        if isinstance(m, ConvBN):
            m.conv.register_forward_hook(lambda mod, a, o: conv_rows.append(a[0].shape[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    assert lif_steps == steps                         # every LIF ran exactly its T_l steps
    order = ["sps.lifs.0", "sps.lifs.1", "sps.lifs.2", "sps.rpe_lif", "blocks.0.attn.lif_in",
             "blocks.0.attn.lif_in", "blocks.0.attn.lif_in", "blocks.0.attn.attn_lif", "blocks.0.mlp.lif1",
             "blocks.0.mlp.lif2"]
    nonzero = [n for n in order if steps[n] > 0]
    assert conv_rows == [2 * steps[n] for n in nonzero]  # each conv saw T_l x batch inputs, not tmax x batch
    assert sum(conv_rows) < 2 * model.tmax * len(order)


def test_training_path_gradients_reach_tp_from_task_and_mask_loss():
    torch.manual_seed(0)
    model = tiny()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    ce = nn.functional.cross_entropy(model(x), y)
    task = torch.autograd.grad(ce, [m.dtss.tp for m in model.spiking_layers().values()], allow_unused=True)
    assert sum(float(g.abs().sum()) for g in task if g is not None) > 0
    ml = mask_loss(model, 1.0, ("qkv", "mlp"))
    assert float(ml.detach()) == 5 * 2                          # q, k, v, fc1's and the head LIF x 2 initial steps
    ml.backward()
    for name, m in model.spiking_layers().items():
        g = m.dtss.tp.grad
        if m.group in ("qkv", "mlp"):
            assert g is not None and (g[1:] > 0).all(), name   # more steps = more mask loss
        else:
            assert g is None or float(g.abs().sum()) == 0, name


def test_fixed_t_model_matches_spikingjelly_lif_inside():
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    torch.manual_seed(0)
    # Eq. 1 fires on H > Vth, SpikingJelly on H >= Vth.  They differ only on exact ties, which the attention
    # LIF meets with Spikformer's scale 0.125 and Vth 0.5 (integer counts x 0.125); a scale whose multiples
    # never hit the threshold makes ties impossible.  SJ's surrogate is in units of H - Vth, ours of H/Vth - 1:
    # the same function for Vth = 1, so every layer uses Vth = 1 here and outputs and gradients must agree.
    ours = tiny(dts=False, tmax=3, scale=0.13, attn_vth=1.0)
    ref = tiny(dts=False, tmax=3, scale=0.13, attn_vth=1.0)
    ref.load_state_dict(ours.state_dict())

    class SJ(nn.Module):  # SpikingJelly multi-step LIF with the paper's charge / soft reset; spikes scaled to Vth
        def __init__(self, lif):
            super().__init__()
            self.vth = lif.vth
            self.node = sj.LIFNode(tau=1 / (1 - lif.leak), decay_input=False, v_threshold=lif.vth, v_reset=None,
                                   surrogate_function=surrogate.PiecewiseQuadratic(alpha=1.0), step_mode="m")

        def forward(self, x):
            self.node.reset()
            return self.node(x) * self.vth

    for m in ref.spiking_layers().values():
        m.lif = SJ(m.lif)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    out_a, out_b = ours(x), ref(x)
    torch.testing.assert_close(out_a, out_b)
    nn.functional.cross_entropy(out_a, y).backward()
    nn.functional.cross_entropy(out_b, y).backward()
    for (n, pa), pb in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_every_registered_variant_builds_and_tiny_ones_run():
    from spikevit.models import list_models

    names = [n for n in list_models() if n.startswith("spikformer-")]
    assert {"spikformer-4-384", "spikformer-8-512", "spikformer-1-64"} <= set(names)
    out = create_model("spikformer-1-64", num_classes=7, img_size=28, in_chans=1, tmax=2)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 7)


def test_live_step_batch_norm_makes_masked_steps_invisible_in_training():
    """A 4-step model keeping 2 steps everywhere trains exactly like a 2-step model on its kept steps."""
    torch.manual_seed(0)
    dts = tiny(tmax=4, init_steps=2).train()
    fixed = tiny(tmax=2, dts=False).train()
    fixed.load_state_dict(dts.state_dict(), strict=False)    # same weights (the DTS model adds only TP)
    spikes = {}
    for tag, model in (("dts", dts), ("fixed", fixed)):
        for n, m in model.spiking_layers().items():
            m.register_forward_hook(lambda mod, a, o, n=n, tag=tag: spikes.__setitem__((tag, n), o[:2].detach()))
    x = torch.randn(6, 3, 16, 16)
    out_d, out_f = dts(x), fixed(x)
    for n in dts.spiking_layers():
        assert torch.equal(spikes[("dts", n)], spikes[("fixed", n)]), n
    b = dts.head.bias
    # the head averages over Tmax = 4 steps: two kept steps and two steps of bias only
    torch.testing.assert_close(2 * (out_d - b), out_f - b, rtol=1e-5, atol=1e-5)
    for (n, a), bb in zip(dts.named_buffers(), fixed.buffers()):
        torch.testing.assert_close(a, bb, msg=n)             # running statistics from the kept steps
    plain = tiny(tmax=4, init_steps=2, live_bn=False).train()
    plain.load_state_dict(dts.state_dict())
    assert not torch.allclose(plain(x), out_d)                # statistics over all 4 steps differ


def test_spiking_attention_is_q_kt_v_per_head_without_softmax():
    """Against an explicit per-head (Q K^T) V * scale product (the order Spikformer writes it), steps where
    any of Q, K, V was skipped give zeros."""
    g = torch.Generator().manual_seed(0)
    heads, dim, n, batch, tmax = 2, 6, 16, 2, 4
    q, k, v = ((torch.rand(tmax, batch, dim, n, generator=g) > 0.5).double() for _ in range(3))
    attn = SpikeAttention(heads, 0.125)
    out = attn(q, k, v, tmax)
    ref = torch.zeros_like(out)
    d = dim // heads
    for t in range(tmax):
        for b in range(batch):
            for h in range(heads):
                qh, kh, vh = (z[t, b, h * d:(h + 1) * d].T for z in (q, k, v))   # [N, d]
                ref[t, b, h * d:(h + 1) * d] = ((qh @ kh.T) @ vh * 0.125).T       # no softmax on Q K^T
    torch.testing.assert_close(out, ref)
    assert (out >= 0).all() and out.max() > 1       # unnormalised: a softmax would keep rows <= max |V|
    short = attn(q[:2], k, v[:3], tmax)              # T_q = 2, T_v = 3 kept steps
    torch.testing.assert_close(short[:2], ref[:2])
    assert (short[2:] == 0).all()
