"""BrainTumor2D3D on volume nodes: T1, T1c, T2 and FLAIR selectors (any may be empty), the
ensemble's segmentation with the three sub-regions, optional probability overlays, a table of
region volumes, and on request each ensemble member's own segmentation for review.

As in the other modules, :meth:`start` copies the inputs (main thread), :meth:`compute` runs
the engine (any thread, no node touched) and :meth:`finish` adds the nodes all at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import SimpleITK as sitk

from oncoseg.brain.config import SEQUENCES
from oncoseg.brain.task import TASK
from oncoseg.errors import InputError
from oncoseg.geometry import voxel_volume_ml
from oncoseg.metrics import brats_regions
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.inputs import guess_inputs as common_guess_inputs
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.segmentations import segmentation_node_from_labels
from OncoSegCommonLib.taskrun import PredictionNodes, add_prediction, images_from_nodes

ROLES = SEQUENCES
LABELS = {"t1": "T1:", "t1c": "T1c (T1Gd):", "t2": "T2:", "flair": "FLAIR:"}


def _clash(name: str, role: str) -> bool:
    """'t1' and 't2' hide in other sequences' names (t1ce, t2_flair, t2f)."""
    return (role == "t1" and any(h in name for h in ("t1c", "t1gd", "gad", "contrast"))) or \
        (role == "t2" and any(h in name for h in ("flair", "t2f")))


def guess_inputs(scene: Any) -> dict[str, Any]:
    return common_guess_inputs(scene, TASK, _clash)


@dataclass
class BrainParameters:
    model: str = "demo"
    device: str = "auto"
    probabilities: bool = True  # the three sub-regions' probability overlays
    members: bool = False  # each ensemble member's segmentation too, for review


@dataclass
class BrainResult:
    prediction: Prediction
    nodes: PredictionNodes
    reference_node: Any
    member_nodes: list[Any] = field(default_factory=list)

    def volume_rows(self) -> list[dict]:
        """Whole tumour, tumour core, enhancing tumour and each label, in mL."""
        labels = sitk.GetArrayViewFromImage(self.prediction.labels)
        ml = voxel_volume_ml(self.prediction.labels)
        rows = [{"region": name, "volume_ml": round(float(mask.sum()) * ml, 2)}
                for name, mask in brats_regions(labels).items()]
        volumes = self.prediction.segment_volumes_ml()
        rows += [{"region": s.name, "volume_ml": round(volumes[s.name], 2)}
                 for s in self.prediction.segments]
        return rows

    def summary(self) -> str:
        used = self.prediction.details.get("sequences_used", [])
        return f"Sequences used: {', '.join(used)}."


class BrainTumorLogic:
    def __init__(self, context: MRMLContext):
        self.context = context
        self.scene = context.scene

    def models(self) -> list[ModelChoice]:
        from oncoseg.method import demo_model_file

        return available_models(TASK.name, {"Demo ensemble (phantoms)": demo_model_file(TASK)})

    def start(self, inputs: Mapping[str, Any]) -> dict[str, sitk.Image | None]:
        """Copies of the selected volumes; empty selectors are missing sequences."""
        chosen = {role: node for role, node in inputs.items() if node is not None}
        if not chosen:
            raise InputError("inputs", "select at least one of T1, T1c, T2 and FLAIR")
        images: dict[str, sitk.Image | None] = dict.fromkeys(ROLES)
        images.update(images_from_nodes(chosen))
        return images

    def compute(self, images: Mapping[str, sitk.Image | None], parameters: BrainParameters,
                progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        from oncoseg.brain.predict import predict_brain
        from oncoseg.device import resolve_device

        prediction = predict_brain(images, parameters.model, resolve_device(parameters.device),
                                   None, progress, cancel)
        if not parameters.probabilities:
            prediction = replace(prediction, probabilities={})
        if not parameters.members:
            prediction = replace(prediction, alternatives={})
        return prediction

    def finish(self, prediction: Prediction, inputs: Mapping[str, Any],
               prefix: str = "BrainTumor2D3D") -> BrainResult:
        """The segmentation on the reference sequence's volume, its overlays and, when the
        prediction carries them, one segmentation per ensemble member; all or nothing."""
        reference = inputs[prediction.details["reference"]]
        before = set(node_ids(self.scene))
        try:
            nodes = add_prediction(self.scene, prediction, prefix, reference,
                                   display_role=prediction.display_role)
            members = [segmentation_node_from_labels(self.scene, labels, prediction.segments,
                                                     reference, f"{prefix} {name}")
                       for name, labels in prediction.alternatives.items()]
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        for node in members:  # shown on request only: the vote is the result
            node.GetDisplayNode().SetVisibility(False)
        return BrainResult(prediction, nodes, reference, members)

    def run(self, inputs: Mapping[str, Any], parameters: BrainParameters | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> BrainResult:
        parameters = parameters or BrainParameters()
        prediction = self.compute(self.start(inputs), parameters, progress, cancel)
        return self.finish(prediction, inputs)

