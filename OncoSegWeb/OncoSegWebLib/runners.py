"""Each task as the review app runs it: through the Slicer module's own ``*Lib`` logic, in the
three halves the panels use (copy the inputs on the main thread, compute anywhere, add nodes on
the main thread), so a cancelled or failed run leaves the scene as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oncoseg.errors import InputError
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.context import MRMLContext

TASKS = {
    "rectal": "Rectal tumour (T2w + DWI)",
    "oar-ct": "Pelvic organs at risk (CT)",
    "oar-mr": "GI organs (abdominal MR)",
    "staging": "T2 / T3 staging (T2w)",
    "brain": "Brain tumour (T1, T1c, T2, FLAIR)",
}


@dataclass
class ReviewResult:
    """What the page shows: the segmentation to review (None for staging), the volume it
    lies on, the probability overlays, and the task's own figures."""

    task: str
    segmentation: Any | None
    reference: Any
    probabilities: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    rows: list[dict] = field(default_factory=list)  # candidates, volumes or slice scores
    nodes: list[Any] = field(default_factory=list)  # every node the run added


@dataclass
class TaskRun:
    """A run whose inputs are copied; ``compute`` may run in a worker thread, ``finish`` on
    the main thread adds the nodes."""

    task: str
    inputs: dict[str, str]  # role -> node name, for the page
    compute: Callable[[ProgressCallback | None, CancelToken | None], Prediction]
    finish: Callable[[Prediction], ReviewResult]


def _names(inputs: dict[str, Any]) -> dict[str, str]:
    return {role: node.GetName() if node is not None else "" for role, node in inputs.items()}


def _rectal(context: MRMLContext, model: str, device: str) -> TaskRun:
    from RectalSegLib.logic import RectalSegLogic, RectalSegParameters, guess_inputs

    logic, inputs = RectalSegLogic(context), guess_inputs(context.scene)
    images = logic.start(inputs)
    parameters = RectalSegParameters(model=model, device=device)

    def finish(prediction: Prediction) -> ReviewResult:
        result = logic.finish(prediction, inputs)
        return ReviewResult("rectal", result.nodes.segmentation, result.reference_node,
                            result.nodes.probabilities,
                            f"{len(result.candidates.components)} candidate(s)",
                            result.candidate_rows(), result.nodes.all())

    return TaskRun("rectal", _names(inputs),
                   lambda p, c: logic.compute(images, parameters, None, p, c), finish)


def _oar(mode: str) -> Callable[[MRMLContext, str, str], TaskRun]:
    def plan(context: MRMLContext, model: str, device: str) -> TaskRun:
        from OARSegLib.logic import MODES, OARSegLogic, OARSegParameters
        from OncoSegCommonLib.inputs import guess_inputs

        task = MODES[mode].task
        logic = OARSegLogic(context)
        node = guess_inputs(context.scene, task)[MODES[mode].role] or _only_volume(context)
        images = logic.start(node, mode)
        parameters = OARSegParameters(mode=mode, model=model, device=device)

        def finish(prediction: Prediction) -> ReviewResult:
            result = logic.finish(prediction, node)
            return ReviewResult(task.name, result.nodes.segmentation, node,
                                result.nodes.probabilities,
                                f"{len(result.organs)} organ(s)", result.volume_rows(),
                                result.nodes.all())

        return TaskRun(task.name, {MODES[mode].role: node.GetName()},
                       lambda p, c: logic.compute(images, parameters, p, c), finish)

    return plan


def _staging(context: MRMLContext, model: str, device: str) -> TaskRun:
    from oncoseg.staging.task import TASK
    from OncoSegCommonLib.inputs import guess_inputs
    from StagingCNNLib.logic import StagingLogic, StagingParameters

    logic = StagingLogic(context)
    node = guess_inputs(context.scene, TASK)["t2w"] or _only_volume(context)
    images, roi = logic.start(node)
    parameters = StagingParameters(model=model, device=device)

    def finish(prediction: Prediction) -> ReviewResult:
        result = logic.finish(prediction, node)
        rows = [{"slice": k, "P(T3)": round(s, 3)} for k, s in enumerate(result.slice_scores)]
        return ReviewResult("staging", None, node, {}, result.summary(), rows,
                            [result.table, result.chart])

    return TaskRun("staging", {"t2w": node.GetName()},
                   lambda p, c: logic.compute(images, roi, parameters, p, c), finish)


def _brain(context: MRMLContext, model: str, device: str) -> TaskRun:
    from BrainTumor2D3DLib.logic import BrainParameters, BrainTumorLogic, guess_inputs

    logic, inputs = BrainTumorLogic(context), guess_inputs(context.scene)
    images = logic.start(inputs)
    parameters = BrainParameters(model=model, device=device)

    def finish(prediction: Prediction) -> ReviewResult:
        result = logic.finish(prediction, inputs)
        return ReviewResult("brain", result.nodes.segmentation, result.reference_node,
                            result.nodes.probabilities, result.summary(),
                            result.volume_rows(), result.nodes.all() + result.member_nodes)

    return TaskRun("brain", _names(inputs),
                   lambda p, c: logic.compute(images, parameters, p, c), finish)


PLANS: dict[str, Callable[[MRMLContext, str, str], TaskRun]] = {
    "rectal": _rectal, "oar-ct": _oar("CT"), "oar-mr": _oar("MR"), "staging": _staging,
    "brain": _brain,
}


def _only_volume(context: MRMLContext) -> Any:
    """A single-input task on a case with one volume takes it whatever its name."""
    volumes = context.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    nodes = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
    nodes = [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode")]
    if len(nodes) != 1:
        raise InputError("case", f"has {len(nodes)} volumes and none is named for this task's "
                         "input")
    return nodes[0]


def plan_run(context: MRMLContext, task: str, model: str = "demo",
             device: str = "auto") -> TaskRun:
    """Copy the case's inputs for ``task`` (main thread); errors name the missing input."""
    if task not in PLANS:
        raise InputError("task", f"'{task}' is not one of {', '.join(PLANS)}")
    return PLANS[task](context, model, device)
