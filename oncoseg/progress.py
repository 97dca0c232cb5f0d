"""Progress reporting and cancellation for long operations.

Every long operation takes ``progress`` (a callable receiving :class:`ProgressEvent`) and
``cancel`` (a :class:`CancelToken`), both optional. Front ends decide how to show them: the CLI
with tqdm bars (:class:`TqdmProgress`), the Slicer panel with a progress bar and a Cancel button,
a training subprocess as JSON lines (:class:`JsonLinesProgress`). The operation itself only calls
:func:`report` and ``cancel.raise_if_cancelled()`` between units of work.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any

from oncoseg.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage``; ``total`` is None when unknown."""

    stage: str
    done: float
    total: float | None = None
    message: str = ""
    values: dict[str, float] | None = None  # e.g. a training step's loss

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """Thread-safe cancellation flag, set from a GUI thread and polled by a worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def report(
    progress: ProgressCallback | None,
    stage: str,
    done: float,
    total: float | None = None,
    message: str = "",
    **values: float,
) -> None:
    """Send one event if anyone listens; operations call this instead of testing for None."""
    if progress is not None:
        progress(ProgressEvent(stage, done, total, message, values or None))


def check_cancelled(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` if the token was set; a None token never cancels."""
    if cancel is not None:
        cancel.raise_if_cancelled()


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the ``with`` block to ``timings[stage]``.

    Every method reports how long its stages took (``Prediction.timings``, written to
    result.json as ``timings_s``); one clock here keeps those numbers measured the same way
    everywhere. Seconds are added, not assigned, so a stage timed in several blocks sums them.
    A block that raises (an error, a cancellation) records nothing: a stage that did not finish
    has no duration to report.
    """
    started = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - started)


class TqdmProgress:
    """Shows each stage as its own tqdm bar on stderr, closing a bar when its stage changes.

    ``disable=None`` (the default) draws bars on a terminal only; anywhere else (a pipe, a
    log file, a SLURM log) each stage is one plain line as it begins (:class:`LineProgress`),
    since tqdm itself draws nothing there and a redrawn bar is unreadable in a file.
    ``disable=False`` draws bars wherever the stream goes, ``True`` shows nothing.
    """

    def __init__(self, file: IO[str] | None = None, disable: bool | None = None):
        self._file = file if file is not None else sys.stderr
        self._disable = disable
        self._bar: Any = None
        self._stage: str | None = None
        self._lines = LineProgress(self._file) if disable is None and not _is_terminal(
            self._file) else None

    def __call__(self, event: ProgressEvent) -> None:
        if self._lines is not None:
            self._lines(event)
            return
        from tqdm import tqdm

        if event.stage != self._stage:
            self.close()
            self._stage = event.stage
            self._bar = tqdm(
                total=event.total, desc=event.stage, file=self._file, disable=self._disable,
                leave=True, dynamic_ncols=True,
            )
        bar = self._bar
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        if event.values:
            bar.set_postfix({k: f"{v:.4g}" for k, v in event.values.items()}, refresh=False)
        if event.message:
            bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """One plain line per stage, written (and flushed) when the stage begins.

    For a pipe or a log: ``[  3.2 s] Registering (of 4)``, the seconds since the first event,
    so that a log shows where the time went without a line per unit of work. A stage that
    begins part-way (a training's "Training" stage after each epoch's own) says how far, with
    its values: ``[ 20.1 s] Training 3/200 train_loss=0.41 val_loss=0.38``.
    """

    def __init__(self, file: IO[str] | None = None):
        self._file = file if file is not None else sys.stderr
        self._stage: str | None = None
        self._started: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == self._stage:
            return
        now = time.perf_counter()
        if self._started is None:
            self._started = now
        self._stage = event.stage
        if event.total and event.done:
            size = f" {event.done:g}/{event.total:g}"
        else:
            size = f" (of {event.total:g})" if event.total and event.total > 1 else ""
        values = "".join(f" {k}={v:.4g}" for k, v in (event.values or {}).items())
        message = f": {event.message}" if event.message else ""
        self._file.write(f"[{now - self._started:6.1f} s] {event.stage}{size}{values}{message}\n")
        self._file.flush()


class JsonLinesProgress:
    """One JSON object per event and line, for a parent process (the Slicer training panel)."""

    def __init__(self, file: IO[str] | None = None):
        self._file = file if file is not None else sys.stdout

    def __call__(self, event: ProgressEvent) -> None:
        record = {k: v for k, v in asdict(event).items() if v not in (None, "")}
        self._file.write(json.dumps({"progress": record}) + "\n")
        self._file.flush()
