"""``spikevit convert run`` = ``spikevit.conversion.run(ConversionParams(...))``: one field per option with
the same default, the same report from both, and bad parameters refused before any work."""
import json
from dataclasses import fields

import pytest
import torch

from spikevit.cli.convert import run_params
from spikevit.cli.main import build_parser, main
from spikevit.conversion import ConversionParams, run
from spikevit.errors import SpikevitError
from spikevit.models import create_model
from spikevit.reports import Report


def _run_parser():
    parser = build_parser()
    return parser, parser.parse_args(["convert", "run", "--model", "vit-cifar-micro"])


def test_every_option_is_a_field_with_the_same_default():
    _, args = _run_parser()
    params = run_params(args)
    for f in fields(ConversionParams):
        if f.name == "model":
            continue
        if f.name == "json":        # the library returns the report; the command line always writes one
            assert params.json == "results/conversion/run.json" and f.default is None
            continue
        assert getattr(params, f.name) == f.default, f.name
        assert hasattr(args, f.name), f"no CLI option for field {f.name}"


def test_library_run_equals_the_cli(tmp_path, data_slices):
    from spikevit.train import save_model

    torch.manual_seed(0)
    ckpt = tmp_path / "model.safetensors"
    save_model(ckpt, create_model("vit-cifar-micro"),
               {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10}, "dataset": "cifar10"})
    common = dict(checkpoint=str(ckpt), dataset="cifar10", data_root=str(data_slices), spiking="attention",
                  test_subset=20, batch_size=10, calibration_samples=8, energy_batches=1, sweep_steps=(8, 12))
    report = run(ConversionParams("vit-cifar-micro", **common, json=str(tmp_path / "lib.json")), verbose=False)
    assert isinstance(report, Report) and report.path == tmp_path / "lib.json"
    assert [r["blocks_converted"] for r in report.tables["layer_by_layer"]] == [0, 1, 2]
    assert main(["convert", "run", "--model", "vit-cifar-micro", "--checkpoint", str(ckpt), "--dataset", "cifar10",
                 "--data-root", str(data_slices), "--spiking", "attention", "--test-subset", "20", "--batch-size",
                 "10", "--calibration-samples", "8", "--energy-batches", "1", "--sweep-steps", "8,12",
                 "--json", str(tmp_path / "cli.json")]) == 0
    lib, cli = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("lib", "cli"))
    assert lib["results"] == cli["results"]
    assert lib["tables"]["layer_by_layer"] == cli["tables"]["layer_by_layer"]
    assert {k: v for k, v in lib["config"].items() if k != "json"} == \
        {k: v for k, v in cli["config"].items() if k != "json"}
    # without json nothing is written and the same numbers come back
    again = run(ConversionParams("vit-cifar-micro", **common), verbose=False)
    assert again.path is None and again.results["snn"] == lib["results"]["snn"]


@pytest.mark.parametrize("field,value,match", [
    ("spiking", "everything", "spiking"), ("coding", "poisson", "coding"), ("steps", 0, "steps"),
    ("steps", 17, "steps=17"), ("batch_size", 2.5, "batch_size"), ("e_mac", float("nan"), "e_mac"),
    ("squeeze", "relu", "squeeze"), ("sweep_steps", (4, -1), "sweep_steps"), ("seed", -1, "seed"),
])
def test_bad_params_name_the_field(field, value, match):
    with pytest.raises(SpikevitError, match=match):
        ConversionParams("vit-cifar-micro", **{field: value})
