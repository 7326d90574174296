"""Every bad input a user can give: exit code 2, one line naming the problem, no traceback, inputs untouched.

Each case is a command line (``{name}`` fields are filled from the fixtures below) and a piece of the
message it must print.  The files a case names are hashed before and after the run.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from spikevit.cli.main import main

TRAIN = ["train", "--model", "vit-cifar-micro", "--dataset", "digits", "--img-size", "8", "--epochs", "1"]
DTS = ["dts", "train", "--arch", "spikformer-1-64", "--dataset", "digits", "--img-size", "8", "--epochs", "1"]
LCA_RUN = ["lca", "run", "--dataset", "digits", "--cache", "{cache}", "--no-plots"]

CASES = {
    # outputs: never an input, never a folder / unwritable place, checked before any work
    "encode --out is the dictionary": (["lca", "encode", "--dataset", "digits", "--cache", "{cache}",
                                        "--dictionary", "{dictionary}", "--out", "{dictionary}"],
                                       "--out: {dictionary} is also an input"),
    "--json names a folder": ([*LCA_RUN, "--json", "{tmp}"], "--json: {tmp} is a folder"),
    "--json in an unwritable place": ([*LCA_RUN, "--json", "/proc/spikevit/r.json"], "--json: cannot write"),
    "train --out is an existing file": ([*TRAIN, "--out", "{plain_file}"], "--out: {plain_file} exists and is not"),
    "dts train --out is an existing file": ([*DTS, "--out", "{plain_file}"], "--out: {plain_file} exists and is not"),
    "--dictionary missing": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}", "--dictionary",
                              "{tmp}/nope.safetensors"], "--dictionary: file not found"),
    # LCA options
    "--steps 0": ([*LCA_RUN, "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    "--steps -3": ([*LCA_RUN, "--steps", "-3"], "argument --steps: must be an integer >= 1, got -3"),
    "--steps 2.5": ([*LCA_RUN, "--steps", "2.5"], "argument --steps: must be an integer >= 1"),
    "--tau inf": ([*LCA_RUN, "--tau", "inf"], "argument --tau: must be a finite number"),
    "--tau 1e308": ([*LCA_RUN, "--tau", "1e308"], "argument --tau: 1e+308 is too large: 1 - 1/tau rounds to 1"),
    "--tau 0.5": ([*LCA_RUN, "--tau", "0.5"], "argument --tau: must be >= 1"),
    "--lam nan": ([*LCA_RUN, "--lam", "nan"], "argument --lam: must be a finite number"),
    "--encode-batch 0": ([*LCA_RUN, "--encode-batch", "0"], "argument --encode-batch: must be an integer >= 1"),
    "lca --batch-size 0": ([*LCA_RUN, "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    "lca --workers -1": ([*LCA_RUN, "--workers", "-1"], "argument --workers: must be an integer >= 0"),
    "lca --device banana": ([*LCA_RUN, "--device", "banana"], "argument --device: unknown device 'banana'"),
    "lca --image-size -4": ([*LCA_RUN, "--image-size", "-4"], "argument --image-size: must be an integer >= 1"),
    "lca --dictionary-size 0": ([*LCA_RUN, "--dictionary-size", "0"], "argument --dictionary-size: must be"),
    # training options
    "train --batch-size 0": ([*TRAIN, "--batch-size", "0", "--out", "{tmp}/r"], "argument --batch-size: must be"),
    "train --epochs 0": ([*TRAIN, "--epochs", "0", "--out", "{tmp}/r"], "argument --epochs: must be"),
    "train --lr nan": ([*TRAIN, "--lr", "nan", "--out", "{tmp}/r"], "argument --lr: must be a finite number"),
    "train --workers -1": ([*TRAIN, "--workers", "-1", "--out", "{tmp}/r"], "argument --workers: must be"),
    "train --img-size -4": ([*TRAIN, "--img-size", "-4", "--out", "{tmp}/r"], "argument --img-size: must be"),
    "train --device banana": ([*TRAIN, "--device", "banana", "--out", "{tmp}/r"], "unknown device 'banana'"),
    "train --label-smoothing 2": ([*TRAIN, "--label-smoothing", "2", "--out", "{tmp}/r"], "must be <= 1"),
    "train unknown model": (["train", "--model", "no-such-model", "--dataset", "digits", "--out", "{tmp}/r"],
                            "unknown model 'no-such-model'"),
    "dts train --batch-size 0": ([*DTS, "--batch-size", "0", "--out", "{tmp}/r"], "argument --batch-size: must be"),
    # unreadable images in an image folder
    "zero-byte image": (["lca", "run", "--dataset", "mnist", "--data-root", "{images_empty}", "--cache", "{cache}",
                         "--no-plots", "--json", "{tmp}/r.json"], "unreadable image {images_empty}/mnist/test/3/"),
    "truncated image": (["lca", "run", "--dataset", "mnist", "--data-root", "{images_truncated}", "--cache",
                         "{cache}", "--no-plots", "--json", "{tmp}/r.json"],
                        "unreadable image {images_truncated}/mnist/test/4/"),
    # lca dictionaries: test-split atoms, edited files, counts
    "evaluate on the split that gave atoms": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}",
                                               "--dictionary", "{dictionary_with_test_atoms}", "--no-plots",
                                               "--json", "{tmp}/r.json"], "test split"),
    "dictionary label outside the classes": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}",
                                              "--dictionary", "{dictionary_bad_label}"], "outside its"),
    "dictionary with an all-zero atom": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}",
                                          "--dictionary", "{dictionary_zero_atom}"], "all-zero atom"),
    "dictionary atoms x1000": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}",
                                "--dictionary", "{dictionary_x1000}"], "unit L2 norm"),
    "--shallow-train-size -1": (["lca", "evaluate", "--dataset", "digits", "--cache", "{cache}", "--dictionary",
                                 "{dictionary}", "--shallow-train-size", "-1"], "--shallow-train-size: must be"),
    "lca add --count 0": (["lca", "add", "--dictionary", "{dictionary}", "--features", "{features_test}",
                           "--count", "0", "--out", "{tmp}/d2.safetensors"], "argument --count: must be"),
    # conversion: models, checkpoints, sweeps
    "convert sweep --rows 0": (["convert", "sweep", "--rows", "0"], "--rows"),
    "convert timm:not_a_model": (["convert", "run", "--model", "timm:not_a_model", "--checkpoint", "{ckpt_good}"],
                                 "timm has no model 'not_a_model'"),
    "convert torchvision:get_model": (["convert", "run", "--model", "torchvision:get_model", "--checkpoint",
                                       "{ckpt_good}"], "torchvision has no model 'get_model'"),
    "checkpoint of random bytes": ([*"convert run --model vit-cifar-micro --dataset cifar10 --data-root".split(),
                                    "{data}", "--checkpoint", "{ckpt_noise}"], "--checkpoint"),
    "truncated checkpoint": ([*"convert run --model torchvision:mobilenet_v3_small --dataset cifar10 "
                              "--checkpoint".split(), "{ckpt_truncated}"], "not a readable state dict"),
    "missing checkpoint": ([*"convert run --model torchvision:mobilenet_v3_small --dataset cifar10 "
                            "--checkpoint".split(), "{tmp}/missing.pth"], "file not found"),
    "checkpoint of the wrong shapes": ([*"convert run --model torchvision:mobilenet_v3_small --dataset cifar10 "
                                        "--checkpoint".split(), "{ckpt_wrong}"], "size mismatch"),
    "pickle of an object": ([*"convert run --model torchvision:mobilenet_v3_small --dataset cifar10 "
                             "--checkpoint".split(), "{ckpt_pickle}"], "not a readable state dict"),
    "checkpoint with NaN weights": ([*"convert run --model vit-cifar-micro --dataset cifar10 --data-root".split(),
                                     "{data}", "--checkpoint", "{ckpt_nan}"], "holds NaN"),
    "1-channel model on 3-channel data": ([*"convert run --model vit-cifar-micro --dataset cifar10 "
                                          "--data-root".split(), "{data}", "--checkpoint", "{ckpt_gray}"],
                                         "cannot take inputs of shape (1, 3, 32, 32)"),
    "convert run --neurons missing": ([*"convert run --model vit-cifar-micro --dataset cifar10 --data-root".split(),
                                       "{data}", "--checkpoint", "{ckpt_micro}", "--neurons",
                                       "{tmp}/missing.safetensors"], "--neurons: file not found"),
    "convert run --neurons of random bytes": ([*"convert run --model vit-cifar-micro --dataset cifar10 "
                                               "--data-root".split(), "{data}", "--checkpoint", "{ckpt_micro}",
                                               "--neurons", "{ckpt_noise}"], "not a readable safetensors file"),
    "convert finetune missing checkpoint": ([*"convert finetune --model vit-cifar-micro --dataset cifar10 "
                                             "--data-root".split(), "{data}", "--checkpoint",
                                             "{tmp}/missing.safetensors", "--out", "{tmp}/ft"],
                                            "--checkpoint: file not found"),
    "convert finetune checkpoint of random bytes": ([*"convert finetune --model vit-cifar-micro --dataset cifar10 "
                                                     "--data-root".split(), "{data}", "--checkpoint", "{ckpt_noise}",
                                                     "--out", "{tmp}/ft"], "not a readable safetensors file"),
    "text file named .png": (["train", "--model", "vit-cifar-micro", "--dataset", "mnist", "--data-root",
                              "{images_text}", "--epochs", "1", "--out", "{tmp}/r"],
                             "unreadable image {images_text}/mnist/train/5/"),
}


def _placeholders(text: str, fields: dict) -> str:
    """The message with this run's temporary paths written back as their ``{name}`` fields."""
    for name, value in sorted(fields.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, "{" + name + "}")
    return text


