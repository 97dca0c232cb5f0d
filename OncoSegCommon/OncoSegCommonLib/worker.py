"""A module's compute half in a background thread, lent the interpreter by the panel's timer.

No Qt here: the thread is Python's, the panel's QTimer calls :meth:`Worker.lend` and then reads
``last_event`` and ``done``, and the result or the error is handed back on the main thread,
where nodes may be created.

Why lending: Slicer's main thread holds the GIL whenever it is not running Python (nothing in
Slicer or CTK calls ``PyEval_SaveThread``), so a Python thread advances only while the main
thread runs Python and lets go of the GIL. A tick that only reads the progress gives the worker
a few milliseconds per period; :meth:`Worker.lend` blocks the main thread on an event for most
of the tick instead (blocking releases the GIL), so the worker runs at nearly full speed, and
returns as soon as the run is over. Between ticks Qt keeps the GIL to redraw.

``Testing/benchmarks/bench_slicer_main_loop.py`` reproduces that main loop headless (the GIL
held between timer callbacks) and chose the figures below: with a 20 ms timer and 35 ms loans
the rectal demo prediction ran at 94-98 % of its headless speed with a repaint at least every
45 ms (2 or 5 ms repaints); a 100 ms timer without loans ran it at 13 %. A timer slower than
the loans wastes the difference: with 50 ms it ran at 76-85 %, repaints 74-82 ms apart.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken, ProgressEvent

TICK_MS = 20  # the panel timer's period: shorter than a loan, so a tick follows each redraw
LEND_SECONDS = 0.035  # the GIL back to the main thread (a redraw) about this often
LATE_TICKS = 10  # how many ticks' delays in taking the GIL back shorten the next wait


class Worker:
    def __init__(self, compute: Callable[..., Any], *args: Any):
        """Runs ``compute(*args, progress=..., cancel=...)`` in a daemon thread at once."""
        self.cancel = CancelToken()
        self.last_event: ProgressEvent | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._finished = threading.Event()
        self._late: deque[float] = deque(maxlen=LATE_TICKS)  # last ticks: GIL back after wait
        self._back = time.perf_counter()  # when the main thread last had the GIL back
        self.thread = threading.Thread(target=self._run, args=(compute, args), daemon=True)
        self.thread.start()

    def _run(self, compute: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = compute(*args, progress=self._progress, cancel=self.cancel)
        except Exception as error:  # reported by the panel; the scene was not touched
            self.error = error
        finally:
            self._finished.set()  # last: result and error are in place once it is seen

    def _progress(self, event: ProgressEvent) -> None:
        self.last_event = event

    @property
    def done(self) -> bool:
        """The run is over (``result`` or ``error`` is set)."""
        return self._finished.is_set()

    def lend(self, seconds: float = LEND_SECONDS) -> bool:
        """Main thread: let the worker thread run (the wait releases the GIL) until about
        ``seconds`` after the main thread last had the GIL back from it (the previous loan's
        end, or the worker's start), and for at least half of ``seconds``; returns ``done``
        at once when the run ends meanwhile. Call it once per timer tick, before reading
        ``last_event`` and ``done``, from a timer whose period is shorter than ``seconds``:
        the main thread then gets the GIL back, and Qt may redraw, about every ``seconds``,
        whatever the redraw and the tick's own Python cost (they come out of the loan).

        Taking the GIL back after the wait takes time too: up to the interpreter's switch
        interval (5 ms) while the worker runs Python, longer while it is in a C call that keeps
        the GIL or when the machine is busy. The wait is shortened by the worst of the last
        few such delays; the worker keeps running during them."""
        called = time.perf_counter()
        wait = self._back + seconds - called - max(self._late, default=0.0)
        wait = max(seconds / 2, wait)
        if self._finished.wait(wait):
            return True
        self._back = time.perf_counter()
        self._late.append(self._back - called - wait)
        return False

    def status_text(self) -> str:
        """What the panel's status line says once the run is over."""
        if isinstance(self.error, Cancelled):
            return "Cancelled; nothing was added to the scene."
        if self.error is not None:
            return f"Failed: {self.error}"
        return "Done."
