"""The verbs every front end calls, the same for every task: ``phantom``, ``prepare``,
``predict``, ``train``, ``evaluate``.

They turn the method contract (:mod:`oncoseg.method`) into calls by task name: look the task up,
check what it was given, read the data set or the model once, apply the settings by phase, time
the model's loading, then hand over to the task's method module. The CLI, the Slicer module
logics and the review app use these and nothing task-specific, so a new method gets all three by
registering its task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncoseg import quality
from oncoseg.errors import InputError
from oncoseg.method import (
    Hints,
    PhantomOptions,
    Prepared,
    RunContext,
    TrainOptions,
    method_of,
    prepare,
    training_settings,
)
from oncoseg.modelfile import LoadedModel
from oncoseg.tasks import Task, get_task

if TYPE_CHECKING:
    import SimpleITK as sitk

    from oncoseg.prediction import Prediction

__all__ = ["Hints", "PhantomOptions", "Prepared", "RunContext", "TrainOptions", "evaluate",
           "get_task", "phantom", "predict", "prepare", "train"]

Model = str | os.PathLike[str] | LoadedModel | Prepared


def data_roles(task: Task) -> list[str]:
    """The roles a data set's cases must hold: the required ones (all, when each is optional)."""
    return list(task.required_roles) or [r.name for r in task.inputs]


def check_hints(task: str | Task, hints: Hints | None) -> Hints:
    """Hints the task reads; one it does not is refused by name (the CLI's option name)."""
    task = get_task(task)
    hints = hints or Hints()
    options = {"seed_lps_mm": "--seed-point", "roi_lps_mm": "--roi"}
    for name in hints.given():
        if name not in task.hints:
            raise InputError(options[name], f"is not used by task '{task.name}'")
    return hints


def phantom(task: str | Task, output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", orientation: str = "LPS", tilt_degrees: float = 0.0,
            context: RunContext | None = None) -> list[Path]:
    """Synthetic cases in the task's layout, stored as ``orientation`` says and tilted by up to
    ``tilt_degrees``; returns the case folders."""
    if cases < 1:
        raise InputError("--cases", "must be at least 1")
    options = PhantomOptions(cases, seed, layout, orientation, tilt_degrees)
    return method_of(task).phantom(Path(output), options, context or RunContext())


def predict(task: str | Task, images: Mapping[str, sitk.Image], model: Model = "demo",
            overrides: Mapping[str, Any] | None = None, context: RunContext | None = None,
            hints: Hints | None = None) -> Prediction:
    """One case: the model read (or a ``Prepared`` one reused), its settings applied, the
    method run on the images; ``timings['load_model']`` says what reading the model took."""
    task = get_task(task)
    context = context or RunContext()
    hints = check_hints(task, hints)
    task.check_images(images)  # before the model is read
    started = time.perf_counter()
    prepared = prepare(task, model, overrides, context)
    loading = time.perf_counter() - started
    prediction = method_of(task).predict(prepared, images, context, hints)
    prediction.timings = {"load_model": loading, **prediction.timings}
    # a scan unlike its role's modality (an MR given as CT, a label map as T2w), or unlike
    # the scans the model was trained on: said first
    flags = quality.modality_flags(task, images) + quality.geometry_flags(
        task, images, quality.model_training_geometry(prepared))
    prediction.messages[:0] = [flag.reason for flag in flags]
    return prediction


def train(task: str | Task, dataset: str | os.PathLike[str], output: str | os.PathLike[str],
          overrides: Mapping[str, Any] | None = None, context: RunContext | None = None,
          layout: str = "auto", options: TrainOptions | None = None) -> Path:
    """A model (or a cross-validation, for tasks that offer one) trained on a data set read
    in its layout; returns what was written."""
    from oncoseg.datasets.layouts import read_dataset, role_hints
    from oncoseg.distributed import session

    task = get_task(task)
    settings = training_settings(task, overrides)  # refused before any file is read
    data = read_dataset(dataset, layout, roles=data_roles(task),
                        partial=not task.required_roles, role_hints=role_hints(task))
    context = context or RunContext()
    with session(context.device):  # one process group under torchrun for every stage
        return method_of(task).train(data, Path(output), settings, context,
                                     options or TrainOptions())


def evaluate(task: str | Task, dataset: str | os.PathLike[str],
             output: str | os.PathLike[str], model: Model = "demo",
             overrides: Mapping[str, Any] | None = None, context: RunContext | None = None,
             layout: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """A model on a labelled data set, the model read once for every case; returns the
    summary (also written as ``summary.json`` in ``output``)."""
    from oncoseg.datasets.layouts import read_dataset, role_hints

    task = get_task(task)
    context = context or RunContext()
    data = read_dataset(dataset, layout, roles=data_roles(task),
                        partial=not task.required_roles, role_hints=role_hints(task))
    prepared = prepare(task, model, overrides, context)
    return method_of(task).evaluate(data, prepared, Path(output), context, overwrite)
