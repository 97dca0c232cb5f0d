"""Checks the modules' scenarios share (pytest on slicer-core and the in-app tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

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


def run_scenarios_in_app(scenarios: Sequence[Callable[[MRMLContext, Path], object]],
                         show: Callable[[str], object]) -> None:
    """Each scenario on the application's cleared scene with its own scratch folder;
    ``show`` is the test case's ``delayDisplay``. What every ``<Name>Test.runTest`` does."""
    import tempfile

    import slicer

    with tempfile.TemporaryDirectory() as folder:
        for scenario in scenarios:
            show(scenario.__name__)
            slicer.mrmlScene.Clear(0)
            scenario(MRMLContext.from_application(), Path(folder) / scenario.__name__)
