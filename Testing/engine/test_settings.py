"""Settings by phase: a setting a verb never reads is refused by name; what a model fixes or
proposes is declared once, on its task, and applied the same way for every task."""

from dataclasses import fields

import pytest

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.method import demo_model_file, model_settings, training_settings
from oncoseg.modelfile import read_header
from oncoseg.settings import PREDICTION, TRAINING, EpochTraining, with_defaults
from oncoseg.tasks import all_tasks, get_task

TASKS = [t for t in all_tasks() if t.settings is not None]


def test_every_built_in_task_declares_its_settings_and_phases():
    assert {t.name for t in TASKS} >= {"rectal", "oar-ct", "oar-mr", "staging", "brain"}
    for task in TASKS:
        names = {f.name for f in fields(task.settings)}
        training, running = task.settings.only(TRAINING), task.settings.only(PREDICTION)
        assert training and training <= names, task.name
        assert not training & running, task.name
        assert set(task.fixed_settings) | set(task.proposed_settings) <= names, task.name
        # a model fixes or proposes only what a run reads
        assert not (set(task.fixed_settings) | set(task.proposed_settings)) & \
            training, task.name
        assert task.name == task.settings.TASK
        assert demo_model_file(task).is_file(), task.name


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_a_training_setting_is_refused_when_a_model_runs(task):
    key = sorted(task.settings.only(TRAINING))[0]
    metadata = read_header(demo_model_file(task)).metadata
    value = getattr(task.settings(), key)
    with pytest.raises(InputError, match=f"--set {key}: is a setting of the {task.name} task "
                       "for training"):
        model_settings(task, metadata, {key: value})
    assert task.settings.names(PREDICTION) and key not in task.settings.names(PREDICTION)


def test_a_run_setting_is_refused_in_training_and_the_rest_is_taken():
    with pytest.raises(InputError, match="--set keep: is a setting of the rectal task for "
                       "running a model"):
        training_settings("rectal", {"keep": "all"})
    assert training_settings("rectal", {"max_epochs": 3}).max_epochs == 3
    assert "keep" not in training_settings("rectal").names(TRAINING)


def test_fixed_and_proposed_settings_are_applied_from_the_model_file():
    staging = read_header(demo_model_file("staging")).metadata
    settings = model_settings("staging", staging)
    assert settings.threshold == staging.outputs["threshold"]  # proposed: taken ...
    assert model_settings("staging", staging, {"threshold": 0.9}).threshold == 0.9  # ... changed
    assert settings.size == staging.preprocessing["size"]  # fixed: taken ...
    with pytest.raises(InputError, match="--set size: is fixed by the model"):
        model_settings("staging", staging, {"size": staging.preprocessing["size"] + 2})
    # the fixed value as the settings read it: the command line's text, a model file's list
    assert model_settings("staging", staging, {"size": str(staging.preprocessing["size"]),
                                               "crop_mm": "80"}).crop_mm == 80.0
    oar_ct = read_header(demo_model_file("oar-ct")).metadata
    spacing = oar_ct.preprocessing["spacing_mm"]
    text = ",".join(f"{v:g}" for v in spacing)
    assert model_settings("oar-ct", oar_ct, {"spacing_mm": text}).spacing_mm == tuple(spacing)
    with pytest.raises(InputError, match="--set spacing_mm: is fixed by the model"):
        model_settings("oar-ct", oar_ct, {"spacing_mm": "1,1,1"})


@pytest.mark.parametrize(("verb", "key", "phase"), [
    ("predict", "max_epochs=3", "training; running a model does not read it"),
    ("evaluate", "learning_rate=0.1", "training; running a model does not read it"),
    ("train", "keep=all", "running a model (predict, evaluate); training does not read it"),
])
def test_the_command_line_refuses_a_setting_of_the_other_phase_before_reading(
        tmp_path, capsys, verb, key, phase):
    where = ["--input", "t2w=missing.nii.gz", "--input", "dwi_b0=missing.nii.gz",
             "--input", "dwi_b1000=missing.nii.gz"] if verb == "predict" else \
        ["--dataset", str(tmp_path / "missing")]
    output = tmp_path / "out"
    assert main([verb, "rectal", *where, "--output", str(output), "--set", key]) == 2
    name = key.partition("=")[0]
    assert f"--set {name}: is a setting of the rectal task for {phase}" in \
        capsys.readouterr().err
    assert not output.exists()


# The shared training settings at each task's own (its paper's) values, as each task declared
# them before they were declared once (oncoseg.settings.CommonTraining / EpochTraining).
SHARED = ("learning_rate", "batch_size", "max_epochs", "patience", "min_delta",
          "validation_fraction", "seed")
PAPER_VALUES = {
    "rectal": (0.001, 128, 200, 5, 1e-3, 0.2, 0),
    "oar-ct": (1e-4, 50, 50, 50, 1e-4, 0.2, 0),  # paper 003: batch 50, 50-epoch cycles
    "oar-mr": (1e-4, 32, 50, 5, 1e-4, 0.15, 0),
    "staging": (0.01, 8, 60, 10, 1e-3, 0.2, 0),
    "brain": (0.25, None, None, None, None, 0.2, 0),  # trains in iterations, no early stopping
}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_shared_training_settings_keep_each_tasks_values_and_phase(task):
    if task.name not in PAPER_VALUES:
        pytest.skip("not a built-in method")
    defaults = task.settings()
    for name, value in zip(SHARED, PAPER_VALUES[task.name], strict=True):
        if value is None:
            assert not hasattr(defaults, name), (task.name, name)
            continue
        assert getattr(defaults, name) == value and type(getattr(defaults, name)) is \
            type(value), (task.name, name)
        assert name in task.settings.only(TRAINING), (task.name, name)
    overridden = task.settings.from_overrides({"learning_rate": "0.5", "seed": 3}, TRAINING)
    assert (overridden.learning_rate, overridden.seed) == (0.5, 3)
    with pytest.raises(InputError, match=r"--set validation_fraction: is 1\.5: it must lie"):
        task.settings.from_overrides({"validation_fraction": 1.5})


def test_with_defaults_needs_every_value_the_base_leaves_open_and_no_other():
    loop = {"learning_rate": 0.1, "batch_size": 4, "max_epochs": 3, "patience": 2,
            "min_delta": 0.0}
    made = with_defaults(EpochTraining, **loop)
    assert made().as_dict() == {**loop, "validation_fraction": 0.2, "seed": 0}
    assert made.only(TRAINING) == set(loop) | {"validation_fraction", "seed"}
    with pytest.raises(TypeError, match="EpochTraining needs a value for max_epochs, "
                       "min_delta, patience"):
        with_defaults(EpochTraining, learning_rate=0.1, batch_size=4)
    with pytest.raises(TypeError, match="lerning_rate not among its settings"):
        with_defaults(EpochTraining, **loop, lerning_rate=0.1)


@pytest.mark.parametrize(("task", "setting", "message"), [
    ("brain", "iterations_2d=0", "whole number of at least 1"),
    ("brain", "iterations_per_epoch=-5", "whole number of at least 1"),
    ("oar-ct", "micro_batch=-1", "0 or more"),
    ("oar-ct", "hard_negative_rounds=-1", "0 or more"),
])
def test_budgets_and_counts_are_refused_by_name(task, setting, message):
    key = setting.split("=")[0]
    with pytest.raises(InputError, match=rf"--set {key}.*{message}"):
        training_settings(get_task(task), dict([setting.split("=")]))
