"""Any task as the review app runs it: through the task's logic
(:func:`OncoSegCommonLib.tasklogic.logic_for`: its Slicer module's own where one is registered,
else the generic one), in the three halves the panels use (copy the inputs on the main thread,
compute anywhere, add nodes on the main thread), so a cancelled or failed run leaves the scene
as it was. Nothing here knows one task from another: a registered task, a new method included,
is offered and run as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oncoseg.errors import InputError
from oncoseg.frontends import MODULE_FOLDERS
from oncoseg.method import Hints
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.tasks import all_tasks, get_task
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.tasklogic import RunRequest, TaskLogic, TaskResult, logic_for


def task_titles() -> dict[str, str]:
    """Every registered task's name and title (the page's task selector), asked each time so
    that a task registered after start-up is offered too."""
    return {task.name: task.title for task in all_tasks()}


@dataclass
class ReviewResult:
    """What the page shows: the segmentation to review (None for a classification), the volume
    it lies on, the probability overlays, and the task's own figures."""

    task: str
    segmentation: Any | None
    reference: Any
    probabilities: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    rows: list[dict] = field(default_factory=list)  # candidates, volumes or slice scores
    nodes: list[Any] = field(default_factory=list)  # every node the run added
    model: dict = field(default_factory=dict)  # result.json's "model": file, sha256, licences

    @classmethod
    def of(cls, task: str, result: TaskResult) -> ReviewResult:
        """The page's view of a logic's result, through the interface every result has."""
        return cls(task, result.nodes.segmentation, result.reference,
                   dict(result.nodes.probabilities), result.summary(), result.rows(),
                   result.all_nodes(), dict(result.prediction.model or {}))

    @property
    def model_line(self) -> str:
        """Which model made the result and under which licences (a reviewer sharing the
        result needs both)."""
        if not self.model:
            return ""
        return (f"Model: {self.model.get('file') or self.model.get('name', '?')} "
                f"(licence {self.model.get('license') or 'not stated'}; training data: "
                f"{self.model.get('training_data_license') or 'licence not stated'})")


@dataclass
class TaskRun:
    """A run whose inputs are copied; ``compute`` may run in a worker thread, ``finish`` on
    the main thread adds the nodes."""

    task: str
    inputs: dict[str, str]  # role -> node name, for the page
    compute: Callable[[ProgressCallback | None, CancelToken | None], Prediction]
    finish: Callable[[Prediction], ReviewResult]


_registered = False


def register_module_logics() -> None:
    """Import the module logics (``<Module>Lib.logic``) of the module folders the app runs
    from, once: importing one registers its logic for its tasks. Folders without one (the
    common library, the app itself) are skipped; a folder missing from the path is an error,
    not a silent fall-back to the generic logic for its tasks."""
    global _registered
    if _registered:
        return
    for folder in MODULE_FOLDERS:
        if importlib.util.find_spec(f"{folder}Lib") is None:
            raise ImportError(f"{folder}Lib is not importable: put the module folders on the "
                              "path first (oncoseg.frontends.add_module_folders)")
        if importlib.util.find_spec(f"{folder}Lib.logic") is not None:
            importlib.import_module(f"{folder}Lib.logic")
    _registered = True


def _names(inputs: dict[str, Any]) -> dict[str, str]:
    return {role: node.GetName() if node is not None else "" for role, node in inputs.items()}


def _only_volume(context: MRMLContext) -> Any:
    """A single-input task on a case with one volume takes it whatever its name."""
    volumes = context.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    nodes = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
    nodes = [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode")]
    if len(nodes) != 1:
        raise InputError("case", f"has {len(nodes)} volumes and none is named for this task's "
                         "input")
    return nodes[0]


def _inputs(logic: TaskLogic, context: MRMLContext) -> dict[str, Any]:
    """The case's volumes by role, from their names; a task with one required input takes
    the case's only volume when no name says which it is."""
    inputs = logic.guess_inputs()
    required = logic.task.required_roles
    if len(required) == 1 and inputs.get(required[0]) is None:
        inputs[required[0]] = _only_volume(context)
    return inputs


def plan_run(context: MRMLContext, task: str, model: str = "demo",
             device: str = "auto", hints: Hints | None = None) -> TaskRun:
    """Copy the case's inputs for ``task`` (main thread); errors name the missing input.
    ``hints``: what the case's data set states (a staging case's ROI box)."""
    if task not in task_titles():
        raise InputError("task", f"'{task}' is not one of {', '.join(task_titles())}")
    register_module_logics()
    logic = logic_for(context, get_task(task))
    inputs = _inputs(logic, context)
    started = logic.start(inputs, RunRequest(model=model, device=device,
                                             hints=hints or Hints()))
    return TaskRun(task, _names(inputs),
                   lambda progress, cancel: logic.compute(started, progress, cancel),
                   lambda prediction: ReviewResult.of(task, logic.finish(prediction, started)))
