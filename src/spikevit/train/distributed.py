"""Data-parallel plumbing for ``torchrun``: process group from the environment, rank helpers, reductions.

``torchrun --nproc_per_node=N [--nnodes=M --node_rank=R --master_addr=HOST --master_port=P] \
    $(which spikevit) train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
:func:`init_distributed` then joins the group with NCCL on CUDA and gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spikevit.errors import SpikevitError
from spikevit.runtime import pick_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (no-op for a single process).

    The device is ``cuda:LOCAL_RANK`` when CUDA is chosen, else the requested / best device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device)
    if dev.type == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise SpikevitError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices visible")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        created = True
    return DistInfo(rank, world, local_rank, dev, created)


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(info: DistInfo) -> torch.device:
    return info.device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a float64 tensor over all processes (returns a CPU tensor)."""
    if not info.enabled:
        return values.cpu()
    t = values.to(_comm_device(info), torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def all_gather_tensor(t: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Gather a same-shaped tensor from every rank (CPU copies, rank order)."""
    if not info.enabled:
        return [t.cpu()]
    dev = _comm_device(info)
    src = t.to(dev)
    out = [torch.empty_like(src) for _ in range(info.world_size)]
    dist.all_gather(out, src)
    return [o.cpu() for o in out]


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
