"""The method contract: what every method implements, and what it gets from the engine.

A method is a module (``oncoseg/<method>/method.py``, named by its task's ``method_module``)
with four functions of the :class:`Method` shape: ``phantom``, ``predict``, ``train`` and
``evaluate``. Each receives a :class:`RunContext` (where to compute, how to report progress, how
to stop) instead of three loose arguments; ``predict`` and ``evaluate`` receive a
:class:`Prepared` model (read once, with the settings it runs with), ``train`` its settings and
a :class:`~oncoseg.datasets.Dataset` already read. Loading, settings, reading data sets and
checking inputs are done once, here and in :mod:`oncoseg.verbs`, from what the task declares:
the demo model file is named after the task, the settings class and which settings a model
fixes or proposes are fields of its :class:`~oncoseg.tasks.Task`. So a method has no loader, no
demo path and no settings merge of its own, and the CLI, the Slicer modules and the review app
drive every method through the same calls.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from oncoseg.modelfile import LoadedModel, ModelMetadata, ModelStatement, load_model
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.settings import TRAINING, settings_from_model
from oncoseg.tasks import Task, get_task

if TYPE_CHECKING:
    import SimpleITK as sitk

    from oncoseg.datasets.base import Dataset
    from oncoseg.prediction import Prediction

MODELS = Path(__file__).resolve().parent / "data" / "models"


@dataclass(frozen=True)
class RunContext:
    """Where a run computes, how it reports progress and how it is stopped."""

    device: str = "cpu"
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None
    # The interpreter for steps that must not run in this process, started as a child: inside
    # Slicer, PythonSlicer for elastix (pip's ITK beside Slicer's crashes, Slicer issues #5907
    # and #8947). None (the CLI's default) runs them here.
    child_python: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A task's model read once and the settings it runs with: what ``predict`` and
    ``evaluate`` share (an evaluation reads the model once for every case)."""

    task: Task
    model: LoadedModel | None  # None for a method without networks
    settings: Any  # the task's Settings instance (a dict for a task without a class)

    @property
    def network(self) -> Any:
        if self.model is None:
            raise ValueError(f"task {self.task.name} runs no network")
        return self.model.network


@dataclass(frozen=True)
class Hints:
    """What a user may point at, for the tasks that read it (``Task.hints`` names them)."""

    seed_lps_mm: Sequence[float] | None = None  # a point inside the structure to keep (LPS mm)
    roi_lps_mm: Sequence[float] | None = None  # a box around the region to classify (LPS mm)

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass(frozen=True)
class TrainOptions:
    resume: bool = False  # continue from the last checkpoint in the output folder
    description: str = ""  # what the model file says it is
    demo: bool = False  # trained on synthetic data: not for clinical use
    license: str = ""  # the weights' licence the model file states ("" : not stated)

    @property
    def statement(self) -> ModelStatement:
        return ModelStatement(self.description, self.demo, self.license)


@dataclass(frozen=True)
class PhantomOptions:
    cases: int = 4
    seed: int = 0
    layout: str = "native"  # the task's own layout, or one it offers (brain: brats2023)
    orientation: str = "LPS"  # storage order: an orientation code or "random"
    tilt_degrees: float = 0.0  # oblique acquisitions up to this angle


@runtime_checkable
class Method(Protocol):
    """The four verbs every method module offers (module-level functions of these shapes)."""

    def phantom(self, output: Path, options: PhantomOptions, context: RunContext
                ) -> list[Path]: ...

    def predict(self, prepared: Prepared, images: Mapping[str, sitk.Image],
                context: RunContext, hints: Hints) -> Prediction: ...

    def train(self, data: Dataset, output: Path, settings: Any, context: RunContext,
              options: TrainOptions) -> Path: ...

    def evaluate(self, data: Dataset, prepared: Prepared, output: Path, context: RunContext,
                 overwrite: bool) -> dict[str, Any]: ...


def method_of(task: str | Task) -> Method:
    """The module that implements a task's method (imported on first use: torch is heavy)."""
    return importlib.import_module(get_task(task).method_module)  # type: ignore[return-value]


def _plain_settings(task: Task, *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings of a task without a Settings class: its defaults, then each layer on top."""
    merged = dict(task.default_config)
    for layer in layers:
        merged.update(layer or {})
    return merged


def demo_model_file(task: str | Task) -> Path:
    """The bundled demo model of a task: ``oncoseg/data/models/<task>-demo.safetensors``."""
    return MODELS / f"{get_task(task).name}-demo.safetensors"


def load_task_model(task: str | Task, model: str | os.PathLike[str] | LoadedModel = "demo",
                    device: str = "cpu") -> LoadedModel:
    """A task's model (``demo``, a file, or one already loaded), its task checked."""
    task = get_task(task)
    return load_model(model, demo_model_file(task), task.name, device)


def model_settings(task: str | Task, metadata: ModelMetadata,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """The settings a model runs with: what it was trained with is fixed (a different
    override is refused), what it proposes (a tuned threshold) the caller may change, and a
    training setting is refused by name. Training settings, which a run never reads, hold the
    values the model file records (:func:`recorded_training_settings`), so that the settings a
    result or a summary prints describe the model that ran, not the task's defaults."""
    task = get_task(task)
    offered = {**metadata.preprocessing, **metadata.outputs}
    proposed = {k: offered[k] for k in task.proposed_settings if k in offered}
    if task.settings is None:
        return _plain_settings(task, proposed, overrides)
    recorded, _ = recorded_training_settings(task, metadata)
    return settings_from_model(task.settings, metadata.preprocessing,
                               task.fixed_settings, overrides, {**recorded, **proposed})


def recorded_training_settings(task: str | Task, metadata: ModelMetadata
                               ) -> tuple[dict[str, Any], list[str]]:
    """(the training settings the model file records: training's ``provenance.<task>_config``,
    the training settings it does not record). A model file from before a setting existed lacks
    it: its value in a run is the task's default, which that model may not have used."""
    task = get_task(task)
    if task.settings is None:
        return {}, []
    training = task.settings.only(TRAINING)
    stored = metadata.provenance.get(f"{task.name.replace('-', '_')}_config")
    stored = stored if isinstance(stored, Mapping) else {}
    recorded = {key: stored[key] for key in training if key in stored}
    return recorded, sorted(training - set(recorded))


def training_settings(task: str | Task, overrides: Mapping[str, Any] | None = None) -> Any:
    """The settings a training run uses: the paper's defaults with the overrides; a setting
    only a model's run reads is refused by name."""
    task = get_task(task)
    if task.settings is None:
        return _plain_settings(task, overrides)
    return task.settings.from_overrides(overrides, TRAINING)


def prepare(task: str | Task, model: str | os.PathLike[str] | LoadedModel | Prepared = "demo",
            overrides: Mapping[str, Any] | None = None,
            context: RunContext | None = None) -> Prepared:
    """A model read once with the settings it runs with (a ``Prepared`` passes through)."""
    task = get_task(task)
    if isinstance(model, Prepared):
        return model
    if not task.network_modules:  # a method without networks has no model file
        return Prepared(task, None, _plain_settings(task, overrides))
    loaded = load_task_model(task, model, (context or RunContext()).device)
    return Prepared(task, loaded, model_settings(task, loaded.metadata, overrides))
