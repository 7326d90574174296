"""SIT-conversion gives the same model on CUDA as on the CPU: the converted torchvision ViT's logits, its
spike counts and its operator profile agree at every spiking level and coding (skipped without a GPU); and a
float64 model converts and runs in float64 (what the CUDA comparison relies on)."""
from __future__ import annotations

import pytest
import torch

from spikevit.conversion import convert
from spikevit.energy import profile
from test_spiking_levels import _tv_vit        # the levels test's torchvision ViT (head re-initialised)

DEVICE = "cuda"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _vit():
    return _tv_vit().double()                                  # float64: no TF32 / summation-order spike flips


@needs_cuda
@pytest.mark.parametrize("coding", ["rate", "fewspike"])
@pytest.mark.parametrize("level", ["softmax", "attention", "all"])
def test_converted_model_matches_the_cpu(level, coding):
    model = _vit()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    cal = torch.randn(16, 3, 32, 32, generator=g, dtype=torch.float64)
    cal_arg = None if level == "softmax" else cal
    cpu = convert(model, 12, spiking=level, calibration=cal_arg, coding=coding)
    dev = convert(model.to(DEVICE), 12, spiking=level, calibration=None if cal_arg is None else cal.to(DEVICE),
                  coding=coding)
    assert next(dev.parameters()).device.type == torch.device(DEVICE).type
    # the thresholds calibrated on either device are the same numbers
    th_cpu = {k: v for k, v in cpu.state_dict().items() if k.endswith("theta")}
    th_dev = {k: v.cpu() for k, v in dev.state_dict().items() if k.endswith("theta")}
    assert th_cpu.keys() == th_dev.keys() and (level == "softmax") == (not th_cpu)
    for k in th_cpu:
        torch.testing.assert_close(th_dev[k], th_cpu[k], rtol=1e-9, atol=1e-12)
    p_cpu, p_dev = profile(cpu, x), profile(dev, x.to(DEVICE))
    torch.testing.assert_close(p_dev.output.cpu(), p_cpu.output, rtol=1e-6, atol=1e-8)
    assert p_dev.macs == p_cpu.macs
    assert p_dev.acs == pytest.approx(p_cpu.acs, rel=1e-6)
    assert p_dev.spikes == pytest.approx(p_cpu.spikes, rel=1e-6)


@pytest.mark.parametrize("coding", ["rate", "fewspike"])
@pytest.mark.parametrize("level", ["attention", "all"])
def test_float64_model_converts_and_runs_in_float64(level, coding):
    model = _vit()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    cal = torch.randn(16, 3, 32, 32, generator=g, dtype=torch.float64)
    out64 = convert(model, 12, spiking=level, calibration=cal, coding=coding)(x)
    out32 = convert(model.float(), 12, spiking=level, calibration=cal.float(), coding=coding)(x.float())
    assert out64.dtype == torch.float64
    # the same spiking model in two precisions: a few values may cross a quantisation step, nothing more
    cos = torch.nn.functional.cosine_similarity(out64.flatten(), out32.double().flatten(), 0)
    assert float(cos) > 0.999
