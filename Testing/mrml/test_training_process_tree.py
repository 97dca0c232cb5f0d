"""Stopping a training from the panel ends PythonSlicer's real interpreter too, not only the
launcher (helpers/launchers.py stands in for PythonSlicer)."""

import sys
import time

import pytest
from launchers import descendants, python_launcher, running

from OncoSegCommonLib.training_process import TrainingProcess

TRAINING = "import time\nprint('training', flush=True)\ntime.sleep(120)\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher script")
def test_stopping_a_training_ends_the_launcher_and_its_interpreter(tmp_path):
    process = TrainingProcess([str(python_launcher(tmp_path)), "-c", TRAINING])
    deadline = time.monotonic() + 60
    while "training" not in process.poll().other_output and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants()
    assert len(tree) >= 2, "the launcher's interpreter did not start"
    process.cancel()  # the old cancel terminated the launcher only
    assert running(tree) == []
    assert process.returncode not in (None, 0)
