"""One method contract: every method implements it, and a method that implements it gets the
command line with no other edit (a toy method defined only in the tests, Testing/helpers/
toymethod.py, registered by one line)."""

import inspect
import json

import pytest
import SimpleITK as sitk
import toymethod

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.method import Method, method_of
from oncoseg.tasks import all_tasks, unregister_task

SHAPES = {  # the parameters of each verb, in order (oncoseg.method.Method)
    "phantom": ["output", "options", "context"],
    "predict": ["prepared", "images", "context", "hints"],
    "train": ["data", "output", "settings", "context", "options"],
    "evaluate": ["data", "prepared", "output", "context", "overwrite"],
}


@pytest.mark.parametrize("task", [t for t in all_tasks() if t.method_module.startswith(
    "oncoseg.")], ids=lambda t: t.name)
def test_every_built_in_method_has_the_contract_shape(task):
    module = method_of(task)
    assert isinstance(module, Method), task.name
    for verb, parameters in SHAPES.items():
        assert list(inspect.signature(getattr(module, verb)).parameters) == parameters, \
            (task.name, verb)


@pytest.fixture
def toy():
    task = toymethod.register()
    yield task
    unregister_task(task.name)


def test_a_toy_method_gets_phantom_train_predict_evaluate_on_the_command_line(toy, tmp_path,
                                                                             capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["phantom", "toy-spot", "--output", str(data), "--cases", "3"]) == 0
    assert main(["train", "toy-spot", "--dataset", str(data), "--output", str(run),
                 "--progress", "none", "--set", "offsets=9"]) == 0
    model = run / "model.safetensors"
    assert model.is_file()
    out = tmp_path / "out"
    assert main(["predict", "toy-spot", "--input", f"image={data / 'toy_000' / 'image.nii.gz'}",
                 "--model", str(model), "--output", str(out), "--progress", "none"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "toy-spot" and "load_model" in result["timings_s"]
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert sitk.GetArrayFromImage(labels).any()
    assert main(["evaluate", "toy-spot", "--dataset", str(data), "--model", str(model),
                 "--output", str(tmp_path / "evaluation"), "--progress", "none"]) == 0
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    assert summary["metrics"]["dsc"]["mean"] > 0.8
    # settings and hints are checked for it as for every task
    capsys.readouterr()
    assert main(["predict", "toy-spot", "--input", f"image={data / 'toy_000' / 'image.nii.gz'}",
                 "--model", str(model), "--output", str(tmp_path / "o2"),
                 "--seed-point", "0,0,0"]) == 2
    assert "--seed-point: is not used by task 'toy-spot'" in capsys.readouterr().err


def test_the_generic_verbs_read_the_model_once_for_an_evaluation(toy, tmp_path, monkeypatch):
    data = tmp_path / "data"
    verbs.phantom("toy-spot", data, cases=2)
    model = verbs.train("toy-spot", data, tmp_path / "run")
    calls = []
    real = verbs.prepare
    monkeypatch.setattr(verbs, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    verbs.evaluate("toy-spot", data, tmp_path / "evaluation", model)
    assert len(calls) == 1


@pytest.mark.parametrize(("task", "images", "message"), [
    ("brain", {"t1": None, "t2": None}, "inputs: none given: the brain task needs at least one"),
    ("oar-ct", {"mr": object()}, "mr: is not an input of the oar-ct task"),
    ("rectal", {"t2w": object(), "dwi_b0": object()}, "dwi_b1000: is missing"),
])
def test_the_inputs_are_checked_before_the_model_is_read(task, images, message):
    from oncoseg.errors import InputError

    with pytest.raises(InputError, match=message):
        verbs.predict(task, images, "no-such-model.safetensors")
