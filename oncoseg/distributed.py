"""One training code path for one process and for ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m oncoseg train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the
process group then uses NCCL on GPUs and gloo on CPUs. Only rank 0 writes files. A SLURM or
Kubernetes job runs the same command on each node, with torchrun's rendezvous options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owner: bool = False  # this context created the process group and ends it

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


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process on its own: the one that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_main() -> None:
    """Every rank waits here until all arrive (after rank 0 wrote what the others read)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


Item = TypeVar("Item")
Result = TypeVar("Result")


def dealt_out(work: Callable[[int, Item], Result], items: Sequence[Item]) -> list[Result]:
    """``work(index, item)`` for every item, in ``items`` order, on every rank; in a torchrun
    job each rank works on every N-th item only and the results are gathered. Work that each
    rank needs whole (OAR-CT's false positives over every case before each cycle) is then done
    once instead of once per rank: N times faster with N processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [work(index, item) for index, item in enumerate(items)]
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {index: work(index, items[index]) for index in range(rank, len(items), world)}
    gathered: list[dict[int, Result] | None] = [None] * world
    dist.all_gather_object(gathered, mine, group=_cpu_group())
    merged = {index: result for part in gathered if part for index, result in part.items()}
    return [merged[index] for index in range(len(items))]


_CPU_GROUP: list = []


def _cpu_group():
    """A gloo group for gathering Python objects (None: the default group when it is gloo
    already). Under NCCL ``all_gather_object`` would pickle every rank's results into GPU
    memory (Detectron2's ``comm.all_gather`` keeps a gloo group for the same reason).
    Made once, by every rank at the same call, as ``new_group`` requires."""
    if dist.get_backend() == "gloo":
        return None
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo"))
    return _CPU_GROUP[0]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network itself, whether or not DistributedDataParallel wraps it: a training step
    gets the wrapper (its forward synchronises gradients), but the network's own attributes
    and methods live on the module inside."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


def setup(device: str) -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owner = not dist.is_initialized()
    if owner:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return Distributed(rank, world_size, local_rank, owner)


def teardown(context: Distributed) -> None:
    """End the process group if this context created it (a :func:`session` keeps it)."""
    if context.active and context.owner and dist.is_initialized():
        dist.destroy_process_group()
        _CPU_GROUP.clear()  # it went with the default group


@contextmanager
def session(device: str) -> Iterator[Distributed]:
    """One process group for a whole command. Methods trained in stages or cycles (brain,
    OAR-CT's restarts, cross-validation folds) train several networks one after another,
    and between them rank 0 alone writes files, so the ranks reach the next stage at
    different moments; a group made anew per stage then finds its late peers' ports closed
    (gloo: 'Connection refused'). Inside a session every stage joins the same group, and a
    rank that is ahead waits in the stage's first collective."""
    context = setup(device)
    try:
        yield context
    finally:
        teardown(context)
