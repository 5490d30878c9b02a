"""``torch.distributed`` helpers: one code path for 1 and N processes.

Launch N processes with ``torchrun --nproc_per_node N -m bcosnet train ...`` (or
``... -m bcosnet evaluate ...``); torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT``.  Backend: NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistEnv", "init_distributed", "ShardedSampler", "all_reduce_sum", "broadcast_flag",
           "broadcast_object", "gather_objects", "launched_by_torchrun", "pick_device"]


@dataclass
class DistEnv:
    """Where this process stands: rank, world size, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a ``torchrun`` (or ``srun`` with the same
    variables) launch: ``WORLD_SIZE`` and ``RANK`` are set."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """This process's device: ``"auto"`` is ``cuda:LOCAL_RANK`` when a GPU is visible,
    else the CPU; ``"cuda"`` is ``cuda:LOCAL_RANK``; ``"cpu"`` and ``"cuda:N"`` are taken
    as given.  A CUDA device where none is visible is a ValueError naming the fix."""
    if device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got "
                             f"{device!r}") from e
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible == 0:
            raise ValueError(
                f"device={device} asks for a GPU, but this process sees no CUDA device "
                "(torch.cuda.is_available() is False: no GPU, no CUDA build of torch, or "
                "CUDA_VISIBLE_DEVICES empty); use device=cpu, or device=auto (a GPU where "
                "one is visible, else the CPU)")
        if dev.index is not None and dev.index >= visible:
            raise ValueError(
                f"device {dev} asked for (device={device}, LOCAL_RANK {local_rank}), but "
                f"this machine shows {visible} CUDA device(s), cuda:0 to cuda:{visible - 1}; "
                f"start at most one process per GPU (torchrun --nproc-per-node {visible}), "
                "or use device=cpu")
    return dev


def init_distributed(device: str = "auto", *,
                     timeout: datetime.timedelta | None = None) -> DistEnv:
    """Join the process group described by torchrun's environment (if any) and
    pick this process's device (:func:`pick_device` with ``LOCAL_RANK``).
    ``timeout``: how long a collective waits for the other processes (torch's
    default, 30 minutes, when None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        here = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank, world, local, dev, here)


class ShardedSampler(Sampler[int]):
    """Shuffled (per epoch) indices, split over ``num_replicas`` processes.

    The epoch's permutation depends only on ``(seed, epoch)``; process r takes
    positions r, r + R, r + 2R, ... of it (padded by wrapping so every process
    gets the same count, as ``DistributedSampler``).  Consecutive batches of B/R
    on every process therefore cover the same B samples as one process with
    batch B.  ``start`` skips the first ``start`` indices of this process
    (resuming mid-epoch).  ``pad=False`` (evaluation) drops the padding.
    """

    def __init__(
        self,
        length: int,
        num_replicas: int = 1,
        rank: int = 0,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.pad:
            total = math.ceil(self.length / self.num_replicas) * self.num_replicas
            while len(order) < total:  # wrap (more than once when length < replicas)
                order += order[: total - len(order)]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        if self.pad:
            n = math.ceil(self.length / self.num_replicas)
        else:
            n = len(range(self.rank, self.length, self.num_replicas))
        return max(n - self.start, 0)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``t`` over processes (in place; a no-op for one process)."""
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """True on every process if it is true on any (e.g. 'time is up')."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process
    (``[obj]`` for one process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Process ``src``'s ``obj`` (picklable) on every process."""
    if not env.distributed:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]
