"""spikevit.energy.profile against closed forms and brute-force counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikevit.energy import ENERGY_MODELS, profile
from spikevit.energy.rules import classify


def _only(p):
    assert len(p.ops) == 1, p.ops
    return p.ops[0]


def test_linear_analog_input_counts_dense_macs():
    lin = nn.Linear(8, 5)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    p = profile(lin, x)
    r = _only(p)
    assert (p.macs, p.acs) == (3 * 8 * 5, 0)
    assert r.op == "linear" and r.operands == ("analog", "analog") and r.dense == 120


def test_linear_binary_input_counts_nnz_times_out_features():
    lin = nn.Linear(8, 5)
    x = torch.zeros(3, 8)
    x[0, 1] = x[0, 7] = x[2, 3] = x[2, 4] = x[2, 5] = 1.0          # 5 spikes at known positions
    p = profile(lin, x)
    assert (p.macs, p.acs) == (0, 5 * 5)
    assert _only(p).operands == ("spike", "analog")


def test_linear_on_3d_tokens():
    lin = nn.Linear(6, 4, bias=False)
    x = torch.zeros(2, 7, 6)
    x[1, 3, :] = 1.0                                                  # one token fully on: 6 spikes
    p = profile(lin, x)
    assert (p.macs, p.acs, p.dense) == (0, 6 * 4, 2 * 7 * 6 * 4)


def test_conv2d_analog_counts_output_elements_times_fan_in():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    p = profile(conv, x)
    assert p.macs == 2 * 4 * 6 * 6 * 3 * 9 and p.acs == 0
    assert _only(p).op == "conv2d"


def test_conv2d_binary_input_counts_receptive_field_hits():
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = torch.zeros(1, 2, 5, 5)
    x[0, 0, 2, 2] = 1.0       # centre: reaches 9 outputs per output channel
    x[0, 1, 0, 0] = 1.0       # corner: reaches 4 outputs
    x[0, 1, 0, 2] = 1.0       # edge: reaches 6 outputs
    p = profile(conv, x)
    assert (p.macs, p.acs) == (0, (9 + 4 + 6) * 4)


@pytest.mark.parametrize("groups,stride,dilation", [(1, 1, 1), (2, 2, 1), (4, 1, 2)])
def test_conv_spikes_match_brute_force_unfold_count(groups, stride, dilation):
    g = torch.Generator().manual_seed(groups + stride)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=1, dilation=dilation, groups=groups, bias=False)
    x = (torch.rand(2, 4, 7, 7, generator=g) < 0.3).float()
    cols = F.unfold(x, 3, dilation=dilation, padding=1, stride=stride)        # [N, C*9, L]
    cols = cols.view(2, groups, 4 // groups * 9, -1).sum(2)                   # non-zeros per group window
    brute = int(cols.sum()) * (8 // groups)
    assert profile(conv, x).acs == brute


class _FunctionalMatmul(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, generator=torch.Generator().manual_seed(2)))

    def forward(self, s):
        return torch.matmul(s, self.w) + s @ self.w


class _Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _FunctionalMatmul()

    def forward(self, s):
        return self.inner(s)


def test_functional_matmul_of_spikes_inside_forward():
    s = torch.zeros(4, 6)
    s[0, 0] = s[1, 2] = s[3, 5] = 1.0
    p = profile(_Wrapper(), s)
    assert len(p.ops) == 2
    for r in p.ops:
        assert r.module == "inner" and r.op == "matmul" and r.operands == ("spike", "analog")
        assert (r.macs, r.acs, r.dense) == (0, 3 * 3, 4 * 6 * 3)
    assert p.acs == 18 and p.macs == 0


def test_scaled_spikes_are_spikes():
    s = torch.zeros(5, 4)
    s[0, 1] = s[4, 3] = 0.5                                           # values {0, 0.5}
    op = classify(s)
    assert op.kind == "spike" and op.scale == 0.5
    p = profile(nn.Linear(4, 7), s)
    assert (p.macs, p.acs) == (0, 2 * 7)


def test_graded_tensor_counts_levels():
    x = torch.tensor([[0.0, 0.25, 0.75], [0.5, 0.0, 0.25]])         # levels 0,1,3 / 2,0,1 of c = 0.25
    op = classify(x)
    assert op.kind == "graded" and op.scale == pytest.approx(0.25)
    p = profile(nn.Linear(3, 4, bias=False), x)
    r = _only(p)
    assert r.operands == ("graded", "analog") and (p.macs, p.acs) == (0, (1 + 3 + 2 + 1) * 4)


def test_classification_edge_cases():
    assert classify(torch.randn(10, generator=torch.Generator().manual_seed(0))).kind == "analog"
    assert classify(torch.softmax(torch.randn(4, 9, generator=torch.Generator().manual_seed(0)), -1)).kind == "analog"
    assert classify(torch.zeros(3, 3)).kind == "spike"
    counts = torch.tensor([0.0, 2.0, 3.0, 2.0])                        # smallest non-zero is 2, unit is 1
    op = classify(counts)
    assert op.kind == "graded" and op.scale == pytest.approx(1.0)
    assert classify(torch.tensor([0.0, 1.0, 300.0])).kind == "analog"   # above max_level
    assert classify(torch.tensor([0.0, 1.0, 300.0]), max_level=300).kind == "graded"
    assert classify(torch.tensor([True, False])).kind == "spike"


def test_two_spike_operands_count_coinciding_pairs():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(2, 5, 7, generator=g) < 0.4).float()
    b = (torch.rand(2, 7, 3, generator=g) < 0.4).float() * 0.5

    class M(nn.Module):
        def forward(self, a, b):
            return a @ b

    p = profile(M(), a, b)
    r = _only(p)
    brute = sum(int(a[n, i, k] != 0 and b[n, k, j] != 0) for n in range(2) for i in range(5) for k in range(7)
                for j in range(3))
    assert r.operands == ("spike", "spike") and (p.macs, p.acs) == (0, brute)


def test_einsum_and_bmm_are_covered():
    class M(nn.Module):
        def forward(self, a, b):
            return torch.einsum("bij,bjk->bik", a, b) + torch.bmm(a, b)

    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 3, 4, generator=g), torch.randn(2, 4, 5, generator=g)
    p = profile(M(), a, b)
    assert p.macs == 2 * (2 * 3 * 4 * 5)
    assert {r.op for r in p.ops} == {"einsum", "bmm"}


@pytest.mark.parametrize("math_backend", [False, True])
def test_sdpa_counts_its_two_products(math_backend):
    g = torch.Generator().manual_seed(5)
    b, h, L, S, E = 2, 3, 4, 6, 8
    q = (torch.rand(b, h, L, E, generator=g) < 0.5).float()
    k, v = torch.randn(b, h, S, E, generator=g), torch.randn(b, h, S, E, generator=g)

    class M(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    if math_backend:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            p = profile(M(), q, k, v)
    else:
        p = profile(M(), q, k, v)
    assert all(r.op == "scaled_dot_product_attention" for r in p.ops)
    assert p.dense == b * h * (L * E * S + L * S * E)
    assert p.acs == int(q.count_nonzero()) * S                         # Q K^T: spikes of Q times S columns
    assert p.macs == b * h * L * S * E                                 # A V: softmax output is analog


def test_module_attribution_and_spike_records():
    from spikevit.nn.dtss import DTSSLIF

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = DTSSLIF(tmax=4, dts=False)
            self.fc = nn.Linear(6, 3, bias=False)

        def forward(self, x):
            return self.fc(self.lif(x))

    net = Net().eval()
    x = 3 * torch.rand(4, 2, 6, generator=torch.Generator().manual_seed(6))
    s = net.lif(x)
    p = profile(net, x)
    assert list(p.spiking) == ["lif"]                                  # the inner LIF is not counted twice
    rec = p.spiking["lif"]
    assert rec.spikes == float((s != 0).sum()) and rec.neurons == 2 * 6 and rec.steps == 4
    r = _only(p)
    assert r.module == "fc" and r.acs == int((s != 0).sum()) * 3
    assert p.samples == 4                                              # leading dim unless told
    assert p.snn_flops() == pytest.approx(p.dense * rec.spikes / rec.neurons)


def test_energy_and_addition():
    lin = nn.Linear(4, 2, bias=False)
    x = torch.zeros(1, 4)
    x[0, 0] = 1.0
    pa = profile(lin, torch.randn(1, 4, generator=torch.Generator().manual_seed(7)))
    ps = profile(lin, x)
    em = ENERGY_MODELS["sit45nm"]
    assert pa.energy("sit45nm") == pytest.approx(8 * em.e_mac)
    assert ps.energy("sit45nm") == pytest.approx(2 * em.e_ac)
    assert ps.energy("sit45nm", e_ac=1.0) == pytest.approx(2.0)
    total = pa + ps
    assert (total.macs, total.acs, total.samples) == (8, 2, 2)


def test_purity_table_per_block():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b((self.a(x) > 0).float())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for blk in self.blocks:
                x = blk(x)
            return x

    p = profile(Net(), torch.randn(3, 4, generator=torch.Generator().manual_seed(8)))
    rows = {(r["block"], r["module"]): r for r in p.purity()}
    assert rows[("blocks.0", "blocks.0.a")]["operands"] == "analog x analog"
    assert rows[("blocks.0", "blocks.0.b")]["operands"] == "spike x analog"
    assert rows[("blocks.0", "blocks.0.b")]["event_driven"]
    summary = {r["block"]: r for r in p.purity_summary()}
    assert summary["blocks.0"]["products"] == 2 and summary["blocks.0"]["event_driven_products"] == 1


def test_spike_times_graded_product_is_driven_by_the_spikes():
    """Spikformer's Q (K^T V): K^T V of binary K, V holds integer counts (graded); Q M costs nnz(Q) x d."""
    g = torch.Generator().manual_seed(9)
    q, k, v = ((torch.rand(2, 6, 4, generator=g) < 0.5).float() for _ in range(3))

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return q @ (k.transpose(-1, -2) @ v)

    p = profile(Attn(), q, k, v)
    ktv, qm = p.ops
    assert ktv.operands == ("spike", "spike")
    assert ktv.acs == int((k.sum(-1) * v.sum(-1)).sum())              # pairs where both spike, per token
    assert qm.operands[0] == "spike" and qm.operands[1] in ("graded", "spike")
    assert qm.acs == int(q.count_nonzero()) * 4
    # zero checks: every element of q, k, v (inputs), not of the intermediate K^T V
    assert ktv.zero_checks == k.numel() + v.numel() and qm.zero_checks == q.numel()
    assert ktv.sources == (None, None) and qm.sources[1].startswith("product:")


