"""Converter: explicit MHA == nn.MultiheadAttention; torchvision vit_b_16 / timm DeiT / own ViT converted."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikevit.conversion import (ExplicitMultiheadAttention, SpikeCounter, SpikingAttention, attention_modules,
                                 capture_attention_logits, convert, find_attention)
from spikevit.errors import SpikevitError
from spikevit.functional.fewspike import fs_spikes
from spikevit.models import create_model
from spikevit.nn import FewSpikeActivation, SpikingSoftmax


@pytest.mark.parametrize("batch_first", [True, False])
def test_explicit_mha_equals_torch_mha(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    exp = ExplicitMultiheadAttention(mha).eval()
    shape = (3, 6, 32) if batch_first else (6, 3, 32)
    q, k = torch.randn(shape), torch.randn(shape)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    am = torch.randn(6, 6)
    with torch.no_grad():
        for kw in ({}, {"key_padding_mask": kpm}, {"attn_mask": am}, {"average_attn_weights": False}):
            r_out, r_w = mha(q, k, k, need_weights=True, **kw)
            e_out, e_w = exp(q, k, k, need_weights=True, **kw)
            torch.testing.assert_close(e_out, r_out, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(e_w, r_w, atol=1e-6, rtol=1e-5)


def _close(a, b, rel=0.02):
    """Relative L2 error of the converted output and cosine similarity with the ANN's."""
    a, b = a.flatten().double(), b.flatten().double()
    return float((a - b).norm() / b.norm()) < rel and float(F.cosine_similarity(a, b, 0)) > 0.999


def test_torchvision_vit_b_16_random_weights():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=64).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)      # torchvision zero-initialises the head
    x = torch.randn(2, 3, 64, 64)
    assert [type(m) for _, m in find_attention(model)] == [nn.MultiheadAttention] * 12
    with torch.no_grad():
        ref = model(x)
        ann = convert(model, blocks=0)
        torch.testing.assert_close(ann(x), ref, atol=1e-4, rtol=1e-4)
        snn = convert(model, steps=12)
        mods = attention_modules(snn)
        assert len(mods) == 12 and all(m.converted for m in mods)
        assert not any(isinstance(m, nn.MultiheadAttention) for m in snn.modules())   # no fused kernel left
        out = snn(x)
        # random init gives attention logits up to ~2.2, about 5 % outside the SI-exp's fitted [-1, 1]
        logits = capture_attention_logits(ann, [(x, None)], "cpu")
        outside = float((logits.abs() > 1).float().mean())
    assert all(m.spiking_softmax.last_neurons == 2 * 12 * 17 * 17 for m in mods)
    assert 0.01 < outside < 0.1
    assert _close(out, ref, rel=0.06)
    # with the query projections halved the logits fall (almost) inside [-1, 1]: much closer
    for blk in model.encoder.layers:
        blk.self_attention.in_proj_weight.data[:768] *= 0.5
        blk.self_attention.in_proj_bias.data[:768] *= 0.5
    with torch.no_grad():
        assert _close(convert(model, steps=12)(x), model(x), rel=0.02)


def test_timm_deit_tiny_fused_attention_is_routed():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    assert model.blocks[0].attn.fused_attn       # scaled_dot_product_attention path
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(convert(model, blocks=0)(x), ref, atol=1e-4, rtol=1e-4)
        snn = convert(model, steps=12)
        out = snn(x)
    mods = attention_modules(snn)
    assert len(mods) == 12
    # every block's softmax ran as the spiking softmax (the SDPA kernel was decomposed)
    assert all(m.softmax_calls == 1 and m.spiking_softmax.last_neurons == 2 * 3 * 17 * 17 for m in mods)
    assert all(m.macs["qk"] == m.macs["av"] == 2 * 3 * 17 * 17 * 64 for m in mods)
    assert _close(out, ref)


def test_own_vit_block_by_block_and_activations():
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    x = torch.randn(2, 3, 32, 32)
    half = convert(model, blocks=1, activations="gelu")
    mods = attention_modules(half)
    assert [m.converted for m in mods] == [True, False]
    fs = [n for n, m in half.named_modules() if isinstance(m, FewSpikeActivation)]
    assert fs == ["blocks.0.mlp.act"]                   # only inside the converted block; stem untouched
    assert [m.converted for m in attention_modules(convert(model, blocks=[1]))] == [False, True]
    with pytest.raises(SpikevitError, match="blocks=3"):
        convert(model, blocks=3)
    with pytest.raises(SpikevitError, match="cannot convert activations"):
        convert(model, activations="relu")
    with torch.no_grad():
        assert _close(convert(model)(x), model(x), rel=0.05)


def test_refuses_models_without_attention():
    torchvision = pytest.importorskip("torchvision")
    with pytest.raises(SpikevitError, match="no attention block"):
        convert(torchvision.models.resnet18(weights=None))
    with pytest.raises(SpikevitError, match="no attention block"):
        convert(nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1)))


def test_spike_counter_matches_direct_count():
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    snn = convert(model, steps=12)
    x = torch.randn(3, 3, 32, 32)
    captured = []
    att = attention_modules(snn)[0]
    orig = att.apply_softmax

    def spy(s, dim):
        captured.append(s.detach().clone())
        return orig(s, dim)

    att.apply_softmax = spy
    with SpikeCounter(snn) as sc, torch.no_grad():
        snn(x)
    ss = att.spiking_softmax
    direct = float(fs_spikes(captured[0], ss.T, ss.h).sum())
    rows = {r["layer"]: r for r in sc.spikes()}
    r0 = rows["blocks.0.attn.spiking_softmax"]
    assert r0["spikes_per_sample"] * 3 == pytest.approx(direct)
    assert r0["neurons_per_sample"] == 2 * 64 * 64
    layers = {r["name"]: r for r in sc.layers()}
    dim, tokens = 64, 64
    assert layers["blocks.0.attn.inner.qkv"]["macs"] == tokens * dim * 3 * dim
    assert layers["blocks.0.attn.av"]["macs"] == 2 * tokens * tokens * (dim // 2)
    assert layers["blocks.0.attn.av"]["spiking"] and not layers["blocks.0.attn.qk"]["spiking"]


def test_timm_explicit_softmax_path_and_edgenext_xca():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = convert(model, steps=12)(x)
        for blk in model.blocks:
            blk.attn.fused_attn = False                      # Tensor.softmax path instead of SDPA
        torch.testing.assert_close(convert(model, steps=12)(x), fused, atol=1e-5, rtol=1e-4)
    edge = timm.create_model("edgenext_xx_small", pretrained=False, num_classes=10).eval()
    found = find_attention(edge)
    assert [type(m).__name__ for _, m in found] == ["CrossCovarianceAttn"] * 3
    xca = found[0][1]
    tokens = torch.randn(2, 64, xca.qkv.in_features)
    with torch.no_grad():
        ref = xca(tokens)
        wrapped = convert(nn.Sequential(xca), steps=12)
        out = wrapped(tokens)
    assert attention_modules(wrapped)[0].softmax_calls == 1
    assert _close(out, ref, rel=0.05)
