"""OARSeg on a CT volume node: run, keep the chosen organs, tabulate volumes, compare.

As in RectalSeg, :meth:`start` copies the input (main thread), :meth:`compute` runs the engine
(any thread, no node touched) and :meth:`finish` adds the nodes all at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.oar.ct_predict import DEMO_MODEL, predict_ct
from oncoseg.oar.task import CT_SEGMENTS, OAR_CT
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.compare import compare_segmentations
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.segmentations import segment_id
from OncoSegCommonLib.taskrun import PredictionNodes, add_prediction, images_from_nodes

ORGANS = tuple(spec.name for spec in CT_SEGMENTS)


@dataclass
class OARSegParameters:
    model: str = "demo"
    device: str = "auto"
    organs: tuple[str, ...] = ORGANS  # the checklist: which organs to keep
    probabilities: bool = False  # probability overlays cost memory on a full CT

    def __post_init__(self) -> None:
        unknown = [o for o in self.organs if o not in ORGANS]
        if unknown or not self.organs:
            raise ValueError(f"choose organs among {', '.join(ORGANS)} (got {unknown or 'none'})")


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

    def models(self) -> list[ModelChoice]:
        return available_models(OAR_CT.name, {"Demo model (phantoms)": DEMO_MODEL})

    def start(self, ct_node: Any) -> dict[str, sitk.Image]:
        return images_from_nodes({"ct": ct_node})

    def compute(self, images: dict[str, sitk.Image], parameters: OARSegParameters,
                progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        from oncoseg.device import resolve_device

        prediction = predict_ct(images, parameters.model, resolve_device(parameters.device),
                                {"probabilities": parameters.probabilities}, progress, cancel)
        return keep_organs(prediction, parameters.organs)

    def finish(self, prediction: Prediction, ct_node: Any,
               prefix: str = "OARSeg") -> OARSegResult:
        nodes = add_prediction(self.scene, prediction, prefix, ct_node)
        return OARSegResult(prediction, nodes, ct_node,
                            tuple(s.name for s in prediction.segments))

    def run(self, ct_node: Any, parameters: OARSegParameters | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> OARSegResult:
        images = self.start(ct_node)
        prediction = self.compute(images, parameters or OARSegParameters(), progress, cancel)
        return self.finish(prediction, ct_node)

    def compare(self, result: OARSegResult, reference_segmentation: Any, organ: str,
                reference_segment_id: str) -> dict[str, float]:
        """One organ against a reader's segment: DSC, HD95, mean surface distance."""
        spec = next(s for s in CT_SEGMENTS if s.name == organ)
        return compare_segmentations(result.nodes.segmentation, reference_segmentation,
                                     result.reference_node, None, segment_id(spec),
                                     reference_segment_id)
