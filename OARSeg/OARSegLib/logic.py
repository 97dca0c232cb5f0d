"""OARSeg on a volume node, for one of two tasks: pelvic organs at risk on CT (``oar-ct``,
paper 003) or GI-tract organs on abdominal MR (``oar-mr``, paper 001). Run, keep the chosen
organs, tabulate volumes, compare.

:class:`OARSegLogic` is the :class:`~OncoSegCommonLib.tasklogic.TaskLogic` of both tasks (one
instance per task; the panel's mode selector picks it): :meth:`~TaskLogic.start` copies the
input (main thread), :meth:`compute` runs the engine and keeps the chosen organs (any thread,
no node touched) and :meth:`finish` adds the nodes all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.method import demo_model_file
from oncoseg.oar.ct.task import CT_SEGMENTS, OAR_CT
from oncoseg.oar.mr.task import GI_SEGMENTS, OAR_MR
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.tasks import SegmentSpec, Task
from OncoSegCommonLib.compare import compare_segmentations
from OncoSegCommonLib.segmentations import segment_id
from OncoSegCommonLib.tasklogic import (
    RunRequest,
    StartedRun,
    TaskLogic,
    TaskResult,
    register_logic,
)
from OncoSegCommonLib.taskrun import add_prediction


@dataclass(frozen=True)
class Mode:
    """What differs between CT and MR: the engine task, its input, organs and demo model."""

    name: str
    task: Task
    input_label: str
    segments: tuple[SegmentSpec, ...]
    demo_model: Path
    layouts: tuple[str, ...]  # training layouts offered, the default first

    @property
    def role(self) -> str:
        return self.task.inputs[0].name

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.segments)


MODES = {
    "CT": Mode("CT", OAR_CT, "Pelvic CT:", CT_SEGMENTS, demo_model_file(OAR_CT),
               ("rtstruct", "nnunet", "folders", "auto")),
    "MR": Mode("MR", OAR_MR, "Abdominal MR:", GI_SEGMENTS, demo_model_file(OAR_MR),
               ("kaggle-gi", "nnunet", "folders", "auto")),
}
ORGANS = MODES["CT"].organs  # the CT mode's, the default


@dataclass
class OARSegRequest(RunRequest):
    """A run that keeps some organs only (none given: every organ of the task)."""

    organs: tuple[str, ...] = ()


@dataclass
class OARSegParameters:
    mode: str = "CT"
    model: str = "demo"
    device: str = "auto"
    organs: tuple[str, ...] = ()  # the checklist: which organs to keep; none given = all
    probabilities: bool = False  # probability overlays cost memory on a full CT
    threshold: float | None = None  # MR: None = the threshold the model was tuned with

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"choose the mode among {', '.join(MODES)} (got {self.mode})")
        known = MODES[self.mode].organs
        self.organs = tuple(self.organs) or known
        unknown = [o for o in self.organs if o not in known]
        if unknown:
            raise ValueError(f"choose organs among {', '.join(known)} (got {unknown})")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"the threshold must lie between 0 and 1 (got {self.threshold})")

    @property
    def task(self) -> Task:
        """The engine task the mode runs (the one to build :class:`OARSegLogic` for)."""
        return MODES[self.mode].task

    def overrides(self) -> dict[str, Any]:
        """Engine settings: overlays on request; MR's threshold when one is set."""
        settings: dict[str, Any] = {"probabilities": self.probabilities}
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        return settings

    def request(self) -> OARSegRequest:
        return OARSegRequest(self.model, self.device, self.overrides(), organs=self.organs)


@dataclass
class OARSegResult(TaskResult):
    """The run's nodes; its rows are the kept organs' volumes."""

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.prediction.segments)

    def rows(self) -> list[dict[str, Any]]:
        """The per-organ volume table."""
        volumes = self.prediction.segment_volumes_ml()
        return [{"organ": name, "volume_ml": round(volumes[name], 2)} for name in self.organs]

    def summary(self) -> str:
        return f"{len(self.organs)} organ(s)"


def keep_organs(prediction: Prediction, organs: Sequence[str]) -> Prediction:
    """The prediction restricted to the chosen organs (others become background)."""
    specs = tuple(s for s in prediction.segments if s.name in organs)
    labels = sitk.GetArrayFromImage(prediction.labels)
    labels[~np.isin(labels, [s.label for s in specs])] = 0
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(prediction.labels)
    return replace(prediction, segments=specs, labels=image,
                   probabilities={k: v for k, v in prediction.probabilities.items()
                                  if k in organs})


class OARSegLogic(TaskLogic):
    """``oar-ct`` or ``oar-mr`` on a volume node (``oar-ct`` when no task is given)."""

    tasks = (OAR_CT.name, OAR_MR.name)
    request_type = OARSegRequest
    prefix = "OARSeg"

    @property
    def mode(self) -> Mode:
        return next(mode for mode in MODES.values() if mode.task.name == self.task.name)

    def compute(self, started: StartedRun, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        """Any thread: the engine's segmentation, restricted to the organs asked for."""
        prediction = super().compute(started, progress, cancel)
        request = self.own_request(started.request)
        organs = getattr(request, "organs", ()) or self.mode.organs
        return keep_organs(prediction, organs)

    def add_results(self, prediction: Prediction, started: StartedRun) -> OARSegResult:
        reference = self.reference(prediction, started)
        nodes = add_prediction(self.scene, prediction, self.prefix, reference,
                               inputs=self.model_inputs(started))
        return OARSegResult(prediction, nodes, reference)

    def compare(self, result: OARSegResult, reference_segmentation: Any, organ: str,
                reference_segment_id: str) -> dict[str, float]:
        """One organ against a reader's segment: DSC, HD95, mean surface distance."""
        spec = next(s for s in result.prediction.segments if s.name == organ)
        return compare_segmentations(result.nodes.segmentation, reference_segmentation,
                                     result.reference, None, segment_id(spec),
                                     reference_segment_id)


for _task in OARSegLogic.tasks:
    register_logic(_task, OARSegLogic)
