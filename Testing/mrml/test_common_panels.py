"""Shared panel logic without a scene: the model list and training as a watched process."""

import shutil

import pytest

from oncoseg.errors import InputError
from oncoseg.method import demo_model_file
from oncoseg.verbs import phantom
from OncoSegCommonLib.models import available_models, model_choice, models_folder
from OncoSegCommonLib.training_process import TrainingProcess, training_command

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
