"""Segment many image files and slides into a folder, one process or many (``torchrun``), with a summary CSV.

Outputs of one image are written all together or not at all (a full disk or Ctrl-C leaves no image
half-done), never over an input file, and a bad input is reported in one line while the batch goes on with the
next. Each output set records its input and model (``<stem>.input.json``, :mod:`.provenance`): an input whose
outputs exist already, made from the same input with the same model, is skipped; outputs of another input or
model, or that no record explains, are refused in one line (``overwrite=True`` redoes it). Two inputs that
would write a file of the same name are refused before any work, one batch at a time writes into a folder
(:mod:`.lock`), and ``summary.csv`` keeps the rows of earlier batches into the folder.

Per image ``<stem>.<ext>``: ``<stem>.png`` (16-bit label map, 0=background, 1..N glands, at the input's size),
``<stem>_overlay.png``, ``<stem>_glands.csv``, ``<stem>.geojson`` and ``<stem>.ome.tif`` (the label map as
OME-TIFF, for napari and Fiji); inputs sharing a stem get ``<stem>-2``, ... With a known pixel size (``--mpp``,
else the file's TIFF/OME metadata) the image is segmented at the model's pixel size (results at the input's
size) and the outputs carry µm and µm². Whole-slide images go to :func:`glandseg_core.slides.predict_slide`.
The batch's ``summary.csv`` has one row per input (:data:`SUMMARY_COLUMNS`).

Many processes: under ``torchrun --nproc_per_node N [--nnodes M]`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
set), every process lists the inputs the same way and process ``r`` takes inputs ``r, r + N, ...``; sharding
needs no communication. Each writes its outputs and ``summary_rank<r>.csv``; rank 0 then gathers the rows of
all ranks over a gloo process group (CPU, works with or without GPUs; the gather is also the barrier that
tells rank 0 every rank is done, which polling files cannot tell from a crash, and needs no shared disk) and
writes ``summary.csv``.
"""

from __future__ import annotations

from .run import Outcome, predict_files, predict_one, run_batch
from .writing import SUFFIXES, SUMMARY, SUMMARY_COLUMNS, Result, write_summary, write_together

__all__ = [
    "SUFFIXES",
    "SUMMARY",
    "SUMMARY_COLUMNS",
    "Outcome",
    "Result",
    "predict_files",
    "predict_one",
    "run_batch",
    "write_summary",
    "write_together",
]
