"""Setting a run up: its config, its data, a fresh :class:`TrainState`, then a start from scratch, from
``train_init`` weights, or exactly where ``last.pt`` left off.

Nothing is written to the run folder before the data and the starting weights have been read, so a run that
cannot start leaves the folder as it found it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import distributed as dist

from ..checkpoints import read_checkpoint
from ..config import RunConfig, load_config, save_config
from ..datasets import DataLike, Item, as_dataset
from ..device import pick_device
from ..distributed import init_group, world_from_env
from ..errors import DatasetError
from ..memory import check_training
from ..models import build_model, load_pretrained
from .batches import Batches, Sample, load_split
from .context import RunContext, TrainState
from .locks import removed_if_unused, run_folder_lock, training_lock
from .runfiles import LOG, trim_log, writing
from .schedule import lr_lambda, make_optimizer
from .starts import load_init


def run_config(ctx: RunContext, cfg: RunConfig, resume: bool) -> RunConfig:
    """The run's config: ``cfg`` for a new run, the folder's ``config.json`` when resuming.

    Raises:
        FileNotFoundError: resuming without ``last.pt``. FileExistsError: a new run where ``last.pt`` exists.
        ConfigError: ``config.json`` does not hold a valid config (names the field), or a combination of
            settings whose training step would not fit the device's memory (:func:`memory.check_training`).
    """
    last = ctx.run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        cfg = load_config(ctx.run_dir / "config.json")
    elif ctx.rank == 0 and last.exists():
        raise FileExistsError(f"{ctx.run_dir} already holds a run; use --resume or another --out folder")
    check_training(cfg, ctx.device)  # before any data is read or memory allocated
    return cfg


def split_items(data: DataLike, val_data: DataLike | None = None) -> tuple[list[Item], list[Item]]:
    """The (train, val) items: ``data``'s ``train`` and ``val`` splits; with ``val_data``, the ``train`` split
    of ``data`` and the ``val`` split of ``val_data`` (in-memory pairs become those splits).

    Raises:
        DatasetError: the data set is missing, incomplete, or lacks one of the splits.
    """
    train_set = as_dataset(data, split="train")
    val_set = train_set if val_data is None else as_dataset(val_data, split="val")
    for name, ds in (("train", train_set), ("val", val_set)):
        if name not in ds.splits:
            hint = "; pass validation pairs as val_data" if name == "val" and val_data is None else ""
            raise DatasetError(
                f"no {name} split in {ds!r} (it has {', '.join(ds.splits) or 'none'}){hint}"
            )
    return train_set.items(("train",)), val_set.items(("val",))


def load_data(
    cfg: RunConfig, data: DataLike, rank: int, val_data: DataLike | None = None
) -> tuple[list[Sample], list[Sample]]:
    """(train, val) samples in memory at the model's pixel size (``cfg.data_mpp``; items at another ``mpp`` are
    resized to it); training images also at the kind's input scale (the U-Net's), ``val`` (rank 0 only) not.

    Args:
        data: a data set, a folder in any layout (None: ``$GLANDSEG_DATA``), several folders (the first one's
            splits, the others' ``train``) or (image, label map) pairs to train on.
        val_data: validation pairs or data set (default: ``data``'s ``val`` split).

    Raises:
        DatasetError: the data set is missing, incomplete or lacks a split.
    """
    scale = cfg.kind.input_scale(cfg)
    train_items, val_items = split_items(data, val_data)
    if cfg.train_max_images:
        train_items = train_items[: cfg.train_max_images]
    train = _at_model_scale(train_items, cfg, scale)
    return train, _at_model_scale(val_items, cfg) if rank == 0 else []


def _at_model_scale(items: list[Item], cfg: RunConfig, scale: float = 1.0) -> list[Sample]:
    """The items in memory, each resized from its own pixel size (``item.mpp``; None: the model's) to the
    model's ``cfg.data_mpp``, times ``scale``."""
    factor = [(it.mpp or cfg.data_mpp) / cfg.data_mpp for it in items]
    return [s for it, f in zip(items, factor, strict=True) for s in load_split([it], scale * f)]


def new_state(cfg: RunConfig, train: list[Sample], ctx: RunContext) -> TrainState:
    """A freshly initialised network (seeded by the caller), its optimizer, schedule and batch RNG."""
    model = cfg.kind.prepare(build_model(cfg).to(ctx.device))
    batches = Batches(cfg, train, ctx.rank, ctx.world)
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, batches.steps()))
    rng = np.random.default_rng(cfg.train_seed + 1000 * ctx.rank)
    return TrainState(cfg, model, model, optimizer, scheduler, rng, batches)


def _restore(state: TrainState, ctx: RunContext) -> None:
    """Continue exactly from ``last.pt``: weights, optimizer, schedule, epoch, best, every RNG; the log
    drops the records of epochs after the checkpoint's (and a half-written last line)."""
    ckpt = read_checkpoint(ctx.run_dir / "last.pt")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.epoch, state.best = ckpt["epoch"] + 1, ckpt["best"]
    if ctx.rank < len(ckpt["rng_numpy"]):
        state.rng.bit_generator.state = ckpt["rng_numpy"][ctx.rank]
    torch.set_rng_state(ckpt["rng_torch"])
    if ctx.rank == 0:
        trim_log(ctx.run_dir, ckpt["epoch"] + 1)  # log epochs are 1-based


def start_state(state: TrainState, ctx: RunContext, resume: bool) -> None:
    """Load the starting weights: ``last.pt`` when resuming, else ``train_init`` if set, else the start that
    ``cfg.pretrained`` names. A new run then writes ``config.json`` and empties a log left by an attempt that
    never checkpointed. Wraps the network in DistributedDataParallel under DDP (after loading, since DDP
    broadcasts rank 0's weights).

    Raises:
        ModelError: an unusable checkpoint, ``train_init`` or pretrained file (or one missing offline).
        ConfigError: a pretrained start that does not fit the network.
    """
    cfg = state.cfg
    if resume:
        _restore(state, ctx)
    else:
        if cfg.train_init:
            load_init(state.model, cfg.train_init)
        else:
            load_pretrained(state.model, cfg)  # cfg.pretrained: none (scratch), coco, imagenet or a file
        if ctx.rank == 0:
            with writing(ctx.run_dir / "config.json"):
                save_config(cfg, ctx.run_dir / "config.json")
            (ctx.run_dir / LOG).unlink(missing_ok=True)
    if ctx.world > 1:
        state.net = torch.nn.parallel.DistributedDataParallel(state.model)


def dist_setup(device_name: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when ``WORLD_SIZE > 1``.

    Raises:
        ConfigError: bad ``RANK``/``WORLD_SIZE``, or a rank that never came within
            ``$GLANDSEG_RENDEZVOUS_TIMEOUT`` seconds (one line naming it and how to start torchrun).
    """
    env = world_from_env()
    world = env.size
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        init_group(env, "nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


@contextlib.contextmanager
def hold_locks(ctx: RunContext, machine_lock: bool = False) -> Iterator[None]:
    """Rank 0 holds the machine's training lock (when ``machine_lock``: the CLI and the dashboard ask for it),
    then the run folder's own (created here); a run refused before writing anything leaves no folder."""
    with contextlib.ExitStack() as stack:
        # entered first, so it sees a failure after the locks are released
        stack.enter_context(removed_if_unused(ctx.run_dir, ctx.rank == 0))
        if ctx.rank == 0 and machine_lock:
            stack.enter_context(training_lock(ctx.run_dir))
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        if ctx.rank == 0:
            stack.enter_context(run_folder_lock(ctx.run_dir))
        yield
