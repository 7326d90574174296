"""Issue 12 (trust): dictionary provenance, edited dictionaries and bad counts stop with one line, exit 2."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from spikevit.cli.main import main
from spikevit.lca import Dictionary
from spikevit.tensorio import load_tensors, save_tensors


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _one_line_error(code, err, needle):
    assert code == 2, err
    assert needle in err, err
    assert err.startswith("spikevit") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def fitted(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    common = ["--dataset", "digits", "--backbone", "pixels", "--cache", cache]
    d = tmp_path / "d.safetensors"
    assert run(["lca", "extract", *common, "--split", "both"], capsys)[0] == 0
    assert run(["lca", "fit", *common, "--dictionary-size", "300", "--out", str(d)], capsys)[0] == 0
    return common, d, tmp_path


def test_evaluating_on_a_split_that_gave_atoms_is_refused(fitted, capsys):
    common, d, tmp = fitted
    grown = tmp / "grown.safetensors"
    folder = tmp / "cache" / "digits" / "pixels" / "test"
    code, out, _ = run(["lca", "add", "--dictionary", str(d), "--features", str(folder), "--count", "40",
                        "--out", str(grown)], capsys)
    assert code == 0 and "300 + 40 = 340" in out and "digits test split" in out
    saved = Dictionary.load(grown)
    assert saved.provenance()[0] | {"index_min": 0, "index_max": 0} == {"dataset": "digits", "split": "train",
                                                                        "atoms": 300, "index_min": 0, "index_max": 0}
    assert saved.provenance()[1]["split"] == "test" and saved.provenance()[1]["atoms"] == 40
    before = _digest(grown)
    lca = ["--lam", "0.5", "--steps", "30", "--shallow-train-size", "0"]
    code, _, err = run(["lca", "evaluate", *common, *lca, "--dictionary", str(grown),
                        "--json", str(tmp / "e.json")], capsys)
    _one_line_error(code, err, "40 atom(s) taken from the digits test split")
    assert "--allow-test-atoms" in err and not (tmp / "e.json").exists()
    assert _digest(grown) == before
    # with the flag it runs, and the report says so first
    code, out, _ = run(["lca", "evaluate", *common, *lca, "--dictionary", str(grown), "--allow-test-atoms",
                        "--json", str(tmp / "e.json"), "--no-plots"], capsys)
    assert code == 0 and out.startswith("WARNING: 40 dictionary atom(s)")
    md = (tmp / "e.md").read_text().splitlines()
    assert "TEST IMAGES IN THE DICTIONARY" in md[0] and md[4].startswith("WARNING: 40 dictionary atom(s)")
    assert json.loads((tmp / "e.json").read_text())["results"]["test_atoms_in_dictionary"] == 40
    # the train-only dictionary evaluates without the flag
    assert run(["lca", "evaluate", *common, *lca, "--dictionary", str(d), "--json", str(tmp / "f.json"),
                "--no-plots"], capsys)[0] == 0


@pytest.mark.parametrize("edit, needle", [
    (lambda t, m: t["labels"].__setitem__(5, 17), "atom 5 has label 17, outside its 10 classes"),
    (lambda t, m: t["atoms"][:, 7].zero_(), "1 all-zero atom(s) (first: atom 7)"),
    (lambda t, m: t["atoms"].mul_(1000), "unit L2 norm"),
])
def test_edited_dictionary_is_refused_before_encoding(fitted, capsys, edit, needle):
    common, d, tmp = fitted
    tensors, meta = load_tensors(d, "lca-dictionary")
    edit(tensors, meta)
    bad = tmp / "bad.safetensors"
    save_tensors(bad, tensors, "lca-dictionary", meta)
    before = _digest(bad)
    code, _, err = run(["lca", "evaluate", *common, "--dictionary", str(bad), "--json", str(tmp / "x.json")], capsys)
    _one_line_error(code, err, needle)
    assert str(bad) in err and _digest(bad) == before and not (tmp / "x.json").exists()


@pytest.mark.parametrize("args, needle", [
    (["lca", "run", "--shallow-train-size", "-1"], "--shallow-train-size"),
    (["lca", "evaluate", "--dictionary", "d.safetensors", "--shallow-train-size", "-1"], "--shallow-train-size"),
    (["lca", "add", "--dictionary", "d", "--features", "f", "--out", "o", "--count", "0"], "--count"),
])
def test_bad_counts_name_their_option(args, needle, tmp_path, capsys):
    code, _, err = run([*args, "--cache", str(tmp_path)] if args[1] != "add" else args, capsys)
    assert code == 2 and needle in err and "--limit" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].count(needle) >= 1
