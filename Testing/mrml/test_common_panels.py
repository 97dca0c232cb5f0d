"""Shared panel logic without a scene: the model list and training as a watched process."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from oncoseg.errors import InputError
from oncoseg.frontends import CHECKOUT, MODULE_FOLDERS
from oncoseg.method import demo_model_file
from oncoseg.verbs import phantom
from OncoSegCommonLib.models import available_models, model_choice, models_folder
from OncoSegCommonLib.training_process import (
    TrainingProcess,
    child_environment,
    engine_folders,
    training_command,
)

DEMO_MODEL = demo_model_file("rectal")


@pytest.fixture
def oncoseg_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_model_list_has_bundled_then_trained_models(oncoseg_home, tmp_path):
    assert available_models("rectal", {"Demo": DEMO_MODEL})[0].label == "Demo"
    trained = models_folder("rectal") / "my-run" / "model.safetensors"
    trained.parent.mkdir(parents=True)
    shutil.copy(DEMO_MODEL, trained)
    broken = models_folder("rectal") / "broken" / "model.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(b"\x80\x04 not a model")
    choices = available_models("rectal", {"Demo": DEMO_MODEL})
    assert [c.label for c in choices] == ["Demo", "my-run"]
    assert "not for clinical use" in choices[0].summary()
    assert "licence: Apache-2.0; training data: synthetic phantoms" in choices[0].summary()
    with pytest.raises(InputError, match="is a model for task 'rectal', not 'oar-ct'"):
        model_choice(DEMO_MODEL, "oar-ct")


def test_training_process_reports_losses_and_writes_a_model(tmp_path):
    data = tmp_path / "data"
    phantom("rectal", data, cases=2, seed=31)
    out = tmp_path / "run"
    command = training_command("rectal", data, out, device="cpu", overrides={
        "registration": "none", "samples_per_class": 24, "max_epochs": 2,
        "learning_rate": 1.0})
    process = TrainingProcess(command)
    assert process.wait(timeout=300) == 0, process.status.other_output
    status = process.poll()
    assert [e["epoch"] for e in status.epochs] == [1, 2]
    assert status.step_losses and all(loss > 0 for loss in status.step_losses)
    assert process.model_path(out) == out / "model.safetensors"


def test_stopping_a_training_leaves_no_model(tmp_path):
    data = tmp_path / "data"
    phantom("rectal", data, cases=2, seed=32)
    out = tmp_path / "run"
    process = TrainingProcess(training_command("rectal", data, out, overrides={
        "registration": "none", "max_epochs": 500}))
    process.cancel()
    assert process.returncode not in (None, 0)
    assert process.model_path(out) is None


def test_the_child_gets_the_engine_folders_before_an_existing_pythonpath():
    folders = engine_folders()
    assert folders[0] == str(CHECKOUT)  # the folder holding oncoseg
    assert str(CHECKOUT / "OncoSegCommon") in folders
    env = child_environment({"PYTHONPATH": os.pathsep.join(["/elsewhere", folders[1]]),
                             "OTHER": "kept"})
    assert env["PYTHONPATH"].split(os.pathsep) == [folders[0], *folders[2:], "/elsewhere",
                                                   folders[1]]
    assert env["OTHER"] == "kept"
    assert child_environment({})["PYTHONPATH"].split(os.pathsep) == folders


def python_without_oncoseg(folder: Path) -> Path:
    """An interpreter like Slicer's: this one's packages (torch, numpy, ...) in its site
    packages, oncoseg not installed. A venv without pip or system site packages, plus a .pth
    naming this venv's site-packages as a plain path line: site adds the folder but does not
    run the .pth files inside it, so the editable install's finder stays out."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "this-venv-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


# The panel's process as Slicer runs it from "Additional module paths": the module folders on
# sys.path only, no PYTHONPATH, another working folder. It first shows the bare child failing
# (the defect), then starts the training child as the panel does.
PARENT = """
import json, os, subprocess, sys
sys.path[:0] = {module_folders!r}
assert "PYTHONPATH" not in os.environ and os.getcwd() == {cwd!r}
bare = subprocess.run([sys.executable, "-c", "import oncoseg"], capture_output=True, text=True)
from OncoSegCommonLib.training_process import TrainingProcess, training_command
import oncoseg
process = TrainingProcess(training_command("rectal", {data!r}, {out!r}, device="cpu",
    overrides={{"registration": "none", "samples_per_class": 16, "max_epochs": 1}}))
code = process.wait(timeout=240)
print(json.dumps({{"bare": bare.stderr, "engine": oncoseg.__file__, "code": code,
                  "epochs": len(process.status.epochs), "output": process.status.other_output,
                  "model": str(process.model_path({out!r}))}}))
"""


def test_training_child_imports_the_engine_from_module_paths(tmp_path):
    """Issue 19: the training child could not import oncoseg when the modules were added as
    Additional module paths. A copy of the checkout's engine and module folders, a Python
    that does not have oncoseg installed, a panel process as Slicer makes it: the child
    trains and writes its model."""
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("oncoseg", *MODULE_FOLDERS):
        shutil.copytree(CHECKOUT / name, checkout / name, ignore=ignore)
    python = python_without_oncoseg(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data, out = tmp_path / "data", tmp_path / "run"
    phantom("rectal", data, cases=2, seed=33)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = PARENT.format(module_folders=[str(checkout / n) for n in MODULE_FOLDERS],
                           cwd=str(elsewhere), data=str(data), out=str(out))
    result = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert "No module named 'oncoseg'" in report["bare"]  # the layout has the defect's cause
    assert report["engine"] == str(checkout / "oncoseg" / "__init__.py")
    assert report["code"] == 0, report["output"]
    assert report["epochs"] == 1
    assert report["model"] == str(out / "model.safetensors")
