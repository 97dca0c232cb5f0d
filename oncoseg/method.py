"""What every method shares around its maths: the run context, its model file and its settings.

A method's code receives a :class:`RunContext` (where to compute, how to report progress, how to
stop) instead of three loose arguments, and gets its model and settings from here, declared on
its :class:`~oncoseg.tasks.Task`: the demo model file is named after the task, the settings
class and which settings a model fixes or proposes are fields of the declaration. So a method
has no loader, no demo path and no settings merge of its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncoseg.modelfile import LoadedModel, ModelMetadata, load_model
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.settings import TRAINING, Settings, settings_from_model
from oncoseg.tasks import Task, get_task

MODELS = Path(__file__).resolve().parent / "data" / "models"


@dataclass(frozen=True)
class RunContext:
    """Where a run computes, how it reports progress and how it is stopped."""

    device: str = "cpu"
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None


def _task(task: str | Task) -> Task:
    return task if isinstance(task, Task) else get_task(task)


def _settings_class(task: Task) -> type[Settings]:
    if task.settings is None:
        raise TypeError(f"task {task.name} declares no settings class")
    return task.settings


def demo_model_file(task: str | Task) -> Path:
    """The bundled demo model of a task: ``oncoseg/data/models/<task>-demo.safetensors``."""
    return MODELS / f"{_task(task).name}-demo.safetensors"


def load_task_model(task: str | Task, model: str | os.PathLike[str] | LoadedModel = "demo",
                    device: str = "cpu") -> LoadedModel:
    """A task's model (``demo``, a file, or one already loaded), its task checked."""
    task = _task(task)
    return load_model(model, demo_model_file(task), task.name, device)


def model_settings(task: str | Task, metadata: ModelMetadata,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """The settings a model runs with: what it was trained with is fixed (a different
    override is refused), what it proposes (a tuned threshold) the caller may change, and a
    training setting is refused by name."""
    task = _task(task)
    offered = {**metadata.preprocessing, **metadata.outputs}
    proposed = {k: offered[k] for k in task.proposed_settings if k in offered}
    return settings_from_model(_settings_class(task), metadata.preprocessing,
                               task.fixed_settings, overrides, proposed)


def training_settings(task: str | Task, overrides: Mapping[str, Any] | None = None) -> Any:
    """The settings a training run uses: the paper's defaults with the overrides; a setting
    only a model's run reads is refused by name."""
    return _settings_class(_task(task)).from_overrides(overrides, TRAINING)
