"""`spikevit dts train` under torchrun with 2 gloo processes (CPU, loopback): the mask-loss hook and the
DTSS parameters train through DistributedDataParallel, evaluation is sharded without loss."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from spikevit.train.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dts_train_under_torchrun_two_gloo_processes(data_slices, tmp_path):
    out = tmp_path / "ddp"
    spikevit = Path(sys.executable).with_name("spikevit")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(spikevit), "dts", "train", "--dataset", "mnist", "--data-root",
           str(data_slices), "--arch", "spikformer-1-64", "--model-arg", "dim=32", "--img-size", "16",
           "--train-subset", "80", "--test-subset", "40", "--epochs", "2", "--batch-size", "20",
           "--lambda-m", "1e-2", "--mask-groups", "all", "--out", str(out)]
    env = {**os.environ, "SPIKEVIT_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tensors, meta = load_checkpoint(out / "last.safetensors")
    assert meta["world_size"] == 2 and meta["epoch"] == 2
    log = json.loads((out / "log.json").read_text())["epochs"]
    assert all("mask_steps" in e["train"] for e in log)
    assert log[-1]["test"]["samples"] == 40                   # sharded evaluation covers the split once
    # the DTSS parameters were trained (moved from their initial value c = (1/3 + 1/2) / 2 = 5/12)
    tp = [v for k, v in tensors.items() if k.startswith("model.") and k.endswith("dtss.tp")]
    assert tp and any(not torch.allclose(t, torch.full_like(t, 5 / 12)) for t in tp)
    rep = json.loads((out / "report.json").read_text())
    assert 1.0 <= rep["results"]["summary"]["T_avg"] <= 4.0
