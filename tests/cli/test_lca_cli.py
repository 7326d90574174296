"""The `spikevit lca` command end to end on the embedded digits set, and its one-line errors."""
import json
import subprocess
import sys

import pytest

from spikevit.cli.main import main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_in_steps_matches_run_in_one_go(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    common = ["--dataset", "digits", "--backbone", "pixels", "--cache", cache]
    lca = ["--lam", "0.5", "--steps", "60"]
    code, out, _ = run(["lca", "run", *common, *lca, "--dictionary-size", "600", "--shallow-train-size", "300",
                        "--json", str(tmp_path / "run.json")], capsys)
    assert code == 0 and "max_sum" in out
    doc = json.loads((tmp_path / "run.json").read_text())
    res = doc["results"]
    assert set(res["accuracy"]) == {"max_activation", "max_sum", "shallow"}
    assert res["accuracy"]["max_sum"] > 90          # digits are easy for exemplar LCA
    assert len(res["active_per_step_mean"]) == 60
    assert res["M_hat"] == pytest.approx(sum(res["active_per_step_mean"]) / 60, rel=1e-6)
    assert (tmp_path / "run.md").exists() and (tmp_path / "run-active.png").exists()
    assert doc["config"]["dictionary_size"] == 600
    assert doc["config"]["backend_resolved"] == "factored"   # auto on 64-dim digits, M = 600 > N
    assert doc["command"].startswith("spikevit lca run --dataset digits") and "--dictionary-size 600" in doc["command"]

    d = str(tmp_path / "d.safetensors")
    assert run(["lca", "fit", *common, "--dictionary-size", "600", "--out", d], capsys)[0] == 0
    code, out, _ = run(["lca", "evaluate", *common, *lca, "--dictionary", d, "--shallow-train-size", "300",
                        "--json", str(tmp_path / "eval.json")], capsys)
    assert code == 0
    ev = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert ev["accuracy"] == res["accuracy"] and ev["M_hat"] == res["M_hat"]

    codes = str(tmp_path / "codes.safetensors")
    assert run(["lca", "encode", *common, *lca, "--dictionary", d, "--out", codes], capsys)[0] == 0
    bigger = str(tmp_path / "d2.safetensors")
    folder = tmp_path / "cache" / "digits" / "pixels" / "test"
    code, out, _ = run(["lca", "add", "--dictionary", d, "--features", str(folder), "--count", "50",
                        "--out", bigger], capsys)
    assert code == 0 and "600 + 50 = 650" in out


@pytest.mark.parametrize("args,needle", [
    (["lca", "run", "--dataset", "cifar10", "--data-root", "/nonexistent/dir"], "data root not found"),
    (["lca", "run", "--dataset", "svhn"], "unknown dataset"),
    (["lca", "run", "--backbone", "resnet9000"], "unknown backbone"),
    (["lca", "run", "--dictionary-size", "99999"], "exceeds"),
    (["lca", "run", "--tau", "0"], "--tau: must be >= 1"),
])
def test_bad_input_gives_one_line_error_and_exit_2(args, needle, tmp_path, capsys):
    code, _, err = run([*args, "--cache", str(tmp_path), "--json", str(tmp_path / "x.json")], capsys)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_dictionary_and_mismatched_features(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x01\x02garbage")
    code, _, err = run(["lca", "evaluate", "--dataset", "digits", "--dictionary", str(bad), "--cache",
                        str(tmp_path)], capsys)
    assert code == 2 and "corrupt or foreign" in err
    # a dictionary built on other features (random 10-d) is refused for 64-d digit pixels
    import torch
    from spikevit.lca import Dictionary
    Dictionary.from_features(torch.randn(20, 10), torch.arange(20) % 2, backbone="pixels").save(tmp_path / "d.safetensors")
    code, _, err = run(["lca", "evaluate", "--dataset", "digits", "--dictionary", str(tmp_path / "d.safetensors"),
                        "--cache", str(tmp_path)], capsys)
    assert code == 2 and "expects (B, 10)" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "spikevit.cli.main", "lca", "run", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--dictionary-size" in out and "--lam" in out


def test_limit_reuses_a_complete_full_cache(tmp_path, capsys):
    import torch
    from spikevit.data import extract_features, load_features
    from spikevit.cli import lca as lca_cli
    from spikevit.data.features import subset_indices

    cache = tmp_path / "cache"
    full = load_features(extract_features("digits", None, "test", "pixels", cache, show_progress=False))
    from spikevit.cli.main import build_parser
    args = build_parser().parse_args(["lca", "run", "--cache", str(cache), "--limit-test", "100"])
    sub = lca_cli._features(args, "test")
    rows = subset_indices(540, 100)
    assert torch.equal(sub.features, full.features[rows]) and torch.equal(sub.index, full.index[rows])
    assert not (cache / "digits" / "pixels" / "test-n100").exists()   # nothing was re-extracted


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """`spikevit reproduce --list | head -1`: the reader stops early; the command exits quietly."""
    proc = subprocess.run(f"{sys.executable} -m spikevit.cli.main reproduce --list | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1 and "reconstruction" in proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
