"""One shape for the LCA job: LCARunParams holds the defaults once, `spikevit lca run / evaluate` map onto it,
`spikevit.lca.run(params)` is what the CLI runs, and the reproductions take the LCA defaults from LCA_DEFAULTS."""
from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import fields

import pytest
import torch

from spikevit.cli.lca import run_params
from spikevit.cli.main import build_parser, main
from spikevit.errors import SpikevitError
from spikevit.lca import (
    LCA_DEFAULTS,
    LCA_RUN_DEFAULTS,
    Dictionary,
    LCAParams,
    LCARunParams,
)
from spikevit.lca.pipeline import command_line, evaluate, run
from spikevit.reproduce.registry import list_reproductions

RUN_FIELDS = {f.name for f in fields(LCARunParams)} - {"lca"}
LCA_FIELDS = {f.name for f in fields(LCAParams)}
# measured durations: the only results two runs of the same settings may disagree on
TIMINGS = ("timing_ms_per_sample", "shallow_encode_s", "shallow_fit_s", "shallow_decode_ms")


def _subcommand(name: str) -> argparse.ArgumentParser:
    def sub(parser, word):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[word]
    return sub(sub(build_parser(), "lca"), name)


def _options(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subcommand(name)._actions if a.dest != "help"}


@pytest.mark.parametrize("name", ["run", "evaluate"])
def test_every_option_has_the_dataclass_default(name):
    opts = _options(name)
    checked = 0
    for dest, action in opts.items():
        if dest in RUN_FIELDS and not action.required:
            assert action.default == getattr(LCA_RUN_DEFAULTS, dest), dest
            checked += 1
        elif dest in LCA_FIELDS:
            assert action.default == getattr(LCA_DEFAULTS, dest), dest
            checked += 1
    assert opts["signed"].default is False and LCA_DEFAULTS.rectify is True     # --signed is rectify=False
    # what the options do not map onto is output only
    assert set(opts) - RUN_FIELDS - LCA_FIELDS == {"signed", "json", "no_plots"}
    assert checked >= 20


def test_the_two_commands_cover_every_field():
    dests = set(_options("run")) | set(_options("evaluate"))
    assert RUN_FIELDS <= dests and LCA_FIELDS - {"rectify"} <= dests
    assert "dictionary" not in _options("run") and "dictionary_size" not in _options("evaluate")


def test_parsed_defaults_are_the_default_params():
    args = build_parser().parse_args(["lca", "run"])
    assert run_params(args) == LCA_RUN_DEFAULTS
    assert LCARunParams().lca is LCA_DEFAULTS


@pytest.mark.parametrize("params", [
    LCARunParams(),
    LCARunParams(dataset="mnist", data_root="DATA", backbone="efficientnet_lite0", dictionary_size=500,
                 selection="balanced", seed=3, limit_test=100, shallow_train_size=0, probes=True, download=True,
                 lca=LCAParams(lam=0.5, tau=30.0, steps=40, rectify=False, threshold="hard", backend="factored")),
    LCARunParams(dictionary="d.safetensors", allow_test_atoms=True, encode_batch=17, workers=2, image_size=96,
                 weights="none", cache="features", skip_bad_images=True, device="cpu"),
])
def test_recorded_command_parses_back_to_the_same_params(params):
    cmd = command_line(params)
    assert cmd.startswith(f"spikevit lca {'evaluate' if params.dictionary else 'run'} --dataset {params.dataset}")
    assert run_params(build_parser().parse_args(shlex.split(cmd)[1:])) == params


def _results(doc: dict) -> dict:
    return {k: v for k, v in doc["results"].items() if k not in TIMINGS}


