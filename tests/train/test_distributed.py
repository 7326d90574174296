"""Two gloo processes under torchrun (loopback, CPU) train exactly like one process on the same global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spikevit.tensorio import load_tensors

SCRIPT = textwrap.dedent('''
    import sys, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from spikevit.tensorio import save_tensors
    from spikevit.train import TrainConfig, fit
    torch.set_num_threads(1)

    class Net(nn.Module):  # no batch norm, no dropout: per-sample maths, so DDP == one process exactly
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.fc = nn.Linear(4 * 64, 3)
        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    torch.manual_seed(1)
    model = Net()
    cfg = TrainConfig(epochs=int(sys.argv[3]), batch_size=12, lr=1e-2, min_lr=1e-3, warmup_epochs=1,
                      weight_decay=0.05, seed=4)
    stop = int(sys.argv[4]) if len(sys.argv) > 4 else None  # simulated kill after this many steps
    res = fit(model, TensorDataset(x, y), TensorDataset(x[:50], y[:50]), cfg, out_dir=sys.argv[1],
              run={"model": "inline-net"}, stop_after_steps=stop)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        save_tensors(sys.argv[2], dict(model.state_dict()), "test-params",
                     {"final": res.final, "train": [e["train"] for e in res.history]})
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "train_inline.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "SPIKEVIT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    _run([sys.executable, str(script), str(tmp / "single"), str(tmp / "single.safetensors"), "2"], env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    _run(torchrun + [str(script), str(tmp / "ddp"), str(tmp / "ddp.safetensors"), "2"], env)
    # a DDP run killed in epoch 2 (10 steps per epoch), then rerun: resumes from epoch 1's checkpoint
    killed = subprocess.run(torchrun[:-1] + [f"--master_port={_free_port()}", str(script), str(tmp / "resumed"),
                                             str(tmp / "resumed.safetensors"), "2", "15"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and "_SimulatedKill" in killed.stderr
    _run(torchrun[:-1] + [f"--master_port={_free_port()}", str(script), str(tmp / "resumed"),
                          str(tmp / "resumed.safetensors"), "2"], env)
    return tmp


def test_ddp_two_gloo_processes_match_single_process(runs):
    single, meta_s = load_tensors(runs / "single.safetensors", "test-params")
    ddp, meta_d = load_tensors(runs / "ddp.safetensors", "test-params")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6)
    # same test accuracy / sample count (eval is sharded r::2 and summed)
    assert meta_d["final"]["samples"] == meta_s["final"]["samples"] == 50
    assert meta_d["final"]["acc1"] == pytest.approx(meta_s["final"]["acc1"])
    for a, b in zip(meta_s["train"], meta_d["train"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    # the run moved the parameters away from their initial values (so the comparison is not vacuous)
    torch.manual_seed(1)
    conv0, fc0 = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.Linear(4 * 64, 3)
    assert (single["conv.weight"] - conv0.weight).abs().max() > 1e-2
    assert (single["fc.weight"] - fc0.weight).abs().max() > 1e-2


def test_ddp_checkpoint_holds_every_rank_rng(runs):
    from spikevit.train.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(runs / "ddp" / "last.safetensors")
    assert meta["world_size"] == 2 and meta["epoch"] == 2
    assert not torch.equal(tensors["rng.0.torch"], tensors["rng.1.torch"])  # seeded per rank


def test_ddp_resume_after_kill_matches_uninterrupted_ddp_run(runs):
    ref, _ = load_tensors(runs / "ddp.safetensors", "test-params")
    res, meta = load_tensors(runs / "resumed.safetensors", "test-params")
    for k in ref:
        assert torch.equal(res[k], ref[k]), k
    log = (runs / "resumed" / "log.json").read_text()
    assert '"epoch": 2' in log
