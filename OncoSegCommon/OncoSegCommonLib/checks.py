"""Checks the modules' scenarios share (pytest on slicer-core and the in-app tests)."""

from __future__ import annotations

from collections.abc import Callable

from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.context import MRMLContext


def cancelling_mid_run_changes_nothing(
        context: MRMLContext, run: Callable[[ProgressCallback, CancelToken], object],
        stage: str = "Segmenting") -> None:
    """``run(progress, cancel)`` is cancelled when it reports ``stage``; the scene's nodes
    (classes and names) must be exactly those before the run."""
    before = context.node_names()
    token = CancelToken()

    def cancel_at_stage(event):
        if event.stage == stage:
            token.cancel()

    try:
        run(cancel_at_stage, token)
    except Cancelled:
        pass
    else:
        raise AssertionError(f"the run was not cancelled at '{stage}'")
    after = context.node_names()
    assert after == before, f"the scene changed: {sorted(set(after) - set(before))}"
