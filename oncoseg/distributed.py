"""One training code path for one process and for ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m oncoseg train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the
process group then uses NCCL on GPUs and gloo on CPUs. Only rank 0 writes files. A SLURM or
Kubernetes job runs the same command on each node, with torchrun's rendezvous options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float) -> float:
        """A number summed over all ranks (the number itself in one process)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup(device: str) -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return Distributed(rank, world_size, local_rank)


def teardown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
