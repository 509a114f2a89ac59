"""Fine-tuning starts (``glandseg train --init``): the weights a run starts from and the config it trains.

``init`` is a model folder (``weights.pt``), a training run folder (``best.pt``) or a checkpoint file; it becomes
the config's ``train_init``. Fine-tuning a folder trains the folder's own ``config.json`` (its model kind, its
section and its ``data_mpp``), renamed ``<name>-finetuned``, unless the caller gives another base config; a
preset given with it keeps the folder's section and ``data_mpp`` (``own_section``).

:func:`load_init` loads those weights. It accepts one shape mismatch, and logs it: a checkpoint whose output
layer has fewer channels than the network (the shipped 2-channel U-Net fine-tuned with ``unet_separation=true``:
its gland and contour outputs keep their weights, the distance output starts fresh).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..checkpoints import grow_outputs, load_weights, read_checkpoint, weights_file
from ..config import RunConfig, load_config, replace_config
from ..errors import ConfigError, ModelError

log = logging.getLogger(__name__)


def init_weights(init: str | os.PathLike) -> Path:
    """The checkpoint ``init`` names: ``weights.pt`` (else ``best.pt``) of a folder, or the file itself.

    Raises:
        ModelError: nothing to start from there (one line naming the path).
    """
    path = Path(init)
    weights = weights_file(path) if path.is_dir() else path
    if not weights.is_file():
        raise ModelError(f"--init {path}: no weights.pt, best.pt or checkpoint file there")
    return weights


def init_config(
    init: str | os.PathLike, base: RunConfig | None = None, *, own_section: bool = False
) -> RunConfig:
    """The config that fine-tunes from ``init``: ``base`` (a preset or config the caller chose), else the
    folder's own ``config.json`` renamed ``<name>-finetuned``; its ``train_init`` is the checkpoint.

    ``own_section`` (``--preset`` with ``--init``): when the folder's ``config.json`` is of ``base``'s model kind,
    the result takes the folder's section and ``data_mpp`` (what its weights were trained with) and ``base``'s
    name and training fields (e.g. ``finetune-unet``'s short schedule and low rate).

    Raises:
        ModelError: no checkpoint at ``init``. ConfigError: no ``base`` and no ``config.json`` beside it.
    """
    weights = init_weights(init)
    own = weights.parent / "config.json"
    if base is not None and own_section and own.is_file():
        mine = load_config(own)
        if mine.model == base.model:
            base = replace_config(base, params=mine.params, data_mpp=mine.data_mpp)
    if base is None:
        if not own.is_file():
            raise ConfigError(
                f"--init {init}: no config.json beside the weights; give --preset or --config"
            )
        base = load_config(own)
        base = replace_config(base, name=f"{base.name}-finetuned")
    return replace_config(base, train_init=str(weights))


def load_init(model: torch.nn.Module, init: str | os.PathLike) -> None:
    """Load the checkpoint ``init`` (``train_init``) into ``model``; a checkpoint with fewer output channels
    fills the first outputs of the network's output layer (:func:`checkpoints.grow_outputs`), said in one log
    line.

    Raises:
        ModelError: an unusable checkpoint, or weights that do not fit otherwise (one line naming the file).
    """
    state, grown = grow_outputs(model, read_checkpoint(Path(init))["model"])
    load_weights(model, state, f"train_init {init}: weights do not fit this model")
    if grown:
        log.info(
            "train_init %s: output layer widened (%s): the checkpoint's channels fill the first outputs, "
            "the new ones start from a fresh initialisation",
            init,
            ", ".join(grown),
        )
