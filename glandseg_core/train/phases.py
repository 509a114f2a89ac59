"""What a run is doing and how to stop it at once: the phases written to ``progress.json``, and the stop flag.

A run goes through phases, each with its own progress (``done`` of ``total`` ``unit``):

========== ======================================= ===========
phase      what                                    unit
========== ======================================= ===========
setup      reading the images, building the model  (none)
train      the optimizer steps of an epoch         steps
validate   scoring the epoch on ``val``            images
tune       post-processing thresholds on ``val``   images, then grid points
========== ======================================= ===========

``progress.json`` holds ``{"event", "status", "phase", "unit", "done", "total", "phase_started", "epoch",
"epochs", "step", "steps", "loss", "time", "pid"}`` (``time`` and ``pid`` added by ``write_progress``), so a
reader can show each phase's progress and its time left; a stopped run's adds ``message`` (where it stopped) and
``resume`` (what resuming does then: :class:`~glandseg_core.errors.TrainingStopped`).

Stopping: SIGTERM or SIGINT set :class:`StopFlag`. Inside an :meth:`StopFlag.armed` block (work whose result a
stop throws away: training steps, validation, tuning) the handler raises :class:`TrainingStopped` at once, so a
Stop never waits for the phase to end; outside (checkpoints and logs being written) it only records the stop, and
the next armed block raises. Nothing a stop interrupts is ever written half: ``last.pt`` stays the last finished
epoch's, and resuming repeats the interrupted epoch (or continues the tuning from the grid points saved in
``tuning_state.json``).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

from ..errors import TrainingStopped
from ..progress import Step
from .context import RunContext
from .runfiles import write_progress

PHASES = ("setup", "train", "validate", "tune")
# progress.json is rewritten at most this often inside a phase (and at its first/last item)
REPORT_EVERY_S = 1.0


class StopFlag:
    """A SIGTERM/SIGINT handler: records the stop, and raises :class:`TrainingStopped` inside :meth:`armed`."""

    def __init__(self) -> None:
        self.raised = False
        self._armed: tuple[str, str] | None = None  # (what, resume) to raise with, while armed

    def __call__(self, *_: object) -> None:
        self.raised = True
        if self._armed is not None:
            words, self._armed = self._armed, None
            raise TrainingStopped(*words)

    def check(self, what: str, resume: str = "") -> None:
        """Raise ``TrainingStopped(what, resume)`` when a stop was asked for."""
        if self.raised:
            raise TrainingStopped(what, resume)

    @contextlib.contextmanager
    def armed(self, what: str, resume: str = "") -> Iterator[None]:
        """A block that a stop interrupts at once (raising ``TrainingStopped(what, resume)``: where it stopped
        and what resuming does then); checks on entry."""
        self.check(what, resume)
        before, self._armed = self._armed, (what, resume)
        try:
            yield
        finally:
            self._armed = before

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside an armed block: a part that must not be cut (a file being written); a stop that arrives here
        raises right after it."""
        words, self._armed = self._armed, None
        try:
            yield
        finally:
            self._armed = words
        if words is not None:
            self.check(*words)


@contextlib.contextmanager
def stop_on_signals(rank: int = 0) -> Iterator[StopFlag]:
    """SIGTERM and SIGINT set the yielded flag instead of ending the process (rank 0, main thread)."""
    flag, old = StopFlag(), {}
    if rank == 0 and hasattr(signal, "SIGTERM"):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                old[sig] = signal.signal(sig, flag)
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class PhaseReport:
    """Writes ``progress.json`` for the phase in progress (rank 0), at most every ``REPORT_EVERY_S`` seconds.

    Args:
        ctx: the run (its folder, rank and progress callback). stop: the run's stop flag (a write is never cut).
    """

    def __init__(self, ctx: RunContext, stop: StopFlag) -> None:
        self.ctx, self.stop = ctx, stop
        self.phase, self.event, self.unit, self.total = "setup", "setup", "", 0
        self.started, self.last = time.time(), 0.0
        self.fields: dict[str, Any] = {}

    def begin(self, phase: str, total: int, unit: str, *, event: str = "", **fields: Any) -> None:
        """Start ``phase`` of ``total`` ``unit``; ``fields`` (epoch, epochs, steps, ...) are kept for every write."""
        self.phase, self.event, self.total, self.unit = phase, event or phase, total, unit
        self.started, self.last = time.time(), 0.0
        self.fields.update(fields)

    def due(self, done: int) -> bool:
        """Whether ``done`` should be written: the phase's first and last item, else every ``REPORT_EVERY_S``."""
        return done <= 1 or done >= self.total or time.time() - self.last >= REPORT_EVERY_S

    def advance(self, done: int, record: dict[str, Any] | None = None, **fields: Any) -> None:
        """``done`` items of the phase are finished: tell the run's progress callback (a :class:`Step` whose
        ``detail`` holds the event, the phase's fields and ``record``), and write ``progress.json`` when due."""
        self.fields.update(fields)
        if self.ctx.rank != 0:
            return
        detail = {"event": self.event, **self.fields, **(record or {})}
        self.ctx.tell(Step(self.phase, done, max(self.total, done), self.unit, detail))
        if not self.due(done):
            return
        self.last = time.time()
        out = {
            "event": self.event,
            "status": "running",
            **self.fields,
            "phase": self.phase,
            "unit": self.unit,
            "done": done,
            "total": self.total,
            "phase_started": self.started,
        }
        with self.stop.paused():
            write_progress(self.ctx.run_dir, **out)

    def progress(self, done: int, total: int) -> None:
        """A ``progress(done, total)`` callback for the phase in progress (validation)."""
        self.total = total
        self.advance(done)

    def step(self, step: Step) -> None:
        """A progress callable for a sub-task of the phase in progress (tuning: model outputs, then grid
        points): a new unit starts a new count."""
        if step.unit != self.unit:
            self.begin(self.phase, step.total, step.unit, event=self.event)
        self.total = step.total
        self.advance(step.done)
