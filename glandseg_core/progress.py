"""One progress type for every long piece of work: segmenting, evaluating, training, tuning, slides.

Work that takes a while accepts ``progress: ProgressFn | None`` and calls it with a :class:`Step` after each
unit of work (a forward pass, an image, an optimizer step, a slide window). The CLI draws a bar from it
(:class:`TextBar`), the dashboard writes it to a job's ``progress.json``; both see the same counts because
both are told by the same call. StarDist's ``show_tile_progress`` and tqdm's ``update`` are the models.

``total`` is known before the first unit (a segmenter's :meth:`~glandseg_core.segmenters.base.Segmenter.plan`
gives it), so a reader can always show ``done / total`` and a time left.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TextIO, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Step:
    """``done`` of ``total`` ``unit`` of the ``phase`` are finished.

    Attributes:
        phase: what is being done: ``segment``, ``evaluate``, ``train``, ``validate``, ``tune``, ``slide``, ...
        done: units finished so far (0 announces the plan before the first unit).
        total: units the phase will take (>= done).
        unit: what one unit is: ``passes`` (network forward passes), ``images``, ``steps``, ``windows``, ...
        detail: optional extra facts for a reader (e.g. ``{"windows": 4, "views": 8}``).
    """

    phase: str
    done: int
    total: int
    unit: str
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the phase done, in [0, 1] (1 for an empty phase)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressFn = Callable[[Step], None]


def report(progress: ProgressFn | None, step: Step) -> None:
    """Call ``progress(step)`` when a progress callable was given."""
    if progress is not None:
        progress(step)


class Counter:
    """Counts units of one phase and reports each to ``progress``: ``tick()`` after each unit.

    Args:
        progress: where to report (None: count only).
        phase, unit: as in :class:`Step`. total: units planned. detail: passed on with every step.
    """

    def __init__(
        self,
        progress: ProgressFn | None,
        phase: str,
        total: int,
        unit: str,
        detail: dict[str, object] | None = None,
    ) -> None:
        self.progress, self.phase, self.total, self.unit = progress, phase, total, unit
        self.detail = dict(detail or {})
        self.done = 0

    def start(self) -> None:
        """Announce the plan (``done`` = 0)."""
        report(self.progress, Step(self.phase, 0, self.total, self.unit, self.detail))

    def tick(self, n: int = 1) -> None:
        """``n`` more units are done."""
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        total = max(self.total, self.done)
        report(self.progress, Step(self.phase, self.done, total, self.unit, self.detail))

    def counted(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        """``fn`` that ticks once after each call (e.g. a network's forward pass)."""

        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            out = fn(*args, **kwargs)
            self.tick()
            return out

        return call


def shifted(progress: ProgressFn | None, before: int, total: int) -> ProgressFn | None:
    """A progress callable for one part of a larger job: a part's step ``done`` is reported as
    ``before + done`` of ``total`` (e.g. the second of two networks run one after the other)."""
    if progress is None:
        return None

    def call(step: Step) -> None:
        progress(Step(step.phase, before + step.done, total, step.unit, step.detail))

    return call


def time_left(started: float, last: float | None, done: int, total: int, now: float) -> float | None:
    """Seconds left of a phase of ``total`` similar units, from the units finished so far: ``done`` of them,
    the first begun at ``started`` and the latest finished at ``last`` (wall or monotonic seconds; ``now``
    on the same clock). None before the first unit has finished (nothing to estimate from).

    The finished units took ``(last - started) / done`` each on average; the unit under way is expected to
    take as long, so the time it has run (``now - last``) counts down its share. A unit that runs over its
    expected time holds the estimate at what the units after it will take, instead of raising it as
    "elapsed / done" does while one unit is slow (the Mask R-CNN's TTA estimate rose from 42 s to about
    2 min while one view ran, issue #22). The estimate changes only when a unit finishes (a new rate) or as
    time passes (counting down).
    """
    if done >= total:
        return 0.0
    if done <= 0 or last is None:
        return None
    per_unit = max(0.0, last - started) / done
    running = max(0.0, now - last)
    return per_unit * (total - done - 1) + max(0.0, per_unit - running)


class TextBar:
    """A progress callable that draws one tqdm bar per phase on ``stream`` (the CLI's bar)."""

    def __init__(self, stream: TextIO | None = None, disable: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.disable = disable
        self._bar: tqdm | None = None
        self._phase: str | None = None

    def __call__(self, step: Step) -> None:
        from tqdm import tqdm

        if self.disable:
            return
        if self._bar is None or step.phase != self._phase or step.total != self._bar.total:
            self.close()
            self._phase = step.phase
            self._bar = tqdm(
                total=step.total, desc=step.phase, unit=f" {step.unit}", file=self.stream, leave=False
            )
        self._bar.n = step.done
        self._bar.refresh()
        if step.done >= step.total:
            self.close()

    def close(self) -> None:
        """Close the current bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
