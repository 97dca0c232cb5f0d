"""OARSeg on a volume node, in one of two modes: pelvic organs at risk on CT (paper 003) or
GI-tract organs on abdominal MR (paper 001). Run, keep the chosen organs, tabulate volumes,
compare.

As in RectalSeg, :meth:`start` copies the input (main thread), :meth:`compute` runs the engine
(any thread, no node touched) and :meth:`finish` adds the nodes all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.segmentations import segment_id
from OncoSegCommonLib.taskrun import PredictionNodes, add_prediction, images_from_nodes


@dataclass(frozen=True)
class Mode:
    """What differs between CT and MR: the engine task, its input, organs and demo model."""

    name: str
    task: Task
    input_label: str
    segments: tuple[SegmentSpec, ...]
    demo_model: Path
    layouts: tuple[str, ...]  # training layouts offered, the default first
    predict: Callable[..., Prediction]

    @property
    def role(self) -> str:
        return self.task.inputs[0].name

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.segments)


def _predict_ct(*args, **kwargs) -> Prediction:
    from oncoseg.oar.ct.predict import predict_ct

    return predict_ct(*args, **kwargs)


def _predict_mr(*args, **kwargs) -> Prediction:
    from oncoseg.oar.mr.predict import predict_mr

    return predict_mr(*args, **kwargs)


MODES = {
    "CT": Mode("CT", OAR_CT, "Pelvic CT:", CT_SEGMENTS, demo_model_file(OAR_CT),
               ("rtstruct", "nnunet", "folders", "auto"), _predict_ct),
    "MR": Mode("MR", OAR_MR, "Abdominal MR:", GI_SEGMENTS, demo_model_file(OAR_MR),
               ("kaggle-gi", "nnunet", "folders", "auto"), _predict_mr),
}
ORGANS = MODES["CT"].organs  # the CT mode's, the default


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

    def engine_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"probabilities": self.probabilities}
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        return settings


@dataclass
class OARSegResult:
    prediction: Prediction
    nodes: PredictionNodes
    reference_node: Any
    organs: tuple[str, ...] = field(default_factory=tuple)

    def volume_rows(self) -> list[dict]:
        """The per-organ volume table."""
        volumes = self.prediction.segment_volumes_ml()
        return [{"organ": name, "volume_ml": round(volumes[name], 2)} for name in self.organs]


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


class OARSegLogic:
    def __init__(self, context: MRMLContext):
        self.context = context
        self.scene = context.scene

    def models(self, mode: str = "CT") -> list[ModelChoice]:
        chosen = MODES[mode]
        return available_models(chosen.task.name, {"Demo model (phantoms)": chosen.demo_model})

    def start(self, volume_node: Any, mode: str = "CT") -> dict[str, sitk.Image]:
        return images_from_nodes({MODES[mode].role: volume_node})

    def compute(self, images: dict[str, sitk.Image], parameters: OARSegParameters,
                progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        from oncoseg.device import resolve_device

        mode = MODES[parameters.mode]
        prediction = mode.predict(images, parameters.model, resolve_device(parameters.device),
                                  parameters.engine_settings(), progress, cancel)
        return keep_organs(prediction, parameters.organs)

    def finish(self, prediction: Prediction, volume_node: Any,
               prefix: str = "OARSeg") -> OARSegResult:
        nodes = add_prediction(self.scene, prediction, prefix, volume_node)
        return OARSegResult(prediction, nodes, volume_node,
                            tuple(s.name for s in prediction.segments))

    def run(self, volume_node: Any, parameters: OARSegParameters | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> OARSegResult:
        parameters = parameters or OARSegParameters()
        images = self.start(volume_node, parameters.mode)
        prediction = self.compute(images, parameters, progress, cancel)
        return self.finish(prediction, volume_node)

    def compare(self, result: OARSegResult, reference_segmentation: Any, organ: str,
                reference_segment_id: str) -> dict[str, float]:
        """One organ against a reader's segment: DSC, HD95, mean surface distance."""
        spec = next(s for s in result.prediction.segments if s.name == organ)
        return compare_segmentations(result.nodes.segmentation, reference_segmentation,
                                     result.reference_node, None, segment_id(spec),
                                     reference_segment_id)
