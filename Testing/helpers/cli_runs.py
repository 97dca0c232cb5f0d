"""Command-line runs that several engine tests share: a task's phantom data set written once for
a test module, a tiny model trained on it, and a `predict` that must be refused.

The two fixture makers return module-scoped pytest fixtures; a test module names one by
assigning it (``cohort = phantom_fixture("oar-ct", 3, seed=77)``), as pytest registers a
module's fixtures by the name they stand under.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from oncoseg.cli import main


def phantom_fixture(task: str, cases: int, seed: int = 0, folder: str | None = None) -> Any:
    """A fixture: the folder of ``cases`` phantoms of ``task`` from ``seed``, written once per
    test module by `oncoseg phantom`; ``folder`` names it (default: the task's name)."""

    @pytest.fixture(scope="module")
    def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("phantoms") / (folder or task)
        assert main(["phantom", task, "--cases", str(cases), "--seed", str(seed), "--output",
                     str(root), "--progress", "none"]) == 0
        return root

    return phantom_data


def trained_fixture(task: str, data: str, *options: str) -> Any:
    """A fixture: the run folder of `oncoseg train` of ``task`` on the data set the fixture
    named ``data`` gives, with ``options`` (the settings that keep the model tiny), once per
    test module; the training must succeed."""

    @pytest.fixture(scope="module")
    def trained_run(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
        out = tmp_path_factory.mktemp(f"{task}_model") / "run"
        assert main(["train", task, "--dataset", str(request.getfixturevalue(data)),
                     "--output", str(out), *options]) == 0
        return out

    return trained_run


def assert_predict_refused(task: str, inputs: Mapping[str, Any], message: str, output: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """`oncoseg predict` of ``task`` on ``inputs`` (role -> path) exits with 2, says
    ``message`` on stderr and leaves no ``output`` folder behind."""
    args = ["predict", task, "--output", str(output), "--progress", "none"]
    for role, path in inputs.items():
        args += ["--input", f"{role}={path}"]
    assert main(args) == 2, message
    err = capsys.readouterr().err
    assert message in err, err
    assert not output.exists()


def run_process_tree(command: Sequence[str], timeout: float,
                     env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a command that starts children of its own (torchrun's workers):
    on timeout the whole process group is killed, so no worker outlives the test."""
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=None if env is None else dict(env),
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise AssertionError(f"timed out after {timeout} s: {' '.join(command)}\n"
                                 f"{err[-4000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