def test_graded_times_graded_takes_the_cheaper_driver():
    a = torch.tensor([[2.0, 0.0, 1.0]])                               # levels sum 3, reaches n = 2 columns
    b = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 2.0]])           # levels sum 10, reaches m = 1 row

    class M(nn.Module):
        def forward(self, a, b):
            return a @ b

    p = profile(M(), a, b)
    assert _only(p).operands == ("graded", "graded")
    assert p.acs == min(3 * 2, 10 * 1)


def test_provenance_through_views_and_copies():
    from spikevit.nn.lif import LIF

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = LIF()
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            s = self.drop(self.lif(x)).transpose(0, 1)                 # [B, T, 4], non-contiguous
            return self.fc(s.reshape(-1, 4))                           # reshape copies

    net = Net().eval()
    x = 2 * torch.rand(3, 2, 4, generator=torch.Generator().manual_seed(10))
    p = profile(net, x)
    assert _only(p).sources[0] == "lif"


def test_torch_multihead_attention_and_encoder_layer():
    """nn.MultiheadAttention's eval path (packed projection, fused attention) against its closed form."""
    torch.manual_seed(0)
    b, n, d, h, ff = 3, 5, 16, 2, 32
    enc = nn.TransformerEncoderLayer(d, h, ff, batch_first=True).eval()
    x = torch.randn(b, n, d, generator=torch.Generator().manual_seed(11))
    p = profile(enc, x)
    attn = b * n * d * 3 * d + 2 * b * n * n * d + b * n * d * d          # QKV, Q K^T and A V, out projection
    assert p.macs == attn + 2 * b * n * d * ff and p.acs == 0
    assert {r.module for r in p.ops} == {"self_attn", "linear1", "linear2"}


