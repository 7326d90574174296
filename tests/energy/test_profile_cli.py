"""``spikevit profile`` end to end: the report's totals are those of profile() on the same input."""
from __future__ import annotations

import json

import torch

from spikevit.cli.main import main as cli_main
from spikevit.energy import get_energy_model, profile
from spikevit.train import build_model


def test_cli_profile_writes_tables_and_matches_the_library(tmp_path):
    out = tmp_path / "p.json"
    args = ["profile", "--model", "spikformer-1-64", "--model-arg", "dim=32", "--model-arg", "tmax=2",
            "--img-size", "16", "--batch-size", "2", "--seed", "3", "--energy-model", "dts45nm", "--json", str(out)]
    assert cli_main(args) == 0
    doc = json.loads(out.read_text())
    model, _ = build_model("spikformer-1-64", "cifar10", 16, {"dim": 32, "tmax": 2}, seed=3)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    p = profile(model.eval(), x)
    res = doc["results"]
    assert (res["macs"], res["acs"], res["dense"]) == (p.macs, p.acs, p.dense)
    assert res["energy_J"] == p.energy("dts45nm")
    em = get_energy_model("dts45nm")
    assert res["energy_J"] == p.macs * em.e_mac + p.acs * em.e_ac
    blocks = {r["block"]: r for r in doc["tables"]["energy per block"]}
    assert sum(r["macs"] for r in blocks.values()) == p.macs and "sps" in blocks
    assert {"per module", "per operator", "spike purity", "spike purity per block", "spiking layers"} <= \
        set(doc["tables"])
    assert (tmp_path / "p_energy.png").exists() and (tmp_path / "p.per_operator.csv").exists()


def test_cli_profile_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli_main(["profile", "--model", "spikformer-1-64", "--energy-model", "nope",
                     "--json", str(tmp_path / "x.json")]) == 2
    assert "unknown energy model" in capsys.readouterr().err
    assert cli_main(["profile", "--json", str(tmp_path / "x.json")]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main(["profile", "--model", "spikformer-1-64", "--batch-size", "0"]) == 2
