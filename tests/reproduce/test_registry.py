"""The reproduction registry and the `spikevit reproduce` command."""
from __future__ import annotations

import pytest

from spikevit.cli.main import main
from spikevit.errors import SpikevitError
from spikevit.reproduce import get_reproduction, list_reproductions, resolve_params
from spikevit.reproduce.registry import coerce


def test_every_entry_is_complete():
    reps = list_reproductions()
    names = [r.name for r in reps]
    assert len(names) == len(set(names))
    for rep in reps:
        mod = rep.load()
        assert callable(mod.run)
        assert set(mod.QUICK) <= set(mod.PARAMS), rep.name
        assert set(rep.fixed) <= set(mod.PARAMS), rep.name
        assert rep.paper_numbers and rep.needs and rep.runtime and rep.target
        if rep.offline:
            assert rep.quick_changes(), f"{rep.name}: an offline reproduction needs a --quick variant"


def test_issue_studies_are_registered():
    names = {r.name for r in list_reproductions()}
    assert {"reconstruction", "dictionary-learning", "overcompleteness", "sparsity", "hyperparameters",
            "workload", "vit-lca-table1", "dseld-table3", "dseld-mnist"} <= names
    gpu = {r.name for r in list_reproductions() if not r.offline}
    assert {"vit-lca-table1", "dseld-table3", "dseld-table6"} <= gpu


def test_list_command_shows_names_paper_numbers_and_needs(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for rep in list_reproductions():
        assert rep.name in out
    assert "[needs downloads/GPU]" in out and "[offline]" in out
    assert "675.3" in out and "1.92" in out and "95.63" in out      # paper numbers are printed
    assert "--quick: " in out


def test_list_writes_to_the_stdout_of_the_moment(monkeypatch):
    """print_list must look sys.stdout up when called: a ``file=sys.stdout`` default binds the stream installed at
    import time (a test's capture, closed later), which made the --list test fail after other CLI tests."""
    import io
    import sys

    from spikevit.cli.reproduce import print_list

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    print_list()
    first.close()                       # as pytest closes a finished test's capture
    monkeypatch.setattr(sys, "stdout", second)
    print_list()
    assert "reconstruction" in second.getvalue() and "[offline]" in second.getvalue()


def test_params_quick_and_overrides():
    rep = get_reproduction("overcompleteness")
    full, quick = rep.params(), rep.params(quick=True)
    assert full["test_images"] == 10000 and quick["test_images"] == 1000
    assert rep.quick_changes()["test_images"] == (10000, 1000)
    p = resolve_params(rep, True, {"lam": "0.5", "test_images": "7", "sizes": "10,20"})
    assert p["lam"] == 0.5 and p["test_images"] == 7 and p["sizes"] == "10,20"
    with pytest.raises(SpikevitError, match="no parameter 'nope'"):
        resolve_params(rep, False, {"nope": "1"})
    with pytest.raises(SpikevitError, match="fixed"):
        resolve_params(get_reproduction("dseld-mnist"), False, {"rows": "vit-lca-table1"})


def test_coerce_types():
    assert coerce("x", "3", 1) == 3 and coerce("x", "0.25", 1.0) == 0.25
    assert coerce("x", "true", False) is True and coerce("x", "off", True) is False
    assert coerce("x", "abc", "s") == "abc"
    with pytest.raises(SpikevitError, match="expected a int"):
        coerce("x", "1.5", 1)


@pytest.mark.parametrize("argv,message", [(["reproduce", "nope"], "unknown reproduction 'nope'"),
                                          (["reproduce"], "name a reproduction"),
                                          (["reproduce", "workload", "--set", "junk"], "KEY=VALUE")])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikevit: error:") and message in err and "\n" not in err