def test_spiking_softmax_reports_si_exp_and_si_norm_spikes():
    from spikevit.functional.fewspike import fs_spikes
    from spikevit.nn.spiking_softmax import SpikingSoftmax

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.softmax = SpikingSoftmax(steps=12, norm_steps=8)

        def forward(self, x):
            return self.softmax(x)

    net = Net()
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(12)) * 2 - 1
    p = profile(net, x)
    out = net.softmax(x)
    si_exp = float(fs_spikes(x, net.softmax.T, net.softmax.h).sum())
    assert p.spiking["softmax"].spikes == pytest.approx(si_exp) and p.spiking["softmax"].neurons == 24
    norm = p.spiking["softmax.si_norm"]
    assert norm.spikes == float((out * 8).round().sum()) and norm.steps == 8


def test_transposed_conv_counts_every_tap_of_each_input():
    """conv_transpose (stride 2, no padding: nothing is cropped): each input element meets C_out x k x k
    weights, so dense = inputs x C_out x 9 and a spike input costs nnz x C_out x 9 accumulates."""
    up = nn.ConvTranspose2d(3, 5, 3, stride=2, bias=False)
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 1, 2] = x[1, 2, 3, 3] = x[1, 1, 0, 0] = 1.0
    p = profile(up, x)
    r = _only(p)
    assert r.op == "conv_transpose2d" and r.dense == x.numel() * 5 * 9
    assert (p.macs, p.acs) == (0, 3 * 5 * 9)


def test_constant_products_are_counted_but_not_in_the_purity_table():
    """A product of parameters only (here a weight Gram matrix) does not depend on the input: it is
    performed and counted, flagged constant, and left out of the spike-purity tables."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4, generator=torch.Generator().manual_seed(13)))

        def forward(self, x):
            gram = self.w @ self.w.T                                 # constant
            return x.transpose(0, 1).reshape(-1, 4) @ gram           # input-dependent, through a copy

    p = profile(Net(), torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(14)))
    const, data = p.ops
    assert const.constant and not data.constant
    assert p.macs == 64 + 6 * 4 * 4
    assert [r["module"] for r in p.purity()] == [""] and p.purity_summary()[0]["products"] == 1


def test_keyword_inputs_are_inputs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, *, x):
            return self.fc(x)

    p = profile(Net(), x=torch.randn(5, 4, generator=torch.Generator().manual_seed(15)))
    assert p.samples == 5 and p.macs == 5 * 4 * 2 and not _only(p).constant and len(p.purity()) == 1
