"""Optional inference engines: ONNX Runtime or OpenVINO in place of PyTorch for a loaded network, on the CPU.

``accelerate(model, cfg, device, "auto", weights=path)`` exports the network's dense parts (``parts.py``: the
whole U-Net; a Mask R-CNN's backbone and heads), caches the exported graphs on disk (``cache.py``, keyed by the
weights file's SHA-256, the part, the engine and library versions and the shape policy: dynamic H and W), and
makes the network run them. Post-processing is unchanged, so label maps follow PyTorch's (measured in
benchmarks/bench_engine.py and docs/EXPERIMENTS.md).

Engines: ``torch`` (PyTorch itself), ``openvino``, ``onnx`` (ONNX Runtime), ``auto``: on a CPU that runs
PyTorch in fp32 (no AMX, or ``GLANDSEG_CPU_BF16=0``), the fastest installed engine (ONNX Runtime, then
OpenVINO); PyTorch itself on a CPU where its own path runs bf16 autocast (AMX), on CUDA, or when none is
installed. Measured on an idle 2-core Xeon with AMX (benchmarks/README.md, "Inference engines", quiet rerun):
per GlaS image ONNX Runtime took 1.14x PyTorch's time for the U-Net and 0.89x for the Mask R-CNN, and the U-Net's
20k slide ran 1.27x the reference's throughput on PyTorch against 0.98x on ONNX Runtime (with 1 GB more memory);
with PyTorch in fp32 on the same CPU, ONNX Runtime took 0.89x and 0.82x. ``$GLANDSEG_ENGINE`` says what ``auto``
means (e.g. ``onnx``). With ``auto`` a failed export falls back to PyTorch with one logged line saying why; an
engine asked for by name fails with a :class:`~glandseg_core.errors.ModelError` instead.

Install the engines with ``pip install -e ".[engine]"`` (scripts/setup.sh does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN

from ..config import RunConfig
from ..device import cpu_bf16
from ..errors import ModelError
from .cache import cache_root, cached, entry_key, file_sha256
from .parts import EngineForward, Part, dense_parts, install, maskrcnn_parts, restore, split_roi_pools
from .runners import BUILD, LOAD, MODULES, TITLES, Runner, engine_version

__all__ = ["ENGINES", "accelerate", "available", "cache_root", "engine_of", "resolve", "restore"]

ENGINES = ("auto", "torch", "openvino", "onnx")
PREFERENCE = ("onnx", "openvino")  # fastest first: bench_engine predict (benchmarks/results_engine.txt)
log = logging.getLogger("glandseg")


def available() -> list[str]:
    """The engines installed here besides ``torch`` (fastest first). ONNX Runtime also needs ``onnx`` and
    ``onnxscript``, which torch's exporter uses."""
    need = {"openvino": ("openvino",), "onnx": ("onnxruntime", "onnx", "onnxscript")}
    return [e for e in PREFERENCE if all(importlib.util.find_spec(m) for m in need[e])]


def resolve(engine: str | None, device: torch.device) -> str:
    """The engine a request means here: ``auto`` (or None) -> ``$GLANDSEG_ENGINE`` if set, else the fastest
    installed engine on a CPU that runs PyTorch in fp32; ``torch`` on a CPU where PyTorch runs bf16 (AMX: no
    engine was faster there, module docstring), on CUDA, or when none is installed.

    Raises:
        ModelError: an unknown engine, or one asked for by name that is missing or cannot run on ``device``.
    """
    engine = engine or "auto"
    if engine == "auto":
        engine = os.environ.get("GLANDSEG_ENGINE", "").strip() or "auto"
    if engine not in ENGINES:
        raise ModelError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        found = available()
        return found[0] if found and device.type == "cpu" and not cpu_bf16() else "torch"
    if engine == "torch":
        return engine
    if device.type != "cpu":
        raise ModelError(f"the {TITLES[engine]} engine runs on the CPU; use --engine torch on {device}")
    if engine not in available():
        raise ModelError(
            f"{TITLES[engine]} is not installed ({MODULES[engine]}); pip install -e '.[engine]' adds it"
        )
    return engine


def engine_of(model: nn.Module) -> str:
    """The engine a network runs on: ``torch`` unless :func:`accelerate` replaced some of its parts."""
    for m in model.modules():
        fwd = m.__dict__.get("forward")
        if isinstance(fwd, EngineForward):
            return fwd.engine
    return "torch"


def _source_hash(model: nn.Module, weights: Path | None) -> str:
    """What the graphs are built from: the weights file's SHA-256, else the network's tensors'."""
    if weights is not None:
        return file_sha256(weights)
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _parts(model: nn.Module, cfg: RunConfig) -> list[Part]:
    if isinstance(model, MaskRCNN):
        return maskrcnn_parts(model)
    if hasattr(model, "multiple"):  # a dense network: input sides must be multiples of this (U-Nets)
        return dense_parts(model)
    raise ModelError(f"no engine export for {cfg.model} models")


def _load(engine: str, threads: int, arena: bool, folder: Path) -> Runner:
    return LOAD[engine](folder, threads, arena)


def _attach(model: nn.Module, cfg: RunConfig, engine: str, weights: Path | None) -> None:
    source = _source_hash(model, weights)
    versions = (engine, engine_version(engine), torch.__version__)
    threads = torch.get_num_threads()
    parts = _parts(model, cfg)
    for part in parts:
        g = part.graph  # its structure keys the entry; the test-time caps are not in it
        folder = cache_root() / entry_key(source, g.name, str(g.module), *versions)
        meta = {"part": g.name, "engine": engine, "versions": versions, "source_sha256": source}
        runner = cached(
            folder, partial(BUILD[engine], g), partial(_load, engine, threads, g.arena), meta
        )
        install(part, runner, engine)


def accelerate(
    model: nn.Module,
    cfg: RunConfig,
    device: torch.device,
    engine: str | None = "auto",
    *,
    weights: Path | None = None,
) -> str:
    """Run ``model``'s dense parts on ``engine`` (eval mode, inference only); returns the engine in use.

    Args:
        model: a loaded network (eval mode); its modules' ``forward`` are replaced on the instance.
        cfg: its config. device: where it runs (engines run on the CPU).
        engine: ``auto``, ``torch``, ``openvino`` or ``onnx``. weights: the file the network came from (its
            SHA-256 keys the cache; None: a hash of the network's tensors).

    Raises:
        ModelError: an engine asked for by name is missing or its export fails (``auto`` falls back to torch).
    """
    choice = resolve(engine, device)
    if choice != "torch":
        try:
            _attach(model, cfg, choice, weights)
        except Exception as e:  # noqa: BLE001 - any export or compile error: fall back, say why
            restore(model)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if (engine or "auto") != "auto":
                raise ModelError(f"the {TITLES[choice]} engine failed: {reason}") from None
            log.warning("engine: %s failed (%s); running PyTorch", TITLES[choice], reason[:200])
            choice = "torch"
    if isinstance(model, MaskRCNN) and device.type == "cpu" and torch.get_num_threads() > 1:
        split_roi_pools(model)  # torchvision's CPU RoIAlign runs on one core, whatever runs the rest
    return choice
