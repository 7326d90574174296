"""DTS-SNN and SIT entries of `spikevit reproduce`: complete, the paper's numbers as printed, each offline entry
end to end on the conftest data slices, the GPU entries' code paths on tiny slices (random weights)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from spikevit.cli.main import main
from spikevit.errors import SpikevitError
from spikevit.reproduce import (
    dts_tables,
    get_reproduction,
    list_reproductions,
    run_reproduction,
    sit_tables,
)
from spikevit.reproduce.common import Context

PAPERS = Path(__file__).resolve().parents[2].parent / "shared" / "papers"
DTS = {"dts-table3", "dts-table4", "dts-table5", "dts-fig2", "dts-table1-cifar10", "dts-table1-cifar100",
       "dts-table1-imagenet", "dts-tables3-5-cifar100"}
SIT = {"sit-fig7", "sit-tables2-5", "sit-tables2-5-spiking", "sit-table2-edgenext", "sit-table3-nextvit",
       "sit-table4-deit"}


def test_entries_registered_complete_and_listed(capsys):
    reps = {r.name: r for r in list_reproductions()}
    assert DTS | SIT <= set(reps)
    assert {n for n in DTS | SIT if reps[n].offline} == {"dts-table3", "dts-table4", "dts-table5", "dts-fig2",
                                                        "sit-fig7", "sit-tables2-5", "sit-tables2-5-spiking"}
    for name in DTS | SIT:
        rep = reps[name]
        assert rep.paper == ("DTS-SNN" if name in DTS else "SIT")
        assert rep.paper_numbers and rep.needs and rep.runtime and rep.target and rep.summary
        if not rep.offline:
            assert "GPU" in rep.needs, name
        else:
            assert rep.quick_changes(), name
        for quick in (False, True):                      # every entry's design is valid (no training needed)
            p = rep.params(quick)
            if name in DTS:
                runs = dts_tables.table_runs(p)
                assert runs and len({r.name for r in runs}) == len(runs)
            else:
                assert p["part"] in ("fig7", "layers")
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in DTS | SIT:
        assert name in out
    assert "78.09 / 2.73 / 5.56 / 185.31" in out and "0.013991" in out and "[needs downloads/GPU] SIT" in out


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?", line)]


def _printed(rows, path: Path) -> None:
    """Every row's numbers occur together on one line of the paper's text (as printed)."""
    lines = [_numbers(ln) for ln in path.read_text().splitlines()]
    for row in rows:
        want = [abs(float(v)) for v in row if isinstance(v, (int, float)) and v is not None]
        assert any(all(any(abs(w - abs(n)) < 1e-9 for n in nums) for w in want) for nums in lines), row


@pytest.mark.skipif(not PAPERS.is_dir(), reason="paper texts not available")
def test_paper_numbers_are_the_printed_ones():
    dts, sit = PAPERS / "dts-snn-vit.txt", PAPERS / "sit-conversion.txt"
    _printed([r[1:] for r in dts_tables.TABLE3], dts)
    _printed(dts_tables.TABLE4, dts)
    _printed([r[2:] for rows in dts_tables.TABLE5.values() for r in rows], dts)
    _printed([r[1:] for rows in dts_tables.TABLE1.values() for r in rows], dts)
    _printed([r[1:] for rows in dts_tables.TABLE2.values() for r in rows], dts)
    _printed([r for _, rows in sit_tables.TABLES.values() for r in rows], sit)
    _printed([(r[2], r[3], r[5], r[8]) for r in sit_tables.TABLE5], sit)
    _printed([(sit_tables.FIG7["mse"],), (sit_tables.FIG7["si_exp_rmse"],)], sit)


# --------------------------------------------------------------------------- DTS offline entries


@pytest.fixture(scope="module")
def dts_work(tmp_path_factory):
    """One run folder for the DTS tests: runs of the same design and budget are trained once."""
    return tmp_path_factory.mktemp("dts-runs")


TINY = {"epochs": "1", "train_subset": "60", "test_subset": "40", "batch_size": "20", "warmup_epochs": "0"}


def _dts(name, data_slices, tmp_path, work, **over):
    path = run_reproduction(name, overrides=TINY | {"work_dir": str(work)} | over, data_root=data_slices,
                            cache=tmp_path / "cache", out=tmp_path / "out", device="cpu")
    return json.loads(path.read_text()), path


def test_dts_table3_beside_the_paper(data_slices, tmp_path, dts_work):
    doc, path = _dts("dts-table3", data_slices, tmp_path, dts_work)
    rows = doc["tables"]["Table III: ours beside the paper"]
    assert [r["mask_loss_groups"] for r in rows] == ["all", "qkv+attn+mlp", "qkv+mlp", "no mask loss"]
    for r, paper in zip(rows, dts_tables.TABLE3):
        assert (r["paper_acc1"], r["paper_TS"], r["paper_SA_percent"], r["paper_SOPs_M"]) == paper[1:]
        assert 0 <= r["acc1"] <= 100 and 1 <= r["TS"] <= 4 and r["SOPs_M"] >= 0
    assert "NOT the paper's scale" in path.with_suffix(".md").read_text()
    assert (path.parent / "dts-table3-study.json").is_file()


def test_dts_table5_energy_normalised_to_the_dts_run(data_slices, tmp_path, dts_work):
    doc, _ = _dts("dts-table5", data_slices, tmp_path, dts_work)
    rows = doc["tables"]["Table V: ours beside the paper"]
    by_model = {r["model"]: r for r in rows}
    ref = by_model[rows[0]["reference"]]
    assert ref["type"] == "DTS SNN" and ref["norm_TE"] == pytest.approx(1.0)
    for r in rows:                                       # normalised = own total / the DTS run's total
        assert r["norm_TE"] == pytest.approx(r["total_uJ"] / ref["total_uJ"], rel=1e-6)
        assert r["paper_dataset"] == "cifar100"
    for t in (1, 2, 4):                                  # a fixed-T model runs exactly T steps
        assert by_model[f"fixed-T{t}"]["TS"] == t and by_model[f"fixed-T{t}"]["type"] == "Spik. SNN"
    assert by_model["NS ViT"]["paper_norm_CE"] == 25.7
    # energy grows with the number of steps of a fixed-T Spikformer (same weights budget, more steps)
    assert by_model["fixed-T1"]["total_uJ"] < by_model["fixed-T4"]["total_uJ"]


def test_dts_table4_rows_matched_by_rank_of_lambda(data_slices, tmp_path, dts_work):
    doc, _ = _dts("dts-table4", data_slices, tmp_path, dts_work, table4_inits="2", table4_extra="")
    rows = doc["tables"]["Table IV: ours beside the paper"]
    assert [(r["init_TS"], r["lambda_m"], r["paper_lambda_m"]) for r in rows] == [(2, 1e-2, 1e-4), (2, 1e-4, 1e-6)]
    assert (rows[0]["paper_acc1"], rows[0]["paper_TS"]) == (76.96, 2.69)
    assert (rows[1]["paper_acc1"], rows[1]["paper_TS"]) == (78.09, 2.73)


def test_dts_fig2_cosines_per_group(data_slices, tmp_path, dts_work):
    doc, path = _dts("dts-fig2", data_slices, tmp_path, dts_work, fig2_t="2")
    groups = doc["tables"]["Fig. 2: cosine similarity of LIF inputs, step 1 vs later steps, per group"]
    assert {g["group"] for g in groups} >= {"sps", "qkv", "mlp"}
    for g in groups:
        assert -1e-9 <= g["cosine_min"] <= g["cosine_mean"] <= g["cosine_max"] <= 1 + 1e-9
    assert (path.parent / "dts-fig2-study-fig2.png").is_file()


def test_dts_design_errors_are_one_line():
    with pytest.raises(SpikevitError, match="exceeds tmax"):
        dts_tables.table_runs(dts_tables.PARAMS | {"table": "4", "table4_inits": "5"})
    with pytest.raises(SpikevitError, match="dts_rows"):
        dts_tables.table_runs(dts_tables.PARAMS | {"table": "1", "dts_rows": "2:4"})
    with pytest.raises(SpikevitError, match="choose from"):
        dts_tables.table_runs(dts_tables.PARAMS | {"table": "7"})


def test_dts_paper_scale_entry_runs_on_a_tiny_slice(data_slices, tmp_path):
    """dts-table1-cifar10 as a GPU user runs it (Spikformer-4-384, the TET and Hoyer baselines at T = 2), here
    on 10 CIFAR-10 images for one epoch, with fewer fixed-T and DTS rows (T <= 2) to stay fast."""
    rep = get_reproduction("dts-table1-cifar10")
    p = rep.params() | {"epochs": 1, "train_subset": 10, "test_subset": 10, "batch_size": 10,
                        "warmup_epochs": 0.0, "work_dir": str(tmp_path / "work"), "fixed_ts": "1",
                        "dts_rows": "1:2:1e-6"}
    ctx = Context("dts-table1-cifar10", data_root=data_slices, cache=tmp_path, out=tmp_path / "out", device="cpu")
    doc = json.loads(rep.load().run(ctx, p).read_text())
    rows = {r["run"]: r for r in doc["tables"]["Table I / II: ours beside the paper"] if r["run"]}
    assert rows["fixed-T1"]["paper_acc1"] == 94.13 and rows["fixed-T1"]["T_avg"] == 1
    assert rows["tet-T2"]["paper_acc1"] == 94.08 and rows["hoyer-T2"]["paper_acc1"] == 93.69
    (dts,) = [r for r in rows.values() if r["method"] == "DTS"]
    assert (dts["paper_acc1"], dts["paper_T"]) == (94.39, 1.15)    # the paper's DTS row of lowest T_avg
    assert doc["config"]["params"]["arch"] == "spikformer-4-384"


# --------------------------------------------------------------------------- SIT


def test_sit_fig7_beside_the_paper(tmp_path):
    over = {"rows": "40", "ks": "4,12", "row_lengths": "8,64"}
    path = run_reproduction("sit-fig7", overrides=over, out=tmp_path, device="cpu")
    doc = json.loads(path.read_text())
    k12 = doc["tables"]["Fig. 7 at K = 12: ours beside the paper"]
    assert [r["row_length"] for r in k12] == [8, 64] and all(r["paper_mse"] == 0.013991 for r in k12)
    from spikevit.nn import SpikingSoftmax  # the same rows, measured here
    g = torch.Generator().manual_seed(0)
    x = -1 + 2 * torch.rand(40, 8, generator=g)
    err = SpikingSoftmax(12)(x) - torch.softmax(x, -1)
    assert k12[0]["mse"] == pytest.approx(float(err.pow(2).mean()), rel=1e-5)
    rows = doc["tables"]["spiking-softmax error vs K"]
    by = {(r["row_length"], r["K"]): r for r in rows}
    assert by[(8, 12)]["rel_rmse"] < by[(8, 4)]["rel_rmse"]  # more time steps, smaller error
    assert (tmp_path / "sit-fig7" / "sit-fig7-fig7.png").is_file()


def test_sit_tables2_5_on_the_committed_model(data_slices, tmp_path):
    over = {"test_subset": "20", "batch_size": "20", "sweep": "", "energy_batches": "1"}
    path = run_reproduction("sit-tables2-5", overrides=over, data_root=data_slices, out=tmp_path, device="cpu")
    doc = json.loads(path.read_text())
    rows = doc["tables"]["Tables 2-4 shape: ours beside the paper (same dataset column)"]
    assert [r["blocks_converted"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert r["acc_change"] == pytest.approx(r["acc1"] - rows[0]["acc1"])
    assert rows[0]["paper_T2_EdgeNeXt_acc1"] == 97.69 and rows[4]["paper_T3_Next-ViT_acc1"] == 97.61
    assert rows[4]["paper_T2_EdgeNeXt_acc1"] is None            # EdgeNeXt has 3 blocks
    t5 = doc["tables"]["Table 5: ours beside the paper"]
    ours = next(r for r in t5 if r["source"] == "ours")
    from spikevit.train import load_trained_model
    model, _ = load_trained_model(sit_tables._repo_file(sit_tables.COMMITTED["vit-cifar-tiny"]))
    assert ours["params_M"] == pytest.approx(sum(q.numel() for q in model.parameters()) / 1e6)
    assert ours["blocks"] == 4 and ours["energy_ann_mJ"] > 0
    assert {r["model"] for r in t5 if r["source"] == "paper"} == {"EdgeNeXt", "Next-ViT", "UniFormer"}
    assert all(r["dataset"] == "cifar10" for r in t5)
    assert doc["results"]["test_images"] == 20


def _random_state(tmp_path, arch, **kw) -> str:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, num_classes=10, **kw)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.parametrize("name,arch,img,blocks,kw", [("sit-table2-edgenext", "edgenext_small", 32, 3, {}),
                                                      ("sit-table3-nextvit", "nextvit_small", 64, 4, {}),
                                                      ("sit-table4-deit", "deit_small_patch16_224", 32, 12,
                                                       {"img_size": 32})])
def test_sit_paper_scale_entries_on_a_tiny_slice(name, arch, img, blocks, kw, data_slices, tmp_path):
    """The GPU entries' code path (timm model, state dict, block-by-block conversion, energy) with random
    weights on CIFAR-10 images; the number of attention blocks is the architecture's (EdgeNeXt-S: 3 and
    Next-ViT-S: 4, as the paper's Tables 2, 3 and 5; DeiT-S: 12)."""
    pytest.importorskip("timm")
    rep = get_reproduction(name)
    p = rep.params() | {"dataset": "cifar10", "checkpoint": _random_state(tmp_path, arch, **kw), "img_size": img,
                        "test_subset": 10, "batch_size": 10, "sweep": "", "energy_batches": 1}
    ctx = Context(name, data_root=data_slices, out=tmp_path / "out", device="cpu")
    doc = json.loads(rep.load().run(ctx, p).read_text())
    assert doc["results"]["attention_blocks"] == blocks
    rows = doc["tables"]["Tables 2-4 shape: ours beside the paper (same dataset column)"]
    assert len(rows) == blocks + 1
    if name == "sit-table2-edgenext":
        assert [r["paper_T2_EdgeNeXt_acc1"] for r in rows] == [97.69, 97.69, 97.68, 97.69]
    if name == "sit-table3-nextvit":
        assert [r["paper_T3_Next-ViT_acc1"] for r in rows] == [97.62, 97.61, 97.61, 97.61, 97.61]


def test_sit_published_weights_need_imagenet(tmp_path):
    ctx = Context("sit-table2-edgenext", out=tmp_path)
    p = get_reproduction("sit-table2-edgenext").params() | {"dataset": "cifar10"}
    with pytest.raises(SpikevitError, match="fine-tuned state dict"):
        sit_tables.entry_inputs(ctx, p)
    with pytest.raises(SpikevitError, match="no committed model file"):
        sit_tables.entry_inputs(ctx, sit_tables.PARAMS | {"model": "vit-cifar-micro"})
