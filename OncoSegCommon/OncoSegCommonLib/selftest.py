"""The modules' self-tests skip, saying what is missing, where the engine cannot run.

An extension's build tree runs each module's Test class (``ctest -R RectalSeg``) in a Slicer
that usually has neither PyTorch (the PyTorch extension installs it on the user's computer)
nor the packages of ``Resources/requirements.txt``: the scenarios would fail on an import
and say nothing useful. ``slicer.testing.runUnitTest`` runs the Test class with unittest's
text runner and fails only when the result is unsuccessful, so a skip is reported as such and
the test passes (Slicer Base/Python/slicer/testing.py, v5.8.0 to v5.12.3).

Standard library only (through :mod:`OncoSegCommonLib.dependencies`), so it runs before
anything it checks is importable.
"""

from __future__ import annotations

import unittest

from OncoSegCommonLib import dependencies


def engine_missing() -> str | None:
    """What the engine lacks in this Python, in words; None when it can run."""
    status = dependencies.check()
    return None if status.ready else status.summary()


def skip_unless_engine_ready(test: unittest.TestCase) -> None:
    """The first call of a module Test's ``runTest``, before anything imports the engine's
    dependencies: ``test.skipTest`` with what is missing, or nothing when the engine can run.

    From the module panel's Test button (which calls ``runTest`` directly, not through
    unittest), the skip shows as the error dialog's message: the same words."""
    missing = engine_missing()
    if missing is not None:
        test.skipTest(f"OncoSeg self-test skipped, the engine cannot run here: {missing}")
