"""convert(spiking="softmax" | "attention" | "all"): logits of converted torchvision / timm / own ViTs stay
close to the ANN's; the operator profile shows a spike operand where each level promises one; bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikevit.conversion import attention_modules, convert
from spikevit.energy import profile
from spikevit.errors import SpikevitError
from spikevit.models import create_model
from spikevit.nn.spike_coding import SpikeEncoder, SpikingConv, SpikingLinear


def _cos(a, b) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def _tv_vit():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)          # torchvision zero-initialises the head
    return model


def _timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10).eval()


def _block_products(p, blocks):
    """Products of the profile that run inside the converted blocks."""
    return [r for r in p.purity() if any(r["module"] == b or r["module"].startswith(b + ".") for b in blocks)]


@pytest.mark.parametrize("make", [_tv_vit, _timm_vit], ids=["torchvision", "timm"])
@pytest.mark.parametrize("coding", ["rate", "fewspike"])
def test_converted_vits_keep_their_logits_and_spike_where_promised(make, coding):
    model = make()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 32, 32, generator=g)
    cal = torch.randn(24, 3, 32, 32, generator=g)
    with torch.no_grad():
        ref = model(x)
        # the ANN with few-spike GELU neurons (fitted to their calibrated inputs, as at spiking="all")
        with_fs_act = convert(model, 12, activations="all", calibration=cal)(x)
    for level in ("softmax", "attention", "all"):
        snn = convert(model, 12, spiking=level, calibration=cal, coding=coding)
        p = profile(snn, x)
        assert _cos(p.output, ref) >= 0.95, level
        if level == "all":
            # the spike coding on its own: against the ANN whose GELU is the same few-spike neuron
            assert _cos(p.output, with_fs_act) >= 0.95
        blocks = snn.sit_conversion["block_names"]
        rows = _block_products(p, blocks)
        attention = [r for r in rows if r["op"].startswith(("matmul", "bmm", "scaled_dot"))]
        if level == "softmax":
            # only the spiking softmax: Q, K, V and every layer stay analog
            assert all(not r["event_driven"] for r in rows)
            continue
        # "attention": Q K^T and A V have a spike operand in every converted block
        for b in blocks:
            mine = [r for r in attention if r["module"].startswith(b + ".")]
            assert len(mine) == 2 and all(r["event_driven"] for r in mine), (b, mine)
            kinds = {r["operands"] for r in mine}
            assert kinds <= {"graded x analog", "analog x graded", "spike x analog", "analog x spike"}
        layers = [r for r in rows if r not in attention]
        if level == "attention":
            assert layers and all(not r["event_driven"] for r in layers)
        else:  # "all": every product inside the blocks is event-driven
            assert layers and all(r["event_driven"] for r in rows), [r for r in rows if not r["event_driven"]]
            assert p.macs < profile(convert(model, 12, blocks=0), x).macs
    # the reported spikes come from the same run: every encoder of the last model is listed
    names = {n for n, m in snn.named_modules() if isinstance(m, SpikeEncoder)}
    assert names and names <= set(p.spiking)


def test_own_vit_levels_and_energy_from_the_profile():
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    x, cal = torch.randn(4, 3, 32, 32), torch.randn(16, 3, 32, 32)
    ann = profile(convert(model, blocks=0), x)
    snn = convert(model, 12, spiking="all", calibration=cal)
    assert sum(isinstance(m, SpikingLinear) for m in snn.modules()) == 2 * 4      # qkv, proj, fc1, fc2
    assert not any(isinstance(m, SpikingConv) for m in snn.modules())            # the stem is outside blocks
    p = profile(snn, x)
    # energy = macs E_MAC + acs E_AC with the paper's constants
    assert p.energy("sit45nm") == pytest.approx(p.macs * 4.6e-12 + p.acs * 0.9e-12)
    # the MACs left are those outside the converted blocks (stem, head): equal to the ANN's there
    outside = sum(r.macs for r in ann.ops if not r.module.startswith("blocks."))
    assert p.macs == outside
    # ACs of a spike-coded linear layer = spikes of its encoder x out_features
    enc = p.spiking["blocks.0.mlp.fc1.encoder"]
    fc1 = [r for r in p.ops if r.module == "blocks.0.mlp.fc1"]
    assert sum(r.acs for r in fc1) == pytest.approx(enc.spikes * model.blocks[0].mlp.fc1.out_features)


def test_partial_blocks_and_metadata():
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    cal = torch.randn(8, 3, 32, 32)
    snn = convert(model, 12, spiking="attention", calibration=cal, blocks=1)
    mods = attention_modules(snn)
    assert [m.spiking_qkv for m in mods] == [True, False]
    assert snn.sit_conversion["spiking"] == "attention" and snn.sit_conversion["block_names"] == ["blocks.0"]


def test_convert_bad_input():
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    cal = torch.randn(8, 3, 32, 32)
    with pytest.raises(SpikevitError, match="spiking='everything': choose from"):
        convert(model, spiking="everything", calibration=cal)
    with pytest.raises(SpikevitError, match="needs calibration="):
        convert(model, spiking="attention")
    bad = cal.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(SpikevitError, match="NaN or infinite"):
        convert(model, spiking="all", calibration=bad)
    with pytest.raises(SpikevitError, match=r"calibration inputs of shape \(8, 1, 32, 32\) do not fit the model"):
        convert(model, spiking="all", calibration=torch.randn(8, 1, 32, 32))
    with pytest.raises(SpikevitError, match=r"calibration inputs of shape \(8, 3, 16, 16\) do not fit"):
        convert(model, spiking="attention", calibration=torch.randn(8, 3, 16, 16))
    with pytest.raises(SpikevitError, match="float tensor"):
        convert(model, spiking="attention", calibration=torch.zeros(8, 3, 32, 32, dtype=torch.long))
    with pytest.raises(SpikevitError, match="coding='burst'"):
        convert(model, spiking="attention", calibration=cal, coding="burst")
    with pytest.raises(SpikevitError, match="no attention block to convert"):
        convert(nn.Sequential(nn.Linear(4, 4), nn.GELU()), spiking="all", calibration=torch.randn(2, 4))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(cal, torch.zeros(8)), batch_size=4)
    snn = convert(model, spiking="attention", calibration=loader)           # a DataLoader works too
    assert all(m.encoders["q"].calibrated for m in attention_modules(snn))


@pytest.mark.parametrize("arch,blocks", [("edgenext_xx_small", 3), ("nextvit_small", 4)])
def test_paper_hybrids_convert_at_every_level(arch, blocks):
    """The paper's CNN-transformer hybrids (timm, random weights; UniFormer is not in timm): EdgeNeXt has
    3 attention blocks (XCA), Next-ViT 4 (E-MHSA), as in the paper's Tables 2-3."""
    timm = pytest.importorskip("timm")
    if not timm.is_model(arch):
        pytest.skip(f"timm {timm.__version__} has no {arch}")
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10).eval()
    g = torch.Generator().manual_seed(2)
    x, cal = torch.randn(2, 3, 64, 64, generator=g), torch.randn(8, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = model(x)
    for level in ("softmax", "attention", "all"):
        snn = convert(model, 12, spiking=level, calibration=cal)
        assert snn.sit_conversion["attention_blocks"] == blocks
        p = profile(snn, x)
        assert _cos(p.output, ref) >= 0.95, level
        rows = _block_products(p, snn.sit_conversion["block_names"])
        driven = [r for r in rows if r["event_driven"]]
        if level == "softmax":
            # only A V may be event-driven: a spiking-softmax row whose SI-exp outputs are all equal (tiny
            # random logits, Next-ViT's 4 keys) is one constant, a spike tensor by the profile's rule
            assert all(r["op"].startswith("matmul") for r in driven) and len(driven) <= blocks
        elif level == "attention":
            assert len(driven) == 2 * blocks and all(r["op"].startswith(("matmul", "scaled")) for r in driven)
        else:
            assert rows and len(driven) == len(rows)


def test_all_level_at_a_k_without_activation_fit_and_outside_no_grad():
    from spikevit.conversion.params import available

    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    snn = convert(model, 4, spiking="all", calibration=torch.randn(8, 3, 32, 32))
    k = snn.sit_conversion["activation_steps"]
    assert k == min(x for x in available("gelu") if x >= 4)          # the nearest fitted GELU neuron above K = 4
    y = snn(torch.randn(2, 3, 32, 32))                               # no torch.no_grad(): spikes carry no gradient
    assert y.shape == (2, 10) and bool(torch.isfinite(y).all())
