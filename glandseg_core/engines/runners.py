"""Exporting a graph to an engine's format and running it: OpenVINO and ONNX Runtime, on the CPU.

* OpenVINO: ``openvino.convert_model`` traces the torch module (no ONNX step), ``openvino.save_model`` stores
  the IR (weights kept in fp32); compiled with ``INFERENCE_PRECISION_HINT`` f32. Its bf16 hint ran the U-Net's
  network 4x faster still on AMX, but moved its val F1 by +0.0036 (labels must stay within 0.002 of PyTorch's;
  docs/EXPERIMENTS.md), so it is not used.
* ONNX Runtime: ``torch.onnx.export`` (the torch.export-based exporter, which needs ``onnx`` and ``onnxscript``),
  run by the CPU execution provider in fp32.

Both use as many threads as torch (``GLANDSEG_THREADS``, ``device.apply_thread_limit``).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]

MODULES = {"openvino": "openvino", "onnx": "onnxruntime"}  # engine -> the package that runs it
TITLES = {"openvino": "OpenVINO", "onnx": "ONNX Runtime", "torch": "PyTorch"}


def title(engine: str) -> str:
    """An engine's name for people (``onnx`` -> ``ONNX Runtime``); an unknown one as given."""
    return TITLES.get(engine, engine)


@dataclass(frozen=True)
class Graph:
    """A module to export: flat float32 tensors in, a flat tuple of tensors out.

    Attributes:
        name: the part's name (``network``, ``backbone``, ``rpn_head``, ...).
        module: the module (eval mode). example: inputs to trace it with.
        dynamic: per input, the axes whose size may change between calls.
        arena: whether ONNX Runtime keeps its freed buffers for the next call (its CPU memory arena): faster
            for one network on large inputs (the U-Net on a slide window: 1.3 s instead of 1.8 s CPU), but a
            Mask R-CNN's four graphs each keep their largest call's buffers beside torch's own (2.7 GB peak on
            a slide instead of 2.4 GB), so its parts run without.
    """

    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    dynamic: tuple[tuple[int, ...], ...]
    arena: bool = True


def engine_version(engine: str) -> str:
    """The installed version of the engine's package (ImportError when it is missing)."""
    if engine == "openvino":
        import openvino

        return str(openvino.__version__)
    import onnxruntime

    return str(onnxruntime.__version__)


class _Locked:
    """Serialises calls: one compiled graph, one inference at a time (the dashboard may call from threads)."""

    def __init__(self, run: Runner) -> None:
        self._run, self._lock = run, threading.Lock()

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            return self._run(inputs)


def _ov_build(graph: Graph, folder: Path) -> None:
    import openvino as ov

    shapes = [
        ov.PartialShape([-1 if i in dyn else int(n) for i, n in enumerate(x.shape)])
        for x, dyn in zip(graph.example, graph.dynamic, strict=True)
    ]
    with torch.no_grad():
        example = tuple(x.clone() for x in graph.example)  # tracing refuses inference-mode tensors
        model = ov.convert_model(graph.module, example_input=example, input=shapes)
    ov.save_model(model, folder / "model.xml", compress_to_fp16=False)


def _ov_load(folder: Path, threads: int, arena: bool = True) -> Runner:
    del arena  # OpenVINO manages its own buffers
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(core.read_model(folder / "model.xml"), "CPU", config)
    n_out = len(compiled.outputs)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        result = compiled(list(inputs))
        return [np.asarray(result[i]) for i in range(n_out)]

    return _Locked(run)


def _onnx_build(graph: Graph, folder: Path) -> None:
    dims = tuple(
        {axis: torch.export.Dim.DYNAMIC for axis in dyn} for dyn in graph.dynamic
    )  # one dict per input
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its steps
        example = tuple(x.clone() for x in graph.example)
        torch.onnx.export(
            graph.module,
            example,
            str(folder / "model.onnx"),
            dynamo=True,
            dynamic_shapes=(dims,),  # forward(*xs): one entry, the tuple of inputs
            external_data=False,
            verbose=False,
        )


def _onnx_load(folder: Path, threads: int, arena: bool = True) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # no spin-waiting between calls: on a shared CPU spinning threads steal the cores torch's parts need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # without the arena freed buffers go back to malloc; the memory pattern plans for one fixed input shape
    options.enable_cpu_mem_arena = options.enable_mem_pattern = arena
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, dict(zip(names, inputs, strict=True)))]

    return _Locked(run)


BUILD: dict[str, Callable[[Graph, Path], None]] = {"openvino": _ov_build, "onnx": _onnx_build}
LOAD: dict[str, Callable[[Path, int, bool], Runner]] = {"openvino": _ov_load, "onnx": _onnx_load}
