"""The DTS Spikformer, its mask loss and the Table II baseline losses give the same numbers on CUDA as on
the CPU (skipped where no GPU is present)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikevit.dts import DTSSpec
from spikevit.dts.loss import track_hoyer
from spikevit.dts.train import build_dts_model, dts_hooks
from spikevit.nn import DTSS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(spec: DTSSpec):
    """The same float64 model on both devices (in float32, TF32 convolutions or another summation order
    move a membrane potential across the threshold now and then, and one flipped spike changes the logits)."""
    torch.manual_seed(0)
    cpu, _ = build_dts_model(spec, "cifar10", 16)
    cpu.double()
    g = torch.Generator().manual_seed(1)
    for m in cpu.modules():                      # random BN affine / masks so every path is exercised
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.8)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 0.3)
    gpu = copy.deepcopy(cpu).cuda()
    return cpu, gpu


@pytest.mark.parametrize("kw", [{"dts": True, "lambda_m": 1e-2}, {"dts": False, "loss": "tet", "tet_lambda": 0.1},
                                {"dts": False, "hoyer_lambda": 1e-4}])
def test_training_step_matches_the_cpu(kw):
    spec = DTSSpec("spikformer-1-64", tmax=4, model_args={"dim": 32, "heads": 2}, **kw)
    cpu, gpu = _pair(spec)
    hooks = dts_hooks(spec, 0.1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)
    out = {}
    for name, model, dev in (("cpu", cpu, "cpu"), ("cuda", gpu, "cuda")):
        track_hoyer(model, spec.hoyer_lambda > 0)
        model.train()
        logits = model(x.to(dev))
        ce = nn.functional.cross_entropy(logits, y.to(dev), label_smoothing=0.1)
        extra = hooks.extra_loss(model, logits, y.to(dev))[0] if hooks.extra_loss else 0.0
        loss = ce + extra
        loss.backward()
        out[name] = (logits.detach().cpu(), float(loss.detach()),
                     {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(out["cpu"][0], out["cuda"][0], atol=1e-9, rtol=1e-9)
    assert out["cpu"][1] == pytest.approx(out["cuda"][1], rel=1e-4, abs=1e-5)
    assert out["cpu"][2].keys() == out["cuda"][2].keys()
    for n, gc in out["cpu"][2].items():
        assert torch.allclose(gc, out["cuda"][2][n], atol=1e-5, rtol=1e-5), n


def test_eval_skipping_and_nan_masking_on_cuda():
    spec = DTSSpec("spikformer-1-64", tmax=4, model_args={"dim": 32, "heads": 2})
    cpu, gpu = _pair(spec)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gpu.eval()
    skipped = gpu(x.cuda())
    gpu.set_skip_masked(False)
    masked = gpu(x.cuda())
    assert torch.allclose(skipped, masked, atol=1e-9)
    assert torch.allclose(skipped.cpu(), cpu.eval()(x), atol=1e-9)
    d = DTSS(4, 2).cuda()
    y = torch.full((4, 5), float("nan"), device="cuda")
    assert (d(y)[2:] == 0).all()
