"""A module's compute half in a background thread, polled from the panel's timer.

No Qt here: the thread is Python's, the panel polls ``last_event`` and ``done`` from a QTimer,
and the result or the error is handed back on the main thread, where nodes may be created.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken, ProgressEvent


class Worker:
    def __init__(self, compute: Callable[..., Any], *args: Any):
        """Runs ``compute(*args, progress=..., cancel=...)`` in a daemon thread at once."""
        self.cancel = CancelToken()
        self.last_event: ProgressEvent | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(compute, args), daemon=True)
        self.thread.start()

    def _run(self, compute: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = compute(*args, progress=self._progress, cancel=self.cancel)
        except Exception as error:  # reported by the panel; the scene was not touched
            self.error = error

    def _progress(self, event: ProgressEvent) -> None:
        self.last_event = event

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def status_text(self) -> str:
        """What the panel's status line says once the run is over."""
        if isinstance(self.error, Cancelled):
            return "Cancelled; nothing was added to the scene."
        if self.error is not None:
            return f"Failed: {self.error}"
        return "Done."
