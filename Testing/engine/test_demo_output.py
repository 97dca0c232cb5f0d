"""What a new user sees (issue 24, point 2): the demo keeps its study beside the results and
says what it did; progress reaches a pipe as plain lines; the evaluate summary shows the model's
configuration, not the task's defaults."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from oncoseg.cli import main
from oncoseg.modelfile import read_header
from oncoseg.progress import LineProgress, ProgressEvent, TqdmProgress


def test_the_demo_keeps_its_study_and_says_where_everything_is(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "oncoseg", "demo", "--output", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((out / "result.json").read_text())
    # every file result.json names exists, the inputs included (they were deleted before)
    for role, name in document["inputs"].items():
        assert (out / name).is_file(), role
        assert name.startswith("input/")
    for name in ("input/label.nii.gz", *document["files"].values()):
        if isinstance(name, str):
            assert (out / name).is_file(), name
    # the T2w opens on its own grid, as the phantom wrote it (not the registered copy)
    assert sitk.ReadImage(str(out / "input/t2w.nii.gz")).GetDimension() == 3
    # a pipe gets one plain line per stage on stderr, no carriage-return bars
    assert "\r" not in result.stderr
    stages = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert any("Registering" in line for line in stages) and len(stages) >= 3
    # the summary: what, volume, candidates, time, files, how to open it
    text = result.stdout
    volume = document["segments"][0]["volume_ml"]
    assert f"Volume: {volume:.2f} mL" in text
    assert f"Candidates: {len(document['details']['candidates'])} " in text
    assert "Time: " in text and "Demo results written to" in text
    for name in ("input/", "t2w.nii.gz", "segmentation.seg.nrrd", "overview.png",
                 "probabilities/Rectal_tumour.nii.gz", "result.json"):
        assert name in text, name
    [slicer] = [line for line in text.splitlines() if "Slicer --python-code" in line]
    assert str((out / "input/t2w.nii.gz").resolve()) in slicer
    assert "slicer.util.loadSegmentation" in slicer


def test_the_default_demo_folder_is_git_ignored():
    root = Path(__file__).resolve().parents[2]
    patterns = (root / ".gitignore").read_text().split()
    assert "/oncoseg-demo/" in patterns


def test_line_progress_writes_one_line_per_stage():
    stream = io.StringIO()  # not a terminal
    shown = TqdmProgress(stream)
    for event in (ProgressEvent("Registering", 0, 2), ProgressEvent("Registering", 1, 2),
                  ProgressEvent("Segmenting", 3, 20, "slice 3 of 20"),
                  ProgressEvent("Segmenting", 20, 20)):
        shown(event)
    shown.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("] Registering (of 2)")
    assert lines[1].endswith("] Segmenting 3/20: slice 3 of 20")
    stream = io.StringIO()
    shown = TqdmProgress(stream)
    for event in (ProgressEvent("Epoch 1", 1, 4, values={"loss": 0.5}),
                  ProgressEvent("Training", 1, 200, values={"val_loss": 0.25}),
                  ProgressEvent("Epoch 2", 1, 4)):
        shown(event)
    assert [line.split("] ")[1] for line in stream.getvalue().splitlines()] == [
        "Epoch 1 1/4 loss=0.5", "Training 1/200 val_loss=0.25", "Epoch 2 1/4"]
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()  # a terminal keeps its tqdm bars, redrawn in place
    shown = TqdmProgress(stream)
    shown(ProgressEvent("Registering", 1, 2))
    shown.close()
    assert "\r" in stream.getvalue() and "1/2" in stream.getvalue()
    assert not stream.getvalue().startswith("[")
    stream = io.StringIO()
    LineProgress(stream)(ProgressEvent("Writing", 0, None))
    assert stream.getvalue().endswith("] Writing\n")


def test_the_evaluate_summary_shows_the_model_configuration(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["phantom", "rectal", "--output", str(data), "--cases", "1", "--seed", "77",
                 "--progress", "none"]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["evaluate", "rectal", "--dataset", str(data), "--output", str(out),
                 "--progress", "none", "--set", "threshold=0.6"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "summary.json").read_text())
    stored = read_header(printed["model"]).metadata.provenance["rectal_config"]
    config = printed["config"]
    # the training settings are the model's (the demo: learning rate 1.0, 2000 samples per
    # class; the task's defaults are 0.001 and 5000) ...
    assert stored["learning_rate"] != 0.001 and stored["samples_per_class"] != 5000
    for key in ("learning_rate", "samples_per_class", "max_epochs", "seed"):
        assert config[key] == stored[key], key
    # ... the run's settings those of this run, the user's --set included
    assert config["threshold"] == 0.6 and config["registration"] == stored["registration"]
    # and what the model file does not record is said, not passed off as the model's
    # (the rectal demo trained on 2026-12-07 records every training setting: none is listed
    # then). Like the registration, in_plane_mm is the run's: fixed by a model file that
    # records it, else read from its training geometry (the demo predates the setting)
    assert set(printed.get("config_not_in_model", ())) == {
        k for k in config if k not in stored} - {"threshold", "keep", "connectivity",
                                                 "registration", "in_plane_mm"}


@pytest.mark.parametrize("task", ["rectal", "oar-ct", "oar-mr", "staging", "brain"])
def test_a_runs_settings_hold_the_training_values_its_model_file_records(task):
    """What result.json's details.config and the evaluate summary print: each demo's recorded
    training settings, not the task's defaults; the rest named as not recorded."""
    from oncoseg.method import demo_model_file, model_settings, recorded_training_settings
    from oncoseg.tasks import get_task

    metadata = read_header(demo_model_file(task)).metadata
    recorded, missing = recorded_training_settings(task, metadata)
    assert recorded, "every demo records the configuration it was trained with"
    settings = model_settings(task, metadata).as_dict()
    for key, value in recorded.items():
        assert settings[key] == (tuple(value) if isinstance(settings[key], tuple) else value), key
    assert not set(missing) & set(recorded)
    assert set(recorded) | set(missing) == get_task(task).settings.only("training")
