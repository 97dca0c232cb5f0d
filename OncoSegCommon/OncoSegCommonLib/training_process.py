"""Training as a separate process, watched from the module panel.

Training runs for minutes to days, so it never runs inside Slicer's process: the panel starts
``python -m oncoseg train ... --progress json`` and reads its JSON lines (progress events, with
step and epoch losses for the live plot). A reader thread collects the lines, so polling from a
Qt timer never blocks; cancelling terminates the process, whose checkpoint lets ``--resume``
continue it later.

The child must import ``oncoseg`` the way this process did. Slicer puts the folders of modules
added as "Additional module paths" (a source checkout, as the README installs them) on
``sys.path`` only, never on ``PYTHONPATH``, so the child gets the folder holding ``oncoseg``
and the module folders prepended to ``PYTHONPATH`` (:func:`child_environment`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncoseg.childprocess import SLICER_ITK_VARIABLES, ChildProcess, engine_environment
from OncoSegCommonLib.interpreter import slicer_python


def python_executable() -> str:
    """The interpreter that has ``oncoseg``: Slicer's own Python inside the application."""
    return slicer_python() or sys.executable


def engine_folders() -> list[str]:
    """The folders a child Python needs on its path to import ``oncoseg`` (and the module
    libraries) from where this process imported it: the folder holding ``oncoseg`` and, in a
    source checkout, the module folders (as :mod:`oncoseg.frontends` finds them)."""
    from oncoseg.frontends import CHECKOUT, MODULE_FOLDERS

    folders = [CHECKOUT] + [CHECKOUT / name for name in MODULE_FOLDERS]
    return [str(folder) for folder in folders if folder.is_dir()]


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with :func:`engine_folders` prepended to its ``PYTHONPATH`` (entries it
    already has are not repeated; site-packages are left out) and Slicer's ITK plugin variables
    removed. Slicer's launcher prepends its own paths to the ``PYTHONPATH`` it is given and
    keeps these (commontk/AppLauncher, Base/ctkAppLauncher.cpp; Slicer v5.10.0
    Base/QTCore/qSlicerCoreApplication.cxx does the same for the application); it sets the ITK
    variables again, so ``python -m oncoseg`` drops them too (oncoseg/__main__.py)."""
    return engine_environment(SLICER_ITK_VARIABLES, base, engine_folders())


def training_command(task: str, dataset: str | os.PathLike[str], output: str | os.PathLike[str],
                     layout: str = "auto", device: str = "auto",
                     overrides: Mapping[str, Any] | None = None, resume: bool = False) -> list[str]:
    command = [python_executable(), "-m", "oncoseg", "train", task, "--dataset", str(dataset),
               "--layout", layout, "--output", str(output), "--device", device,
               "--progress", "json"]
    for key, value in (overrides or {}).items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    if resume:
        command.append("--resume")
    return command


@dataclass
class TrainingStatus:
    stage: str = ""
    fraction: float | None = None
    message: str = ""
    step_losses: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)  # epoch, train_loss, val_loss
    other_output: list[str] = field(default_factory=list)  # lines that were not progress


class TrainingProcess:
    def __init__(self, command: list[str], env: Mapping[str, str] | None = None):
        self.command = command
        self.status = TrainingStatus()
        # its own process group, so that cancel also ends PythonSlicer's real interpreter
        self._child = ChildProcess(command, child_environment({**os.environ, **(env or {})}))

    def poll(self) -> TrainingStatus:
        """Take in every line printed since the last call; never blocks."""
        for line in self._child.lines_so_far():
            self._take(line)
        return self.status

    def _take(self, line: str) -> None:
        try:
            event = json.loads(line)["progress"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if line.strip():
                self.status.other_output.append(line)
            return
        values = event.get("values") or {}
        self.status.stage = event.get("stage", "")
        total = event.get("total")
        self.status.fraction = event.get("done", 0) / total if total else None
        self.status.message = event.get("message", "")
        if "loss" in values:
            self.status.step_losses.append(float(values["loss"]))
        if "val_loss" in values:
            self.status.epochs.append({"epoch": event.get("done"), **values})

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._child.wait(timeout)
        self.poll()
        return code

    def cancel(self) -> None:
        self._child.end(grace=10)  # the launcher, the interpreter it started, theirs

    def model_path(self, output: str | os.PathLike[str]) -> Path | None:
        """The trained model, once the process has finished well."""
        path = Path(output) / "model.safetensors"
        return path if self.returncode == 0 and path.is_file() else None
