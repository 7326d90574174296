"""Measurements (T_l, spikes, SOPs) against brute-force counts; the DTS energy model against closed forms;
Fig. 2 cosine similarity; the CLI end to end on a real MNIST slice."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spikevit.cli.main import main as cli_main
from spikevit.dts import cosine_similarity, input_histograms, measure, parse_groups
from spikevit.energy import get_energy_model
from spikevit.energy.dts import (
    MembraneOps,
    SynapticOps,
    ann_energy,
    normalised_energy,
    snn_energy,
)
from spikevit.errors import SpikevitError
from spikevit.models import create_model
from spikevit.models.spikformer import ConvBN, SpikeAttention
from spikevit.nn import DTSSLIF
from spikevit.train.data import make_loader


def model_and_loader(seed=0, **kw):
    torch.manual_seed(seed)
    args = {"num_classes": 10, "img_size": 16, "in_chans": 3, "tmax": 4, "dts": True, "init_steps": 2}
    args.update(kw)
    model = create_model("spikformer-1-64", **args)
    g = torch.Generator().manual_seed(seed)
    for m in model.spiking_layers().values():
        if m.dtss is not None:
            m.dtss.tp.data.copy_(torch.randn(4, generator=g))
    x = torch.randn(12, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (12,), generator=g)
    return model.eval(), make_loader(TensorDataset(x, y), 5)


def test_measurement_matches_brute_force_counts():
    model, loader = model_and_loader()
    # brute force: record every LIF output and every spiking-layer input in the masked (non-skipped) form
    rec = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, DTSSLIF):
            hooks.append(m.register_forward_hook(lambda mod, a, o, n=n: rec.setdefault(n, []).append(o)))
        if isinstance(m, SpikeAttention):
            hooks.append(m.register_forward_hook(lambda mod, a, o, n=n: rec.setdefault(n, []).append(a[:3])))
        if isinstance(m, ConvBN) and m.conv.kernel_size == (1,):
            hooks.append(m.register_forward_hook(lambda mod, a, o, n=n, m=m: rec.setdefault(n, []).append(
                (a[0], m.conv))))
    model.set_skip_masked(False)
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in loader])
    for h in hooks:
        h.remove()
    meas = measure(model, loader)
    assert meas.samples == 12
    ys = torch.cat([y for _, y in loader])
    assert meas.acc1 == pytest.approx(100.0 * float((logits.argmax(1) == ys).float().mean()))
    steps = model.time_steps()
    lif = {r["name"]: r for r in meas.lif}
    assert {n: r["T_l"] for n, r in lif.items()} == steps
    assert meas.t_avg == pytest.approx(sum(steps.values()) / len(steps))
    for n in steps:
        spikes = sum(float((o != 0).sum()) for o in rec[n]) / 12
        assert lif[n]["spikes"] == pytest.approx(spikes)          # masked steps carry no spikes
    syn = {s.name: s for s in meas.synaptic}
    # 1x1 convs: SOPs = exact accumulate count = sum over input spikes of the conv's fan-out (C_out)
    for n in ["blocks.0.attn.q", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.attn.proj"]:
        exact = sum(float((s != 0).sum()) * conv.out_channels for s, conv in rec[n]) / 12
        assert syn[n].sops == pytest.approx(exact, rel=1e-6), n
    # attention: products needed by K^T V (both spikes 1) and by Q (K^T V) (one per Q spike and column)
    exact = 0.0
    for q, k, v in rec["blocks.0.attn.attn"]:
        t, b, d, n = q.shape
        kh, vh, qh = ((z != 0).float().reshape(t, b, 2, d // 2, n) for z in (k, v, q))
        exact += float(torch.einsum("tbhin,tbhjn->", kh, vh)) + float(qh.sum()) * (d // 2)
    assert syn["blocks.0.attn.attn"].sops == pytest.approx(exact / 12)
    # the encoding conv is dense and computed once: 16 x 16 x 8 outputs x 3 x 9 MACs
    assert syn["sps.enc.0"].kind == "encoding" and syn["sps.enc.0"].dense_macs == 16 * 16 * 8 * 27
    # SA = spikes / (neurons x Tmax)
    total = sum(r["spikes"] for r in meas.lif)
    assert meas.spiking_activity == pytest.approx(100 * total / (4 * sum(r["neurons"] for r in meas.lif)))


def test_fewer_steps_cost_fewer_membrane_accesses_and_operations():
    full, loader = model_and_loader(1, dts=False)
    dts, _ = model_and_loader(1)
    dts.load_state_dict({k: v for k, v in full.state_dict().items()}, strict=False)
    a, b = measure(full, loader), measure(dts, loader)
    ea, eb = snn_energy(a.synaptic, a.membranes), snn_energy(b.synaptic, b.membranes)
    assert b.t_avg < a.t_avg == 4
    assert eb["membrane_accesses"] == pytest.approx(sum(2 * m.neurons * m.steps for m in b.membranes))
    assert eb["membrane_accesses"] < ea["membrane_accesses"]
    assert sum(s.zero_checks for s in b.synaptic) < sum(s.zero_checks for s in a.synaptic)


def test_energy_model_closed_form():
    em = get_energy_model("dts45nm")
    syn = [SynapticOps("enc", "encoding", 1000.0, 1), SynapticOps("c1", "spiking", 5000.0, 2, sops=1200.0,
                                                                   zero_checks=300.0),
           SynapticOps("att", "spiking", 400.0, 2, sops=50.0, zero_checks=60.0, ann_macs=800.0)]
    mem = [MembraneOps("l1", 100.0, 2), MembraneOps("l2", 50.0, 1)]
    e = snn_energy(syn, mem, em)
    assert e["compute_J"] == pytest.approx(1000 * 13.32e-12 + 1250 * 1.8e-12 + 360 * 0.05e-12)
    assert e["memory_J"] == pytest.approx((2 * 100 * 2 + 2 * 50 * 1) * em.e_mem)
    a = ann_energy(syn, mem, em)
    assert a["compute_J"] == pytest.approx((1000 + 5000 + 800) * 13.32e-12)
    assert a["memory_J"] == pytest.approx(2 * 150 * em.e_mem)
    rows = normalised_energy({"ann": a, "snn": e}, "snn")
    assert rows[1]["norm_total"] == 1.0 and rows[0]["norm_compute"] == pytest.approx(a["compute_J"] / e["compute_J"])
    with pytest.raises(SpikevitError):
        snn_energy([SynapticOps("x", "weird", 1, 1)], [])


def test_cosine_similarity_and_histograms():
    assert cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(0.0)
    assert cosine_similarity(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(2 ** -0.5)
    model, loader = model_and_loader(2, dts=False)
    hists = input_histograms(model, loader, bins=20, max_batches=2)
    first = hists["sps.lifs.0"]   # fed by the directly encoded image: the same input at every step
    assert first["cosine"] == pytest.approx(1.0)
    assert first["first"].sum() == pytest.approx(1.0) and len(first["edges"]) == 21
    assert min(h["cosine"] for h in hists.values()) < 0.999   # later layers do see different inputs later


def test_parse_groups():
    assert parse_groups("qkv,mlp") == ("qkv", "mlp")
    assert parse_groups("qkv+mlp") == ("qkv", "mlp")
    assert parse_groups("all") == ("sps", "qkv", "attn", "mlp")
    assert parse_groups("none") == ()
    with pytest.raises(SpikevitError, match="unknown mask-loss group"):
        parse_groups("qkv,foo")


def test_cli_dts_train_evaluate_and_study_on_mnist_slice(data_slices, tmp_path, capsys):
    common = ["--dataset", "mnist", "--data-root", str(data_slices), "--arch", "spikformer-1-64", "--epochs", "1",
              "--batch-size", "20", "--model-arg", "dim=32", "--img-size", "16", "--train-subset", "60",
              "--test-subset", "40"]
    run = tmp_path / "run"
    assert cli_main(["dts", "train", *common, "--tmax", "4", "--init-steps", "2", "--lambda-m", "1e-2",
                     "--mask-groups", "qkv,mlp", "--out", str(run)]) == 0
    rep = json.loads((run / "report.json").read_text())
    s = rep["results"]["summary"]
    assert s["samples"] == 40 and 1 <= s["T_avg"] <= 4 and s["tmax"] == 4
    log = json.loads((run / "log.json").read_text())
    assert "mask_steps" in log["epochs"][0]["train"] and "T_avg" in log["epochs"][0]["metrics"]
    fixed = tmp_path / "fixed"
    assert cli_main(["dts", "train", *common, "--tmax", "2", "--fixed", "--out", str(fixed)]) == 0
    ev = tmp_path / "ev.json"
    assert cli_main(["dts", "evaluate", "--dataset", "mnist", "--data-root", str(data_slices), "--checkpoint",
                     str(run / "model.safetensors"), "--reference", str(fixed / "model.safetensors"), "--img-size", "16",
                     "--test-subset", "40", "--json", str(ev), "--fig2", str(tmp_path / "f2.png")]) == 0
    doc = json.loads(ev.read_text())
    models = [r["model"] for r in doc["tables"]["energy (normalised to this model)"]]
    assert models == ["NS ViT", "fixed", "run"] and (tmp_path / "f2.png").exists()
    assert doc["results"]["summary"]["acc1"] == pytest.approx(s["acc1"])   # same model, same test split
    # bad input: one line, exit 2
    assert cli_main(["dts", "train", *common, "--mask-groups", "qkv,bogus", "--out", str(tmp_path / "b")]) == 2
    assert "unknown mask-loss group" in capsys.readouterr().err
    study = tmp_path / "study"
    assert cli_main(["dts", "study", *common, "--fixed-t", "1", "--lambdas", "1e-2", "--groupings", "qkv+mlp",
                     "--no-nomask", "--out", str(study), "--json", str(study / "s.json")]) == 0
    sdoc = json.loads((study / "s.json").read_text())
    assert [r["run"] for r in sdoc["tables"]["runs"]] == ["fixed-T1", "dts-qkv+mlp-lam1e-2"]
    assert (study / "s.png").exists()
    # a seed replicate on the same images (--data-seed 0), reported beside the first study with its spread
    study1 = tmp_path / "study-seed1"
    assert cli_main(["dts", "study", *common, "--fixed-t", "1", "--lambdas", "1e-2", "--groupings", "qkv+mlp",
                     "--no-nomask", "--seed", "1", "--data-seed", "0", "--out", str(study1), "--no-report"]) == 0
    assert cli_main(["dts", "study", *common, "--fixed-t", "1", "--lambdas", "1e-2", "--groupings", "qkv+mlp",
                     "--no-nomask", "--out", str(study), "--json", str(study / "s.json"), "--report-only",
                     "--replicate", f"seed1={study1}"]) == 0
    reps = {r["run"]: r for r in json.loads((study / "s.json").read_text())["tables"]["seed replicates"]}
    assert set(reps) == {"fixed-T1", "dts-qkv+mlp-lam1e-2"}
    for name, r in reps.items():
        accs = [json.loads((d / name / "measure.json").read_text())["acc1"] for d in (study, study1)]
        assert r["n"] == 2 and r["seeds"] == "seed0,seed1"
        assert r["acc1_mean"] == pytest.approx(sum(accs) / 2) and r["acc1_range"] == pytest.approx(max(accs) - min(accs))
        assert json.loads((study1 / name / "measure.json").read_text())["samples"] == 40
    assert cli_main(["dts", "study", *common, "--out", str(study), "--report-only", "--replicate", "nolabel"]) == 2
    assert "LABEL=DIR" in capsys.readouterr().err


def test_head_and_zero_checks_through_the_engine():
    """The classifier reads token-averaged spikes (graded, levels k/N): one accumulate per spike and output
    class; zero checks: one per input element of every executed step."""
    model, loader = model_and_loader(3)
    for m in model.modules():                                    # batch-norm statistics of the data: every
        if isinstance(m, nn.modules.batchnorm._BatchNorm):       # layer spikes (a random net falls silent)
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    model.eval()
    heads, inputs = [], {}
    hooks = [model.head.register_forward_hook(lambda m, a, o: heads.append(a[0]))]
    for n, m in model.named_modules():
        if isinstance(m, ConvBN) and n.startswith("blocks"):
            hooks.append(m.register_forward_hook(lambda mod, a, o, n=n: inputs.setdefault(n, []).append(a[0])))
    meas = measure(model, loader)
    for h in hooks:
        h.remove()
    syn = {s.name: s for s in meas.synaptic}
    spikes = sum(float(s.sum()) * model.num_tokens for s in heads[-3:]) / 12   # measured: the last 3 batches
    assert spikes > 0 and len(heads) == 4                        # one masked-form reference sample first
    assert syn["head"].sops == pytest.approx(spikes * 10)
    assert syn["head"].zero_checks == pytest.approx(sum(s.numel() for s in heads[-3:]) / 12)
    for n, xs in inputs.items():
        assert syn[n].zero_checks == pytest.approx(sum(x.numel() for x in xs[-3:]) / 12), n


def test_gate_arithmetic_is_not_a_synaptic_layer():
    """The DTSS time mask is computed from the gate parameters (a small matmul): the profile sees it, the
    DTS accounting leaves it out, so the synaptic layers are exactly the convs, attention and the head."""
    model, loader = model_and_loader(4)
    meas = measure(model, loader)
    names = {s.name for s in meas.synaptic}
    convs = {n for n, m in model.named_modules() if isinstance(m, ConvBN)}
    attn = {n for n, m in model.named_modules() if isinstance(m, SpikeAttention)}
    assert names == convs | attn | {"sps.enc.0", "head"}
    assert [s.name for s in meas.synaptic if s.kind == "encoding"] == ["sps.enc.0"]
