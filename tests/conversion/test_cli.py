"""`spikevit convert` commands end to end on tiny budgets and data slices."""
import json

import torch

from spikevit.cli.main import main
from spikevit.conversion.params import read_params
from spikevit.models import create_model


def test_fit_neuron_writes_and_merges(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    args = ["convert", "fit-neuron", "--function", "exp", "--steps", "3", "--population", "8", "--rounds", "1",
            "--iters", "20", "--points", "500", "--init-from", "none", "--out", str(out)]
    assert main(args + ["--json", str(tmp_path / "fit.json")]) == 0
    _, entries = read_params(out)
    assert entries["exp/3"]["n_points"] == 500 and entries["exp/3"]["rmse"] < 0.2
    doc = json.loads((tmp_path / "fit.json").read_text())
    assert doc["results"]["steps"] == 3 and len(doc["results"]["T"]) == 3
    # seeded from the stored fit: never worse than it (kept only if better)
    assert main(args[:-4] + ["--init-from", str(out), "--out", str(out), "--seed", "1"]) == 0
    assert read_params(out)[1]["exp/3"]["rmse"] <= entries["exp/3"]["rmse"]
    assert "RMSE" in capsys.readouterr().out


def test_bad_input_is_one_line_error(capsys):
    assert main(["convert", "fit-neuron", "--function", "tanh", "--steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikevit: error:") and "unknown function 'tanh'" in err and "\n" not in err


def test_sweep_report(tmp_path):
    j = tmp_path / "sweep.json"
    assert main(["convert", "sweep", "--steps", "4,12", "--row-lengths", "8", "--rows", "50", "--json", str(j)]) == 0
    doc = json.loads(j.read_text())
    rows = doc["tables"]["softmax_error_vs_K"]
    assert [r["K"] for r in rows] == [4, 12] and rows[1]["mse"] < rows[0]["mse"]
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "sweep.md").exists()


def test_run_on_a_tiny_checkpoint(tmp_path, data_slices):
    from spikevit.train import save_model

    torch.manual_seed(0)
    model = create_model("vit-cifar-micro")
    ckpt = tmp_path / "model.safetensors"
    save_model(ckpt, model, {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    j = tmp_path / "run.json"
    assert main(["convert", "run", "--model", "vit-cifar-micro", "--checkpoint", str(ckpt), "--dataset", "cifar10",
                 "--data-root", str(data_slices), "--steps", "12", "--test-subset", "20", "--batch-size", "10",
                 "--sweep-steps", "8,12", "--json", str(j)]) == 0
    doc = json.loads(j.read_text())
    t = doc["tables"]
    assert [r["blocks_converted"] for r in t["layer_by_layer"]] == [0, 1, 2]
    assert doc["results"]["ann"]["samples"] == 20
    e = doc["results"]["energy"]
    assert e["energy_ann_mJ"] > 0 and e["e_mac_J"] == 4.6e-12 and e["e_ac_J"] == 0.9e-12
    assert {r["module"] for r in t["spikes"]} == {"blocks.0.attn.spiking_softmax", "blocks.1.attn.spiking_softmax"}
    assert [r["block"] for r in t["energy_per_block"] if r["block"].startswith("blocks")] == ["blocks.0", "blocks.1"]
    # level "softmax": the spiking softmax feeds A V as a real-valued (SI-norm) operand; nothing event-driven
    assert not any(r["event_driven"] for r in t["purity"])
    # the micro ViT squeezes its logits with tanh itself: the report says so and gives the raw logit range,
    # the softmax inputs it captured lie in (-1, 1), and a second squeeze on top is refused
    assert doc["results"]["model_attention_squeeze"] == "tanh"
    raw = doc["results"]["pre_squeeze_logits"]
    assert raw["min"] <= raw["median"] <= raw["max"] and raw["values"] == 10 * 2 * 64 * 64 * 2
    err = t["softmax_error_model_logits"][0]
    assert -1 <= err["logit_min"] and err["logit_max"] <= 1 and err["fraction_inputs_outside_[-1,1]"] == 0
    assert main(["convert", "run", "--model", "vit-cifar-micro", "--checkpoint", str(ckpt), "--dataset", "cifar10",
                 "--data-root", str(data_slices), "--squeeze", "sigmoid", "--json", str(tmp_path / "x.json")]) == 2
    assert main(["convert", "run", "--model", "vit-cifar-tiny", "--checkpoint", str(ckpt), "--dataset", "cifar10",
                 "--data-root", str(data_slices)]) == 2