def test_library_run_equals_the_cli(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    argv = ["lca", "run", "--dataset", "digits", "--backbone", "pixels", "--cache", cache, "--dictionary-size", "300",
            "--shallow-train-size", "100", "--lam", "0.5", "--steps", "40", "--no-plots"]
    assert main([*argv, "--json", str(tmp_path / "cli.json")]) == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    d_path = str(tmp_path / "d.safetensors")
    params = LCARunParams(dataset="digits", backbone="pixels", cache=cache, dictionary_size=300,
                          shallow_train_size=100, lca=LCAParams(lam=0.5, steps=40), dictionary_out=d_path)
    report = run(params)
    lib = report.to_dict()
    assert _results(lib) == _results(cli)
    assert set(lib["results"]["accuracy"]) == {"max_activation", "max_sum", "shallow"}
    assert len(lib["results"]["active_per_step_mean"]) == 40
    assert {k: v for k, v in lib["config"].items() if k != "dictionary_out"} == \
        {k: v for k, v in cli["config"].items() if k != "dictionary_out"}
    assert cli["config"]["lca"] == {"lam": 0.5, "tau": 100.0, "steps": 40, "rectify": True, "threshold": "soft",
                                    "backend": "auto"}
    assert report.command == command_line(params) and cli["command"].startswith("spikevit lca run --dataset digits")

    # evaluating the saved dictionary: the same numbers, from the CLI and from the library
    evaluated = run(LCARunParams(dataset="digits", cache=cache, dictionary=d_path, shallow_train_size=100,
                                 lca=LCAParams(lam=0.5, steps=40)))
    assert main(["lca", "evaluate", "--dataset", "digits", "--cache", cache, "--dictionary", d_path,
                 "--shallow-train-size", "100", "--lam", "0.5", "--steps", "40", "--no-plots",
                 "--json", str(tmp_path / "eval.json")]) == 0
    cli_eval = json.loads((tmp_path / "eval.json").read_text())
    assert _results(evaluated.to_dict()) == _results(cli_eval)
    assert _results(cli_eval)["accuracy"] == _results(cli)["accuracy"]
    assert evaluated.command.startswith("spikevit lca evaluate --dataset digits")
    capsys.readouterr()


def test_evaluate_takes_lca_params_or_single_settings():
    g = torch.Generator().manual_seed(0)
    from spikevit.data.features import FeatureSet
    x, y = torch.randn(60, 12, generator=g), torch.arange(60) % 3
    d = Dictionary.from_features(x[:40], y[:40], backbone="toy", dataset="toy", split="train", index=torch.arange(40))
    test = FeatureSet(x[40:], y[40:], torch.arange(20), {"backbone": "toy", "dataset": "toy", "split": "test"})
    a = evaluate(d, test, None, LCAParams(lam=0.3, steps=25), shallow_train_size=0, device="cpu")
    b = evaluate(d, test, None, lam=0.3, steps=25, shallow_train_size=0, device="cpu")
    assert a.accuracy == b.accuracy and torch.equal(a.active_mean, b.active_mean) and len(a.active_mean) == 25
    with pytest.raises(TypeError):
        evaluate(d, test, None, lamda=0.3, shallow_train_size=0, device="cpu")


@pytest.mark.parametrize("changes, field", [
    ({"encode_batch": 0}, "encode_batch"),
    ({"batch_size": -1}, "batch_size"),
    ({"dictionary_size": 0}, "dictionary_size"),
    ({"shallow_train_size": -5}, "shallow_train_size"),
    ({"seed": 1.5}, "seed"),
    ({"workers": -1}, "workers"),
    ({"image_size": 0}, "image_size"),
    ({"limit_test": 0}, "limit_test"),
    ({"selection": "first"}, "selection"),
    ({"probes": "yes"}, "probes"),
    ({"dataset": ""}, "dataset"),
    ({"device": "banana"}, "device"),
    ({"lca": "fast"}, "lca"),
    ({"lca": {"lam": -1.0}}, "lam"),
    ({"lca": {"tau": 0.5}}, "tau"),
    ({"dictionary": "d.safetensors", "dictionary_size": 10}, "dictionary_size"),
    ({"allow_test_atoms": True}, "allow_test_atoms"),
])
def test_bad_params_name_the_field(changes, field):
    with pytest.raises(SpikevitError, match=field):
        LCARunParams(**changes)


def test_lca_params_from_a_mapping_and_their_checks():
    assert LCAParams.from_mapping({"lam": 1, "M": 5, "backend": "factored"}, steps=3) == \
        LCAParams(lam=1.0, steps=3, backend="factored")
    assert LCAParams.from_mapping({}) == LCA_DEFAULTS
    with pytest.raises(SpikevitError, match="rectify"):
        LCAParams(rectify="no")
    with pytest.raises(SpikevitError, match="threshold"):
        LCAParams.from_mapping({"threshold": "medium"})


def test_missing_dictionary_is_refused_before_any_work(tmp_path):
    with pytest.raises(SpikevitError, match="dictionary: file not found"):
        run(LCARunParams(dictionary=str(tmp_path / "nope.safetensors"), cache=str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()                  # no features were extracted


def _lca_settings(mod, params: dict) -> dict:
    """The LCA settings a reproduction module states: its PARAMS, and a BASE reading where it has one."""
    out = {k: params[k] for k in LCA_FIELDS if k in params}
    for k in LCA_FIELDS & set(getattr(mod, "BASE", {})):
        out[k] = mod.BASE[k]
    return out


def test_reproductions_use_the_lca_defaults_unless_they_say_why_not():
    seen = set()
    for rep in list_reproductions():
        if "LCA" not in rep.paper and "SELD" not in rep.paper:
            continue                                  # DTS / SIT: their "steps" are other quantities
        mod = rep.load()
        settings = _lca_settings(mod, rep.params())
        if not settings or rep.module in seen:
            continue
        seen.add(rep.module)
        differs = getattr(mod, "DIFFERS_FROM_LCA_DEFAULTS", {})
        for key, value in settings.items():
            if key == "backend" and value != LCA_DEFAULTS.backend:
                continue                      # a fixed exact backend (all give the same codes)
            if key in differs:
                assert value != getattr(LCA_DEFAULTS, key) and differs[key], (rep.module, key)
            else:
                assert value == getattr(LCA_DEFAULTS, key), (rep.module, key, value)
    assert {"classification", "incremental", "dictionary_learning", "overcompleteness", "workload", "readings",
            "sparsity", "reconstruction", "hyperparameters"} <= seen


def test_a_reproduction_passes_its_lca_settings_on(monkeypatch, tmp_path):
    """``--set lam=... steps=...`` reaches the evaluation as an LCAParams (the rest the defaults)."""
    from spikevit.reproduce import overcompleteness, run_reproduction

    seen = []

    class Stop(Exception):
        pass

    def spy(dictionary, test, train=None, lca=LCA_DEFAULTS, **kw):
        seen.append(lca)
        raise Stop

    monkeypatch.setattr(overcompleteness, "evaluate", spy)
    monkeypatch.setattr(overcompleteness, "features", lambda ctx, *a, **k: _toy_features())
    with pytest.raises(Stop):
        run_reproduction("overcompleteness", overrides={"sizes": "20", "lam": "0.7", "steps": "30"},
                         out=tmp_path, cache=tmp_path)
    assert seen == [LCAParams(lam=0.7, steps=30)]


def _toy_features():
    from spikevit.data.features import FeatureSet
    g = torch.Generator().manual_seed(1)
    return FeatureSet(torch.randn(30, 8, generator=g), torch.arange(30) % 3, torch.arange(30),
                      {"backbone": "pixels", "dataset": "toy", "split": "train"})
