"""The processes of one run: a ``torch.distributed`` group when launched by ``torchrun``, else one plain process.

``torchrun --nproc_per_node K [--nnodes N ...]`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :meth:`Ranks.from_environment` joins that group (gloo on the CPU, nccl on CUDA
GPUs, each process on the GPU of its local rank). Without those variables the run is one process of
rank 0 and nothing distributed is started, so the same code serves ``brgm ...`` and ``torchrun ...``.
The group only carries small Python objects (the plan from rank 0, a check that every rank agrees,
a final barrier); the images never travel between processes, each rank reads and writes its own.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from brgm_pyro.dataset.launcher import stop_with_launcher
from brgm_pyro.errors import InputError

__all__ = ["Ranks", "launched_by_torchrun", "local_device", "process_group"]

# Ranks finish their shares at different times and wait for each other at the end; a dead rank
# makes torchrun stop the whole group, so a long wait here never hides a failure.
GROUP_TIMEOUT = datetime.timedelta(days=1)
# The key in the rendezvous store that counts the ranks done with the group (one group per torchrun launch).
EXIT_KEY = "brgm-pyro/ranks-done"


def launched_by_torchrun() -> bool:
    """True inside a process started by ``torchrun`` (its environment names the rank and world size)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(kind: str) -> torch.device:
    """The device of this process for ``kind`` "cpu" or "cuda": under torchrun, the GPU of its local rank."""
    if kind == "cpu":
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise InputError(
            f"This process has local rank {local_rank} but the node has {count} GPU(s); "
            "start at most one process per GPU (torchrun --nproc_per_node)."
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size`` (0 of 1 for a plain process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the argument is ignored elsewhere)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


@contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join torchrun's process group for the life of the block (gloo for the CPU, nccl for CUDA), or yield
    one plain process when not launched by torchrun. A group that is already set up is used as it is. A
    process of the group ends when its launcher does (``brgm_pyro.dataset.launcher``)."""
    if not launched_by_torchrun() and not dist.is_initialized():
        yield Ranks()
        return
    if dist.is_initialized():
        yield Ranks(dist.get_rank(), dist.get_world_size())
        return
    stop_with_launcher()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=GROUP_TIMEOUT)
    ranks = Ranks(dist.get_rank(), dist.get_world_size())
    try:
        yield ranks
        _wait_for_every_rank(ranks)
    finally:
        dist.destroy_process_group()


def _wait_for_every_rank(ranks: Ranks) -> None:
    """Return once every rank has got here, counted in the rendezvous store rather than over the group's
    own connections. A rank that returns from the group's last collective may still have a message of it
    in flight to a peer; closing its connections then can abort the peer (gloo's barrier followed by
    destruction, pytorch/gloo#155). Once every rank has returned from that collective, no message is in
    flight and each can close. Only on success: a failed rank leaves at once and torchrun stops the others."""
    store = dist.distributed_c10d._get_default_store()
    if store.add(EXIT_KEY, 1) == ranks.world_size:
        store.set(EXIT_KEY + "/all", b"1")
    store.wait([EXIT_KEY + "/all"], GROUP_TIMEOUT)