def _hashes(paths) -> dict:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if Path(p).is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_slices) -> dict:
    root = tmp_path_factory.mktemp("bad")
    cache = root / "cache"
    dictionary = root / "d.safetensors"
    assert main(["lca", "fit", "--dataset", "digits", "--cache", str(cache), "--dictionary-size", "40",
                 "--out", str(dictionary)]) == 0
    plain = root / "plain.txt"
    plain.write_text("not a folder\n")
    out = {"cache": str(cache), "dictionary": str(dictionary), "plain_file": str(plain)}
    # copies of a real MNIST slice, one broken file each: empty, truncated, text under an image name
    for kind, split, cls in (("empty", "test", "3"), ("truncated", "test", "4"), ("text", "train", "5")):
        tree = root / f"images_{kind}"
        shutil.copytree(data_slices / "mnist", tree / "mnist")
        victim = sorted((tree / "mnist" / split / cls).iterdir())[0]
        data = victim.read_bytes()
        victim.write_bytes(b"" if kind == "empty" else data[: len(data) // 3] if kind == "truncated"
                           else b"hello, I am not a picture\n")
        out[f"images_{kind}"] = str(tree)
    out |= _dictionaries(root, cache, dictionary)
    out |= _checkpoints(root)
    out["data"] = str(data_slices)
    return out


def _dictionaries(root: Path, cache: Path, dictionary: Path) -> dict:
    """Edited copies of a fitted dictionary, and one that took atoms from the test split."""
    from spikevit.lca import Dictionary
    from spikevit.tensorio import load_tensors, save_tensors

    features_test = cache / "digits" / "pixels" / "test"
    assert main(["lca", "extract", "--dataset", "digits", "--cache", str(cache), "--split", "test"]) == 0
    with_test = root / "d_test_atoms.safetensors"
    assert main(["lca", "add", "--dictionary", str(dictionary), "--features", str(features_test), "--count", "5",
                 "--out", str(with_test)]) == 0
    out = {"features_test": str(features_test), "dictionary_with_test_atoms": str(with_test)}
    edits = {"bad_label": lambda t: t["labels"].__setitem__(0, 10), "zero_atom": lambda t: t["atoms"][:, 1].zero_(),
             "x1000": lambda t: t["atoms"].mul_(1000)}
    for name, edit in edits.items():
        tensors, meta = load_tensors(dictionary, "lca-dictionary")
        tensors = {k: v.clone() for k, v in tensors.items()}
        edit(tensors)
        path = root / f"d_{name}.safetensors"
        save_tensors(path, tensors, "lca-dictionary", meta)
        out[f"dictionary_{name}"] = str(path)
    Dictionary.load(dictionary)            # the unedited file loads
    return out


class _NotATensor:
    """A pickle holding this must never be unpickled."""


def _checkpoints(root: Path) -> dict:
    """Good, random, truncated, wrong-shape, pickled-object, NaN, one-channel and good vit-cifar-micro model files."""
    import pickle

    import torch
    import torchvision
    from safetensors.torch import save_file

    from spikevit.models import create_model
    from spikevit.train import save_model

    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).state_dict()
    paths = {name: root / f"ckpt_{name}" for name in ("good", "noise", "truncated", "wrong", "pickle", "nan", "gray",
                                                      "micro")}
    save_file({k: v.contiguous() for k, v in tv.items()}, str(paths["good"]))
    paths["noise"].write_bytes(bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()))
    paths["truncated"].write_bytes(paths["good"].read_bytes()[: paths["good"].stat().st_size // 2])
    torch.save(torchvision.models.mobilenet_v3_small(weights=None, num_classes=5).state_dict(), paths["wrong"])
    with open(paths["pickle"], "wb") as fh:
        pickle.dump({"model": _NotATensor()}, fh)
    vit = create_model("vit-cifar-micro")
    with torch.no_grad():
        vit.head.weight[0, 0] = float("nan")
    save_model(paths["nan"], vit, {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10},
                                   "dataset": "cifar10"})
    save_model(paths["micro"], create_model("vit-cifar-micro"), {"model": "vit-cifar-micro",
                                                                 "model_kwargs": {"num_classes": 10},
                                                                 "dataset": "cifar10"})
    save_model(paths["gray"], create_model("vit-cifar-micro", in_chans=1),
               {"model": "vit-cifar-micro", "model_kwargs": {"num_classes": 10, "in_chans": 1}, "dataset": "mnist"})
    return {f"ckpt_{name}": str(path) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exit_2_one_line_no_traceback_inputs_unchanged(name, files, tmp_path, capsys, record_property):
    argv_template, needle_template = CASES[name]
    fields = {**files, "tmp": str(tmp_path)}
    argv = [a.format(**fields) for a in argv_template]
    watched = [a for a in argv if Path(a).is_file()] + [files["dictionary"], files["plain_file"]]
    before = _hashes(watched)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "img/s]" not in line and "it/s]" not in line]
    record_property("command", " ".join(argv_template))
    record_property("exit_code", code)
    record_property("message", _placeholders(lines[0] if lines else err, fields))
    assert code == 2, (name, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("spikevit"), lines[0]
    assert needle_template.format(**fields) in lines[0], lines[0]
    assert _hashes(watched) == before
    assert not list(tmp_path.rglob("*.tmp"))          # nothing half-written left behind
    record_property("inputs_unchanged", len(watched))


# ---- the same checks for library calls: a SpikevitError (a ValueError) naming the argument -----------------
def _encode(**kw):
    import torch

    from spikevit.lca import encode
    return encode(torch.randn(6, 4), torch.randn(3, 6), **kw)


def _estimator(**kw):
    import numpy as np

    from spikevit.lca.estimator import ExemplarLCAClassifier
    return ExemplarLCAClassifier(**kw).fit(np.random.default_rng(0).random((20, 5)), np.arange(20) % 2)


API_CASES = {
    "encode tau=1e308 (factored)": (lambda: _encode(tau=1e308, backend="factored"), "1 - 1/tau rounds to 1"),
    "encode tau=inf": (lambda: _encode(tau=float("inf")), "tau must be a finite number"),
    "encode steps=0": (lambda: _encode(steps=0), "steps (number of LCA steps K) must be an integer >= 1"),
    "encode lam=-1": (lambda: _encode(lam=-1.0), "lam must be >= 0"),
    "estimator batch_size=0": (lambda: _estimator(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    "estimator tau=inf": (lambda: _estimator(tau=float("inf")), "tau must be a finite number"),
    "estimator dictionary_size=True": (lambda: _estimator(dictionary_size=True), "dictionary_size must be an integer"),
    "DTSS tmax=4.7": (lambda: _dtss(tmax=4.7, init_steps=2), "tmax must be an integer >= 1, got 4.7"),
    "DTSS init_steps > tmax": (lambda: _dtss(tmax=4, init_steps=5), "init_steps must lie in [0, tmax=4]"),
    "convert unknown spiking level": (lambda: _convert(spiking="everything"), "spiking"),
    "convert NaN calibration": (lambda: _convert(spiking="attention", calibration=float("nan")), "calibration"),
    "convert calibration of the wrong shape": (lambda: _convert(spiking="attention", calibration=(2, 3, 8, 8)),
                                               "calibration"),
    "convert a model without attention": (lambda: _convert_cnn(), "attention"),
}


def _dtss(**kw):
    from spikevit.nn import DTSS
    return DTSS(**kw)


def _convert(calibration=None, **kw):
    import torch

    from spikevit.conversion import convert
    from spikevit.models import create_model
    torch.manual_seed(0)
    model = create_model("vit-cifar-micro").eval()
    if isinstance(calibration, float):
        calibration = torch.full((2, 3, 32, 32), calibration)
    elif isinstance(calibration, tuple):
        calibration = torch.randn(calibration)
    return convert(model, 12, calibration=calibration, **kw)


def _convert_cnn():
    import torch.nn as nn

    from spikevit.conversion import convert
    return convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()), 12)


@pytest.mark.parametrize("name", list(API_CASES))
def test_bad_library_argument_is_a_spikevit_error_naming_it(name, record_property):
    from spikevit.errors import SpikevitError

    call, needle = API_CASES[name]
    with pytest.raises(SpikevitError) as info:
        call()
    record_property("message", f"SpikevitError: {info.value}")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_every_numeric_option_is_checked_where_it_enters():
    """No option of the CLI takes a bare int/float: each goes through spikevit.validation (range, finiteness)."""
    import argparse

    from spikevit.cli.main import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.type in (int, float):
                yield f"{path} {'/'.join(action.option_strings)}"

    assert list(walk(build_parser(), "spikevit")) == []
