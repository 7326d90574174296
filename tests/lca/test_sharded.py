"""Two gloo ranks (loopback, CPU, torchrun) holding halves of the dictionary give the single-process codes and predictions.

(Named test_sharded.py: tests/train/test_distributed.py already owns the module name test_distributed.)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from spikevit.errors import SpikevitError
from spikevit.lca import encode_trace, max_activation, max_sum
from spikevit.lca.distributed import DictionaryShard, decode_sharded, encode_sharded, shard_bounds
from spikevit.tensorio import load_tensors

SCRIPT = textwrap.dedent('''
    import sys, torch
    import torch.distributed as dist
    from spikevit.lca.distributed import DictionaryShard, decode_sharded, encode_sharded, gather_codes
    from spikevit.tensorio import save_tensors
    from spikevit.train.distributed import init_distributed, shutdown
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(12, 301, generator=g).abs() + 0.2          # correlated atoms, odd M: uneven shards
    phi = (phi / phi.norm(dim=0)).double()                        # float64: ranks must agree to round-off
    s = 6.0 * torch.randn(5, 12, generator=g).abs().double()
    labels = torch.arange(301) % 4
    exclude = torch.tensor([3, -1, 200, 150, -1])              # global indices, on both shards
    shard = DictionaryShard.from_dictionary(phi, labels, info.rank, info.world_size)
    out = {}
    for backend in ("factored", "active", "mixed"):
        res = encode_sharded(shard, s, lam=0.8, tau=10.0, steps=40, backend=backend, exclude=exclude,
                             trace="energy", potentials=True)
        dec = decode_sharded(res.codes, shard)
        full = gather_codes(res.codes, shard)
        pot = gather_codes(res.potentials, shard)
        if info.rank == 0:
            out[f"{backend}.codes"] = full
            out[f"{backend}.potentials"] = pot
            out[f"{backend}.energy"] = res.energy
            out[f"{backend}.active"] = res.active
            out[f"{backend}.max_sum"] = dec["max_sum"]
            out[f"{backend}.max_activation"] = dec["max_activation"]
    if info.rank == 0:
        save_tensors(sys.argv[1], out, "test-sharded", {"world": info.world_size})
    shutdown(info)
''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(args, env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def env():
    e = {**os.environ, "SPIKEVIT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    e.pop("WORLD_SIZE", None)
    return e


def test_two_gloo_ranks_equal_one_process(tmp_path, env):
    script = tmp_path / "sharded.py"
    script.write_text(SCRIPT)
    _torchrun([str(script), str(tmp_path / "out.safetensors")], env)
    got, meta = load_tensors(tmp_path / "out.safetensors", "test-sharded")
    assert meta["world"] == 2
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(12, 301, generator=g).abs() + 0.2
    phi = (phi / phi.norm(dim=0)).double()
    s = 6.0 * torch.randn(5, 12, generator=g).abs().double()
    labels = torch.arange(301) % 4
    exclude = torch.tensor([3, -1, 200, 150, -1])
    ref = encode_trace(phi, s, lam=0.8, tau=10.0, steps=40, backend="gramian", exclude=exclude, trace="energy")
    assert (ref.codes != 0).sum(1).min() > 0
    for backend in ("factored", "active", "mixed"):
        torch.testing.assert_close(got[f"{backend}.codes"], ref.codes, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(got[f"{backend}.potentials"], ref.potentials, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(got[f"{backend}.energy"], ref.energy, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[f"{backend}.active"], ref.active)
        assert torch.equal(got[f"{backend}.max_sum"], max_sum(ref.codes, labels, 4))
        assert torch.equal(got[f"{backend}.max_activation"], max_activation(ref.codes, labels))


def test_lca_shard_command_under_torchrun(tmp_path, env):
    from spikevit.lca.codes import load_codes
    from spikevit.data.features import extract_features, load_features
    from spikevit.lca import Dictionary

    train = load_features(extract_features("digits", None, "train", "pixels", tmp_path / "cache", show_progress=False))
    test_dir = extract_features("digits", None, "test", "pixels", tmp_path / "cache", limit=60, show_progress=False)
    test = load_features(test_dir)
    d = Dictionary.from_features(train.features, train.labels, 401, seed=0, backbone=train.backbone, dataset="digits")
    d.save(tmp_path / "dict.safetensors")
    _torchrun(["-m", "spikevit.cli.main", "lca", "shard", "--dictionary", str(tmp_path / "dict.safetensors"),
               "--features", str(test_dir), "--device", "cpu", "--encode-batch", "25",
               "--json", str(tmp_path / "res.json"), "--codes-out", str(tmp_path / "codes.safetensors")], env)
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["results"]["world_size"] == 2 and res["results"]["atoms_per_rank"] == 201
    codes, code_labels, meta = load_codes(tmp_path / "codes.safetensors")
    assert codes.shape == (60, 401) and torch.equal(code_labels, test.labels) and meta["world_size"] == 2
    ref = encode_trace(d.atoms, test.features, backend="gramian").codes
    assert (ref != 0).any()
    assert (codes - ref).abs().max() <= 1e-4 * ref.abs().max()  # float32, sums in another order
    for name, pred in (("max_sum", max_sum(ref, d.labels, 10)), ("max_activation", max_activation(ref, d.labels))):
        acc = 100.0 * float((pred == test.labels).double().mean())
        assert res["results"]["accuracy"][name] == pytest.approx(acc)


def test_single_process_helpers_and_errors():
    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(SpikevitError, match="rank"):
        shard_bounds(10, 3, 3)
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(6, 40, generator=g)
    phi = phi / phi.norm(dim=0)
    s = 3 * torch.randn(3, 6, generator=g)
    labels = torch.arange(40) % 5
    shard = DictionaryShard.from_dictionary(phi, labels, 0, 1)
    out = encode_sharded(shard, s, lam=0.5, tau=5.0, steps=20, backend="factored")
    torch.testing.assert_close(out.codes, encode_trace(phi, s, lam=0.5, tau=5.0, steps=20).codes, rtol=1e-5, atol=1e-6)
    dec = decode_sharded(out.codes, shard)
    assert torch.equal(dec["max_sum"], max_sum(out.codes, labels, 5))
    with pytest.raises(SpikevitError, match="sharded"):
        encode_sharded(shard, s, backend="gramian")


def test_sharded_evaluation_refuses_a_split_that_gave_atoms(tmp_path):
    from spikevit.lca import Dictionary
    from spikevit.lca.distributed import check_split_not_in_dictionary

    x, y = torch.randn(30, 6), torch.arange(30) % 3
    d = Dictionary.from_features(x[:20], y[:20], dataset="toy")
    d.save(tmp_path / "d.safetensors")
    assert check_split_not_in_dictionary(tmp_path / "d.safetensors", "toy", "test") == 0
    d.add(x[20:], y[20:], torch.arange(10), dataset="toy", split="test")
    d.save(tmp_path / "d2.safetensors")
    with pytest.raises(SpikevitError, match="holds 10 atom\\(s\\) taken from the toy test split"):
        check_split_not_in_dictionary(tmp_path / "d2.safetensors", "toy", "test")
    assert check_split_not_in_dictionary(tmp_path / "d2.safetensors", "toy", "test", allow=True) == 10
    assert check_split_not_in_dictionary(tmp_path / "d2.safetensors", "toy", "train", allow=True) == 20


def test_run_sharded_in_one_process_returns_the_report(tmp_path):
    from spikevit.data.features import extract_features, load_features
    from spikevit.lca import Dictionary, LCAParams
    from spikevit.lca.distributed import ShardedRun, run_sharded
    from spikevit.reports import Report

    train = load_features(extract_features("digits", None, "train", "pixels", tmp_path / "cache", show_progress=False))
    test_dir = extract_features("digits", None, "test", "pixels", tmp_path / "cache", limit=40, show_progress=False)
    test = load_features(test_dir)
    d = Dictionary.from_features(train.features, train.labels, 300, seed=0, backbone=train.backbone, dataset="digits")
    d.save(tmp_path / "dict.safetensors")
    rep = run_sharded(ShardedRun(dictionary=str(tmp_path / "dict.safetensors"), features=str(test_dir),
                                 lca=LCAParams(), device="cpu", json=str(tmp_path / "res.json")))
    assert isinstance(rep, Report) and rep.path == tmp_path / "res.json"
    doc = json.loads((tmp_path / "res.json").read_text())
    assert doc["results"]["accuracy"] == pytest.approx(rep.results["accuracy"])
    assert rep.results["world_size"] == 1 and rep.results["atoms_per_rank"] == 300
    ref = encode_trace(d.atoms, test.features, backend="gramian").codes
    acc = 100.0 * float((max_sum(ref, d.labels, 10) == test.labels).double().mean())
    assert rep.results["accuracy"]["max_sum"] == pytest.approx(acc)
