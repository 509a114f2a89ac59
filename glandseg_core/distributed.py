"""One batch over many processes (``torchrun --nproc_per_node N [--nnodes M] -m glandseg_core predict ...``).

:func:`world_from_env` reads where this process sits from the variables torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``); without them the batch is one process. :meth:`World.shard` gives process
``r`` of ``N`` the items ``r, r + N, r + 2N, ...`` of a list every process builds the same way, so sharding
itself needs no communication. What needs one is the end: rank 0 merges the summary rows of all ranks, and
must know that every rank has finished. :func:`process_group` opens a gloo group for that (gloo runs on CPU,
so it works with and without GPUs, and NCCL would need a GPU per rank for a few kilobytes of rows), and
:func:`gather_to_main` gathers Python objects on rank 0, which also serves as the barrier; unlike polling for
the other ranks' files, it cannot mistake a crashed rank for a slow one and needs no disk shared by the nodes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch.distributed as dist

from .errors import ConfigError

T = TypeVar("T")
TIMEOUT = timedelta(
    hours=24
)  # how long rank 0 waits for the slowest rank (a shard of slides takes hours)


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its machine (its GPU index)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that merges and reports for the batch."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: items ``rank, rank + size, ...`` (round robin, so similar files spread out)."""
        return list(items[self.rank :: self.size])

    def device(self, name: str | None) -> str | None:
        """The device for this process: ``cuda`` becomes ``cuda:<local_rank>`` when there are many processes."""
        return f"cuda:{self.local_rank}" if self.distributed and name == "cuda" else name


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The :class:`World` that torchrun describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default: one).

    Raises:
        ConfigError: a variable that is not a whole number, or a rank outside ``0 .. WORLD_SIZE - 1``.
    """
    env = os.environ if env is None else env
    values = {}
    for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = env.get(key, "").strip()
        if raw and not raw.isdigit():
            raise ConfigError(f"{key}={raw!r}: expected a whole number (set by torchrun)")
        values[key] = int(raw) if raw else default
    world = World(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if world.size < 1 or world.rank >= world.size:
        raise ConfigError(f"RANK={world.rank} does not fit WORLD_SIZE={world.size}")
    return world


@contextlib.contextmanager
def process_group(world: World) -> Iterator[None]:
    """A gloo process group for the duration of the block when ``world`` has many processes (else nothing).

    torchrun's ``MASTER_ADDR`` and ``MASTER_PORT`` say where the processes meet (``env://``).
    """
    if not world.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather_to_main(world: World, items: list[T]) -> list[T] | None:
    """Every rank's ``items``, concatenated in rank order, on rank 0 (None on the other ranks).

    Blocks until every rank has called it; with one process it returns ``items`` at once.
    """
    if not world.distributed:
        return list(items)
    parts: list[list[T]] | None = [[] for _ in range(world.size)] if world.main else None
    dist.gather_object(items, parts, dst=0)
    return None if parts is None else [x for part in parts for x in part]
