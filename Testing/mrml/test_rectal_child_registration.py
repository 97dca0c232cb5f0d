"""The logics register in a child PythonSlicer inside the application (RectalSeg's is the one
that registers), and in their own process elsewhere (slicer-core here, the review app,
scripts); training children run PythonSlicer there too."""

import sys
import types

import pytest
from launchers import python_launcher

from oncoseg.method import RunContext
from OncoSegCommonLib.interpreter import slicer_python
from OncoSegCommonLib.tasklogic import RunRequest, StartedRun
from OncoSegCommonLib.training_process import python_executable
from RectalSegLib import scenarios
from RectalSegLib.logic import RectalSegLogic


def test_pythonslicer_is_asked_for_inside_the_application_only(monkeypatch, tmp_path):
    bin_folder = tmp_path / "Slicer-5.10.0-linux-amd64" / "bin"
    bin_folder.mkdir(parents=True)
    (bin_folder / "PythonSlicer").write_text("#!/bin/sh\n")
    (bin_folder / "PythonSlicer").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_folder))  # as Slicer's launcher sets it
    monkeypatch.setitem(sys.modules, "slicer", types.ModuleType("slicer"))  # slicer-core
    assert slicer_python() is None and python_executable() == sys.executable
    application = types.ModuleType("slicer")
    application.app = object()
    monkeypatch.setitem(sys.modules, "slicer", application)
    assert slicer_python() == python_executable() == str(bin_folder / "PythonSlicer")


def test_the_logic_hands_its_interpreter_to_the_engine(mrml, monkeypatch):
    seen = []
    monkeypatch.setattr("oncoseg.verbs.predict",
                        lambda task, images, model, overrides, context, hints:
                        seen.append(context))
    logic = RectalSegLogic(mrml)
    assert logic.child_python is None  # slicer-core: no application
    logic.child_python = "/opt/Slicer/bin/PythonSlicer"
    logic.compute(StartedRun({}, {}, RunRequest(device="cpu")))
    assert seen == [RunContext("cpu", None, None, "/opt/Slicer/bin/PythonSlicer")]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher script")
def test_a_run_registers_the_t2w_in_the_child(mrml, tmp_path):
    nodes, _ = scenarios.load_phantom(mrml, tmp_path / "case")
    logic = RectalSegLogic(mrml)
    logic.child_python = str(python_launcher(tmp_path / "bin"))
    events = []
    result = logic.run(nodes, RunRequest(device="cpu"), progress=events.append)
    done = result.prediction.details["registration"]["t2w"]
    assert done["method"] == "elastix preset 'rigid'"
    messages = [e.message for e in events if e.stage == "Registering t2w to dwi_b0"]
    assert "in a child process" in messages[0]
    assert any("level" in m for m in messages), "no progress from the child's elastix log"
    assert result.nodes.segmentation.GetSegmentation().GetNumberOfSegments() == 1
