"""One logic shape for every task in the scene: ``start`` / ``compute`` / ``finish``.

``start`` copies the inputs out of the scene (main thread), ``compute`` runs the task's method
through the engine's generic verbs (any thread, no node touched), ``finish`` adds the results as
nodes (main thread), all at once or not at all. A module's own logic (``RectalSegLib``, ...)
subclasses :class:`TaskLogic` for what it adds (a DWI series node, candidate components, a
table and a chart) and registers it for its task; any other task, a new method included, runs
through :class:`TaskLogic` itself. The panels and the review app only call these three, and read
a run's outcome through :class:`TaskResult`'s common interface (``all_nodes``, ``summary``,
``rows``), so neither holds code for one task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import SimpleITK as sitk

from oncoseg import verbs
from oncoseg.errors import InputError
from oncoseg.io.volumes import refuse_sheared
from oncoseg.method import Hints, RunContext, demo_model_file
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.tasks import Task, get_task
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.dicom_values import frames_with_own_rescale, refuse_unplaced
from OncoSegCommonLib.inputs import guess_inputs
from OncoSegCommonLib.interpreter import slicer_python
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.studies import place_beside
from OncoSegCommonLib.taskrun import (
    PredictionNodes,
    add_prediction,
    images_from_nodes,
    unmoved_inputs,
)
from OncoSegCommonLib.volumes import as_read_from_its_file, refuse_unhardened_transform


@dataclass
class RunRequest:
    """What a panel or the review app asks of a run, whatever the task. A module whose logic
    has options of its own (organs to keep, ensemble members to show) subclasses it with
    defaults for them, so that a plain request (the review app's) still runs."""

    model: str = "demo"  # 'demo' or a model file
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # settings (prediction phase)
    hints: Hints = field(default_factory=Hints)  # a seed point, a box (LPS mm)


@dataclass
class StartedRun:
    """A run whose inputs are copied out of the scene: what ``compute`` and ``finish`` need."""

    nodes: dict[str, Any]  # role -> the input node chosen (None for an optional role left out)
    images: dict[str, Any]  # role -> a copy of its image (engine input)
    request: RunRequest
    notes: list[str] = field(default_factory=list)  # how the inputs' files place them


@dataclass
class TaskResult:
    """What a finished run added to the scene, and what every front end shows of it."""

    prediction: Prediction
    nodes: PredictionNodes
    reference: Any  # the volume node the results lie on
    other_nodes: list[Any] = field(default_factory=list)  # tables, charts, extra volumes

    def all_nodes(self) -> list[Any]:
        """Every node the run added: what a front end removes before the next run."""
        return self.nodes.all() + list(self.other_nodes)

    def summary(self) -> str:
        """One line for a status label."""
        if self.prediction.class_probabilities:
            return ", ".join(f"P({k}) = {v:.2f}"
                             for k, v in self.prediction.class_probabilities.items())
        found = [n for n, ml in self.prediction.segment_volumes_ml().items() if ml > 0]
        return f"{len(found)} of {len(self.prediction.segments)} segment(s) found"

    def rows(self) -> list[dict[str, Any]]:
        """The table a front end lists (here: each segment's volume, or each class's
        probability for a classification)."""
        if self.prediction.labels is None:
            return [{"class": name, "probability": round(p, 3)}
                    for name, p in self.prediction.class_probabilities.items()]
        return [{"segment": name, "volume_ml": round(ml, 2)}
                for name, ml in self.prediction.segment_volumes_ml().items()]


class TaskLogic:
    """start / compute / finish for one task, on one scene."""

    tasks: tuple[str, ...] = ()  # the tasks a module's logic serves (the first by default)
    request_type: type[RunRequest] = RunRequest  # the request ``start`` hands on
    demo_label = "Demo model (phantoms)"  # the bundled model's name in the selector

    def __init__(self, context: MRMLContext, task: str | Task | None = None):
        if task is None:
            if not self.tasks:
                raise TypeError(f"{type(self).__name__} needs the task it runs")
            task = self.tasks[0]
        self.context = context
        self.scene = context.scene
        self.task = get_task(task)
        # elastix in a child PythonSlicer inside the application; None: in this process
        self.child_python = slicer_python()
        if self.tasks and self.task.name not in self.tasks:
            raise ValueError(f"{type(self).__name__} runs {', '.join(self.tasks)}, not "
                             f"'{self.task.name}'")

    @property
    def prefix(self) -> str:
        """How the nodes a run adds are named (a module's logic: the module's name)."""
        return self.task.title

    def models(self) -> list[ModelChoice]:
        """The model selector's choices: the bundled demo model, then models trained here."""
        return available_models(self.task.name,
                                {self.demo_label: demo_model_file(self.task)})

    def guess_inputs(self) -> dict[str, Any]:
        """The selectors' first fill, from node names."""
        return guess_inputs(self.scene, self.task)

    def own_request(self, request: RunRequest | None) -> RunRequest:
        """The request as this logic's ``request_type``: a plain :class:`RunRequest` keeps its
        model, device, settings and hints and gets the logic's defaults for the rest."""
        if request is None:
            return self.request_type()
        if isinstance(request, self.request_type):
            return request
        return self.request_type(**{f.name: getattr(request, f.name)
                                    for f in fields(RunRequest)})

    def start(self, inputs: Mapping[str, Any], request: RunRequest | None = None
              ) -> StartedRun:
        """Main thread: copies of the chosen volumes. A required role without one, an input
        the task does not take or a hint it does not read is refused here, before any
        thread starts, by name."""
        request = self.own_request(request)
        verbs.check_hints(self.task, request.hints)
        # e.g. rectal: a dwi node stands in for b0 + high b
        covered = self.task.covered_by(r for r, node in inputs.items() if node is not None)
        optional = {r.name for r in self.task.inputs if r.optional} | \
            set(self.task.alternatives) | covered
        chosen = {role: node for role, node in inputs.items()
                  if node is not None or role not in optional}
        refuse_label_maps(self.task, chosen)
        for role, node in chosen.items():  # markups are read in world coordinates
            if node is not None and node.IsA("vtkMRMLVolumeNode"):
                refuse_unhardened_transform(f"{role} ('{node.GetName()}')", node)
        images = self.images(chosen)
        notes = []
        for role, node in chosen.items():
            if isinstance(images.get(role), sitk.Image):
                what = f"{role} ('{node.GetName()}')"
                refuse_sheared(images[role], what)  # Slicer keeps it
                images[role], read = as_read_from_its_file(what, node, images[role])
                refuse_unplaced(what, node, self.context.database)
                images[role], rescaled = frames_with_own_rescale(what, node, images[role],
                                                                 self.context.database)
                notes += [f"input {role}: {note}" for note in [*read, *rescaled]]
        self.task.check_images(images)
        return StartedRun(dict(inputs), images, request, notes)

    def images(self, nodes: Mapping[str, Any]) -> dict[str, Any]:
        """The engine's inputs from the chosen nodes (a module turns a node that is not a
        plain volume, e.g. a DWI series, into what its method reads)."""
        return images_from_nodes(nodes)

    def compute(self, started: StartedRun, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        """Any thread: the task's method on the copies; touches no node."""
        from oncoseg.device import resolve_device

        request = started.request
        context = RunContext(resolve_device(request.device), progress, cancel,
                             self.child_python)
        prediction = verbs.predict(self.task, started.images, request.model,
                                   request.overrides, context, request.hints)
        if started.notes:  # shown with the result, as the CLI shows them
            prediction.messages[:0] = started.notes
        return prediction

    def reference(self, prediction: Prediction, started: StartedRun) -> Any:
        """The volume node the results lie on: the reference role's (when that role is
        optional and was left out, the node of the image the prediction shows)."""
        node = started.nodes.get(self.task.reference_role)
        return node if node is not None else started.nodes.get(prediction.display_role)

    def finish(self, prediction: Prediction, started: StartedRun) -> TaskResult:
        """Main thread: the results as nodes (:meth:`add_results`), placed in the reference
        volume's study."""
        result = self.add_results(prediction, started)
        place_beside(self.scene, result.all_nodes(), result.reference)
        return result

    def model_inputs(self, started: StartedRun) -> dict[str, Any]:
        """What a correction reads with the result (:func:`taskrun.unmoved_inputs`)."""
        return unmoved_inputs(self.task.registered_roles, started.nodes)

    def add_results(self, prediction: Prediction, started: StartedRun) -> TaskResult:
        """The segmentation and probability maps as nodes on the reference, all or none (a
        module's logic adds its own: candidates, a table and a chart, members)."""
        reference = self.reference(prediction, started)
        nodes = add_prediction(self.scene, prediction, self.prefix, reference,
                               inputs=self.model_inputs(started))
        return TaskResult(prediction, nodes, reference)

    def run(self, inputs: Mapping[str, Any], request: RunRequest | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> TaskResult:
        """The three halves in one call (scripts, tests)."""
        started = self.start(inputs, request)
        return self.finish(self.compute(started, progress, cancel), started)


def refuse_label_maps(task: Task, nodes: Mapping[str, Any]) -> None:
    """A label map volume holds segment numbers, not intensities: given for a scan (a role with
    a modality; a mask role takes one), it is refused by name. Slicer's volume selectors offer
    label maps (vtkMRMLLabelMapVolumeNode derives from vtkMRMLScalarVolumeNode); the panels
    hide them, a script may still pass one."""
    scans = {role.name for role in task.inputs if role.modality}
    for role, node in nodes.items():
        if role in scans and node is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"{role} ('{node.GetName()}')", "is a label map volume (segment "
                             "numbers, not intensities): choose the scan itself")


_LOGICS: dict[str, type[TaskLogic]] = {}


def register_logic(task: str, logic: type[TaskLogic]) -> type[TaskLogic]:
    """A module's own logic for its task (imported with the module's Lib package)."""
    _LOGICS[task] = logic
    return logic


def logic_for(context: MRMLContext, task: str | Task) -> TaskLogic:
    """The task's logic: its module's own where one is registered, else the generic one."""
    name = task.name if isinstance(task, Task) else task
    return _LOGICS.get(name, TaskLogic)(context, task)
