"""``torch.fx`` tracing that leaves other threads' networks alone.

While ``torch.fx.Tracer.trace`` runs, it replaces ``torch.nn.Module.__call__`` and
``__getattr__`` for the whole process. A forward pass in another thread then goes through the
tracer: each submodule call asks where that module sits in the traced network and raises
``NameError: module is not installed as a submodule``. In Slicer every module panel runs its
prediction in a worker thread of the same process, so one panel preparing a network (the
preparation traces it) broke another panel's prediction: measured with a small network run in
a loop in a second thread while the staging network was prepared five times, 32,678 of its
33,873 calls failed. :class:`ThreadConfinedTracer` traces only in the thread that called
``trace``: there every call is traced as before, and elsewhere modules run as they would
without a trace (``Testing/engine/test_graph_tracing.py``).

Tracing also silences the warnings it provokes, with ``warnings.catch_warnings``, which saves
and restores the process's warning filters: two threads doing so at once can restore each
other's state, leaving every warning silenced for the rest of the session. OncoSeg's own
uses take :func:`warnings_caught`, one thread at a time.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import torch.fx
from torch import nn


class ThreadConfinedTracer(torch.fx.Tracer):
    """A ``torch.fx.Tracer`` whose process-wide patches act only in the tracing thread.

    ``autowrap_modules`` is empty: ``torch.fx`` would otherwise also patch, in the globals of
    every module called meanwhile, from any thread, the ``math`` functions it finds there."""

    def __init__(self) -> None:
        super().__init__(autowrap_modules=())
        self._tracing_thread: int | None = None

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> torch.fx.Graph:
        self._tracing_thread = threading.get_ident()
        try:
            return super().trace(root, concrete_args)
        finally:
            self._tracing_thread = None

    def _elsewhere(self) -> bool:
        return threading.get_ident() != self._tracing_thread

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if self._elsewhere():
            return forward(*args, **kwargs)  # the module's own __call__, hooks included
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if self._elsewhere():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


_WARNING_FILTERS = threading.RLock()


@contextlib.contextmanager
def warnings_caught(record: bool = False) -> Iterator[list[warnings.WarningMessage] | None]:
    """``warnings.catch_warnings(record=record)``, never in two of OncoSeg's threads at once."""
    with _WARNING_FILTERS, warnings.catch_warnings(record=record) as caught:
        yield caught


def quietly_traced(module: nn.Module, tracer: torch.fx.Tracer | None = None) -> torch.fx.Graph:
    """``module``'s graph as ``tracer`` (a :class:`ThreadConfinedTracer` by default: what
    ``torch.fx.symbolic_trace(module).graph`` records) traces it, without its warnings."""
    with warnings_caught():
        warnings.simplefilter("ignore")
        return (tracer or ThreadConfinedTracer()).trace(module)
