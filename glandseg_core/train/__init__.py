"""Training: ``fit(cfg, data, run_dir)`` trains a model into a run folder.

Modules: ``engine`` (fit, train_one_epoch, validate), ``setup`` (config, data, start or resume), ``batches``
(augmented batches), ``schedule`` (optimizer, learning rate, time budget), ``runfiles`` (checkpoints and logs
written safely), ``tune`` (post-processing thresholds on ``val``), ``locks`` (one training at a time).
"""

from __future__ import annotations

from .engine import fit

__all__ = ["fit"]
