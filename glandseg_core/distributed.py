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
import socket
import time
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
RENDEZVOUS_ENV = "GLANDSEG_RENDEZVOUS_TIMEOUT"  # seconds every rank waits for the others to start
RENDEZVOUS_SECONDS = 300.0
HOW_TO_START = (
    "start every rank, e.g. torchrun --nproc_per_node N -m glandseg_core ... "
    "(add --nnodes M --node_rank R --master_addr HOST --master_port PORT across machines)"
)
_JOINED = "glandseg/joined/"  # rank r sets _JOINED + r in the store once it has arrived


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


def rendezvous_timeout(env: Mapping[str, str] | None = None) -> float:
    """Seconds the ranks wait for each other to start: ``$GLANDSEG_RENDEZVOUS_TIMEOUT`` (default 300).

    Raises:
        ConfigError: a value that is not a number of seconds above 0.
    """
    raw = (os.environ if env is None else env).get(RENDEZVOUS_ENV, "").strip()
    if not raw:
        return RENDEZVOUS_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{RENDEZVOUS_ENV}={raw!r}: expected a number of seconds above 0")
    return seconds


def _master(env: Mapping[str, str]) -> tuple[str, int]:
    """``MASTER_ADDR`` and ``MASTER_PORT``: where rank 0 waits for the others."""
    addr, port = env.get("MASTER_ADDR", "").strip(), env.get("MASTER_PORT", "").strip()
    if not addr or not port.isdigit() or not 0 < int(port) < 2**16:
        raise ConfigError(
            f"WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (rank 0's address and a free port), "
            f"got MASTER_ADDR={addr!r} MASTER_PORT={port!r}; {HOW_TO_START}"
        )
    return addr, int(port)


def _wait_for_listener(host: str, port: int, world: World, seconds: float) -> None:
    """Rank r > 0: wait until rank 0 listens at ``host:port`` (plain connection attempts, so that a missing
    rank 0 is one line instead of torch's retry log)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"rank {world.rank} of {world.size}: rank 0 never came at {host}:{port} "
                    f"(MASTER_ADDR:MASTER_PORT) within {seconds:g} s ({RENDEZVOUS_ENV}); {HOW_TO_START}"
                ) from None
            time.sleep(0.2)


def rendezvous(
    world: World, seconds: float | None = None, env: Mapping[str, str] | None = None
) -> dist.TCPStore:
    """Meet every rank within ``seconds`` (default :func:`rendezvous_timeout`): rank 0 hosts a TCP store at
    ``MASTER_ADDR:MASTER_PORT``, every rank marks itself there and waits until all have.

    Returns:
        The store, for :func:`init_group` (its timeout is then the group's).

    Raises:
        ConfigError: one line naming the rank(s) that never came and how to start them all.
    """
    env = os.environ if env is None else env
    seconds = rendezvous_timeout(env) if seconds is None else seconds
    host, port = _master(env)
    if not world.main:
        _wait_for_listener(host, port, world, seconds)
    try:
        store = dist.TCPStore(
            host, port, world.size, world.main, timedelta(seconds=seconds), wait_for_workers=False
        )
    except (RuntimeError, OSError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"rank {world.rank} cannot {'listen' if world.main else 'connect'} at {host}:{port} "
            f"(MASTER_ADDR:MASTER_PORT): {first}"
        ) from None
    store.set(f"{_JOINED}{world.rank}", "1")
    keys = [f"{_JOINED}{r}" for r in range(world.size)]
    deadline = time.monotonic() + seconds
    try:
        while not store.check(keys):
            if time.monotonic() >= deadline:
                missing = [str(r) for r, k in enumerate(keys) if not store.check([k])]
                raise ConfigError(
                    f"rank {world.rank} of {world.size}: rank {', '.join(missing)} never came within "
                    f"{seconds:g} s ({RENDEZVOUS_ENV}); {HOW_TO_START}"
                )
            time.sleep(0.1)
    except RuntimeError as e:  # rank 0 went away (its own rendezvous failed) and took the store with it
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"rank {world.rank}: rank 0 left before every rank came ({first})") from None
    return store


def init_group(world: World, backend: str = "gloo", timeout: timedelta | None = None) -> None:
    """Join the default process group of ``world`` (``backend``; ``timeout``: how long a collective waits,
    None for torch's default), after a :func:`rendezvous` bounded by ``$GLANDSEG_RENDEZVOUS_TIMEOUT``.

    Under torchrun's elastic agent (``TORCHELASTIC_USE_AGENT_STORE=True``) the agent has already gathered
    every rank and serves the store at ``MASTER_ADDR:MASTER_PORT``: the group is then made as torch does
    (``env://``).

    Raises:
        ConfigError: a missing rank or a missing ``MASTER_ADDR``/``MASTER_PORT`` (one line).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=timeout)
        return
    store = rendezvous(world)
    store.set_timeout(timeout or dist.default_pg_timeout)
    dist.init_process_group(
        backend, store=store, rank=world.rank, world_size=world.size, timeout=timeout
    )


@contextlib.contextmanager
def process_group(world: World) -> Iterator[None]:
    """A gloo process group for the duration of the block when ``world`` has many processes (else nothing).

    torchrun's ``MASTER_ADDR`` and ``MASTER_PORT`` say where the processes meet; a rank that does not come
    within ``$GLANDSEG_RENDEZVOUS_TIMEOUT`` seconds is one line (:func:`init_group`), while a slow rank's shard
    may take :data:`TIMEOUT`.

    Raises:
        ConfigError: a rank never came, or ``MASTER_ADDR``/``MASTER_PORT`` are missing.
    """
    if not world.distributed or dist.is_initialized():
        yield
        return
    init_group(world, "gloo", TIMEOUT)
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
