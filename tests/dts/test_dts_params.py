"""The DTS settings are written once: every ``spikevit dts train`` / ``dts study`` option that maps onto a field
of DTSSpec / TrainConfig / DTSRunParams / StudyParams has exactly that field's default; the library calls
``run`` / ``run_study`` give the same numbers as the commands; bad values raise a SpikevitError naming the
field; one ``init_steps`` default; ``make_loader`` takes its settings by keyword."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields

import pytest
import torch
from torch.utils.data import TensorDataset

from spikevit.cli.dts import run_params, study_params
from spikevit.cli.main import build_parser
from spikevit.cli.main import main as cli_main
from spikevit.dts import (
    DTS_TRAIN_DEFAULTS,
    STUDY_TRAIN_DEFAULTS,
    DTSRunParams,
    DTSSpec,
    StudyParams,
    run,
    run_study,
)
from spikevit.dts.loss import parse_groups
from spikevit.dts.params import field_default
from spikevit.errors import SpikevitError
from spikevit.functional.dts import default_init_steps
from spikevit.models import create_model
from spikevit.nn import DTSSLIF
from spikevit.train import TrainConfig
from spikevit.train.data import make_loader

SPEC = {f.name for f in fields(DTSSpec)}
TRAIN = {f.name for f in fields(TrainConfig)}
# options whose name differs from the field they set (flags that switch a default-True field off, lists)
RENAMED = {"fixed": "dts", "model_arg": "model_args", "no_augment": "augment", "no_resume": "resume",
           "no_nomask": "nomask", "no_report": "report", "replicate": "replicates"}


def _parser(*names: str) -> argparse.ArgumentParser:
    p = build_parser()
    for name in names:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.dest != "help"]


def _check_defaults(p: argparse.ArgumentParser, params_cls, train_defaults: TrainConfig) -> int:
    """Every option either maps by name onto a field (same default) or is a listed rename; returns the count."""
    own = {f.name for f in fields(params_cls)} - {"spec", "train"}
    checked = 0
    for a in _options(p):
        if a.dest in RENAMED:
            assert RENAMED[a.dest] in own | SPEC, a.dest
            continue
        assert a.dest in own | SPEC | TRAIN, f"--{a.dest} maps onto no field of {params_cls.__name__}"
        if a.dest in TRAIN:
            want = getattr(train_defaults, a.dest)
        elif a.dest in own:
            if a.required:                          # a required field (the run directory) has no default
                assert a.dest == "out"
                continue
            want = field_default(params_cls, a.dest)
        else:
            want = field_default(DTSSpec, a.dest)
        got = parse_groups(a.default) if a.dest == "mask_groups" else a.default
        assert got == want, f"--{a.dest}: option default {got!r}, {params_cls.__name__} default {want!r}"
        checked += 1
    return checked


def test_every_dts_train_option_has_the_dataclass_default(tmp_path):
    p = _parser("dts", "train")
    assert _check_defaults(p, DTSRunParams, DTS_TRAIN_DEFAULTS) >= 30
    # the flags that are not named like their field: the params built from a bare command are the defaults
    args = p.parse_args(["--out", str(tmp_path / "r")])
    args.command_line = "spikevit dts train"
    assert run_params(args) == DTSRunParams(str(tmp_path / "r"))
    assert run_params(args).train == DTS_TRAIN_DEFAULTS


def test_every_dts_study_option_has_the_dataclass_default(tmp_path):
    p = _parser("dts", "study")
    assert _check_defaults(p, StudyParams, STUDY_TRAIN_DEFAULTS) >= 35
    args = p.parse_args(["--out", str(tmp_path / "s")])
    assert study_params(args) == StudyParams(str(tmp_path / "s"))
    # the list options parse into the same tuples the dataclass holds
    args = p.parse_args(["--out", "s", "--fixed-t", "", "--lambdas", "1e-3,1e-1", "--groupings", "qkv+mlp;all",
                         "--baselines", "tet:2, hoyer:1", "--runs", "a,b", "--replicate", "seed1=d1", "--no-nomask"])
    sp = study_params(args)
    assert (sp.fixed_t, sp.lambdas, sp.groupings, sp.baselines, sp.runs, sp.replicates, sp.nomask) == \
        ((), (1e-3, 1e-1), ("qkv+mlp", "all"), ("tet:2", "hoyer:1"), ("a", "b"), {"seed1": "d1"}, False)


TINY = ["--dataset", "digits", "--arch", "spikformer-1-64", "--model-arg", "dim=16", "--model-arg", "heads=2",
        "--epochs", "1", "--batch-size", "20", "--train-subset", "60", "--test-subset", "30", "--tmax", "2",
        "--device", "cpu"]


def _tiny_train(**over) -> TrainConfig:
    return TrainConfig(**{**DTS_TRAIN_DEFAULTS.to_dict(), "epochs": 1, "batch_size": 20, "device": "cpu", **over})


def _roundtrip(x):
    from spikevit.reports import _jsonable

    return json.loads(json.dumps(_jsonable(x)))


def test_run_gives_the_numbers_the_command_writes(tmp_path):
    assert cli_main(["dts", "train", *TINY, "--lambda-m", "1e-2", "--out", str(tmp_path / "cli")]) == 0
    written = json.loads((tmp_path / "cli" / "report.json").read_text())
    spec = DTSSpec("spikformer-1-64", tmax=2, lambda_m=1e-2, model_args={"dim": 16, "heads": 2})
    params = DTSRunParams(str(tmp_path / "lib"), spec=spec, train=_tiny_train(), dataset="digits", train_subset=60,
                          test_subset=30)
    report = run(params, verbose=False)
    assert report.config == params.to_dict()
    assert report.config["spec"]["init_steps"] == 1 and report.config["train"]["lr"] == 4e-3
    assert report.path == tmp_path / "lib" / "report.json" and report.path.is_file()
    # same settings, same seed: identical numbers (the command's config differs only in the run folder)
    assert _roundtrip(report.results) == written["results"]
    assert _roundtrip(report.tables) == written["tables"]
    assert {**written["config"], "out": params.out} == _roundtrip(params.to_dict())
    s = report.results["summary"]
    assert s["samples"] == 30 and 1 <= s["T_avg"] <= 2


def test_run_study_gives_the_numbers_the_command_writes(tmp_path):
    study = ["--fixed-t", "1", "--lambdas", "1e-2", "--groupings", "qkv+mlp", "--no-nomask"]
    assert cli_main(["dts", "study", *TINY, *study, "--out", str(tmp_path / "cli"),
                     "--json", str(tmp_path / "cli.json")]) == 0
    written = json.loads((tmp_path / "cli.json").read_text())
    params = StudyParams(str(tmp_path / "lib"), tmax=2, fixed_t=(1,), lambdas=(1e-2,), groupings=("qkv+mlp",),
                         nomask=False, model_args={"dim": 16, "heads": 2}, dataset="digits", train_subset=60,
                         test_subset=30, train=TrainConfig(epochs=1, batch_size=20, lr=4e-3, device="cpu"),
                         json=str(tmp_path / "lib.json"))
    report = run_study(params, verbose=False)
    assert [r["run"] for r in report.tables["runs"]] == ["fixed-T1", "dts-qkv+mlp-lam1e-2"]
    assert {k: v for k, v in report.config.items() if k != "specs"} == params.to_dict()
    assert report.config["specs"]["dts-qkv+mlp-lam1e-2"]["init_steps"] == 1
    assert _roundtrip(report.results) == written["results"]
    assert _roundtrip(report.tables["runs"]) == written["tables"]["runs"]
    assert json.loads((tmp_path / "lib.json").read_text())["results"] == written["results"]
    # no report asked for: the runs measured now, nothing written
    quiet = run_study(StudyParams(str(tmp_path / "lib"), **{**_study_fields(params), "report": False,
                                                            "json": None}), verbose=False)
    assert quiet.results == {"measured": ["fixed-T1", "dts-qkv+mlp-lam1e-2"]}


def _study_fields(p: StudyParams) -> dict:
    return {f.name: getattr(p, f.name) for f in fields(p) if f.name != "out"}


@pytest.mark.parametrize("make, field", [
    (lambda: DTSSpec(tmax=0), "tmax"),
    (lambda: DTSSpec(tmax=4, init_steps=5), "init_steps"),
    (lambda: DTSSpec(tmax=2, min_steps=3), "min_steps"),
    (lambda: DTSSpec(lambda_m=-1e-3), "lambda_m"),
    (lambda: DTSSpec(mask_groups="qkv,bogus"), "mask_groups"),
    (lambda: DTSSpec(model_args=["dim=16"]), "model_args"),
    (lambda: DTSSpec(loss="mse"), "loss"),
    (lambda: DTSSpec(tet_lambda=2.0), "tet_lambda"),
    (lambda: DTSSpec(hoyer_lambda=float("nan")), "hoyer_lambda"),
    (lambda: DTSSpec(grouping="mine"), "grouping"),
    (lambda: DTSSpec(arch=""), "arch"),
    (lambda: DTSRunParams(None), "out"),
    (lambda: DTSRunParams("r", spec={"tmax": 2}), "spec"),
    (lambda: DTSRunParams("r", train={"epochs": 0}), "epochs"),
    (lambda: DTSRunParams("r", train_subset=0), "train_subset"),
    (lambda: DTSRunParams("r", img_size=2.5), "img_size"),
    (lambda: DTSRunParams("r", eval_batches=-1), "eval_batches"),
    (lambda: DTSRunParams("r", augment="yes"), "augment"),
    (lambda: StudyParams("s", fixed_t="1,x"), "fixed_t"),
    (lambda: StudyParams("s", lambdas=(-1.0,)), "lambdas"),
    (lambda: StudyParams("s", groupings="qkv+bogus"), "groupings"),
    (lambda: StudyParams("s", baselines="dsr:2"), "baselines"),
    (lambda: StudyParams("s", baselines="hoyer:2", hoyer_lambda=0.0), "hoyer_lambda"),
    (lambda: StudyParams("s", runs=()), "runs"),
    (lambda: StudyParams("s", replicates={"": "d"}), "replicates"),
    (lambda: StudyParams("s", data_seed=-1), "data_seed"),
    (lambda: StudyParams("s", init_steps=5), "init_steps"),
    (lambda: StudyParams("s", json=None), "json"),
    (lambda: run(StudyParams("s")), "DTSRunParams"),
    (lambda: run_study(DTSRunParams("r")), "StudyParams"),
])
def test_bad_params_name_the_field(make, field):
    with pytest.raises(SpikevitError, match=field):
        make()


def test_unknown_study_runs_are_refused_before_any_work(tmp_path):
    with pytest.raises(SpikevitError, match="runs: unknown study runs"):
        run_study(StudyParams(str(tmp_path / "s"), runs=("fixed-T3",)))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("tmax", range(1, 9))
def test_one_init_steps_default(tmax):
    want = max(1, tmax // 2)                 # the paper's "half of the maximum", at least one step
    assert default_init_steps(tmax) == want
    assert DTSSLIF(tmax).dtss.init_steps == want
    assert DTSSpec(tmax=tmax).init_steps == want
    assert DTSSpec(tmax=tmax, dts=False).init_steps == tmax        # a fixed-T run keeps every step
    model = create_model("spikformer-1-64", num_classes=10, in_chans=1, img_size=8, dim=16, heads=2, tmax=tmax,
                         dts=True)
    assert {m.dtss.init_steps for m in model.spiking_layers().values()} == {want}
    assert set(model.time_steps().values()) == {want}          # the gates start by keeping exactly that


def test_make_loader_settings_are_keywords():
    ds = TensorDataset(torch.arange(12.0), torch.arange(12))
    batches = [y.tolist() for _, y in make_loader(ds, 5)]      # defaults: one process, fixed order, all samples
    assert batches == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    with pytest.raises(TypeError):
        make_loader(ds, 5, 0, 1, False, 0, 0)
    shuffled = [i for _, y in make_loader(ds, 4, shuffle=True, seed=3) for i in y.tolist()]
    assert sorted(shuffled) == list(range(12)) and shuffled != list(range(12))
    ranks = [[i for _, y in make_loader(ds, 4, rank=r, world=2) for i in y.tolist()] for r in (0, 1)]
    assert ranks == [list(range(0, 12, 2)), list(range(1, 12, 2))]
