"""BrainTumor2D3D on volume nodes: T1, T1c, T2 and FLAIR selectors (any may be empty), the
ensemble's segmentation with the three sub-regions, optional probability overlays, a table of
region volumes, and on request each ensemble member's own segmentation for review.

:class:`BrainTumorLogic` is the :class:`~OncoSegCommonLib.tasklogic.TaskLogic` of the ``brain``
task: :meth:`start` copies the inputs (main thread), :meth:`compute` runs the engine (any
thread, no node touched) and :meth:`finish` adds the nodes all at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import SimpleITK as sitk

from oncoseg.brain.config import SEQUENCES
from oncoseg.brain.task import TASK
from oncoseg.errors import InputError
from oncoseg.geometry import voxel_volume_ml
from oncoseg.metrics import brats_regions
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.inputs import guess_inputs as common_guess_inputs
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.segmentations import segmentation_node_from_labels
from OncoSegCommonLib.tasklogic import (
    RunRequest,
    StartedRun,
    TaskLogic,
    TaskResult,
    register_logic,
)
from OncoSegCommonLib.taskrun import add_prediction

ROLES = SEQUENCES
LABELS = {"t1": "T1:", "t1c": "T1c (T1Gd):", "t2": "T2:", "flair": "FLAIR:"}


def _clash(name: str, role: str) -> bool:
    """'t1' and 't2' hide in other sequences' names (t1ce, t2_flair, t2f)."""
    return (role == "t1" and any(h in name for h in ("t1c", "t1gd", "gad", "contrast"))) or \
        (role == "t2" and any(h in name for h in ("flair", "t2f")))


def guess_inputs(scene: Any) -> dict[str, Any]:
    return common_guess_inputs(scene, TASK, _clash)


@dataclass
class BrainRequest(RunRequest):
    """A brain run: overlays shown or not, ensemble members added for review or not."""

    probabilities: bool = True  # the three sub-regions' probability overlays
    members: bool = False  # each ensemble member's segmentation too, for review


@dataclass
class BrainParameters:
    model: str = "demo"
    device: str = "auto"
    probabilities: bool = True  # the three sub-regions' probability overlays
    members: bool = False  # each ensemble member's segmentation too, for review

    def overrides(self) -> dict[str, Any]:
        """Engine settings: none from the panel (a model fixes how its ensemble runs)."""
        return {}

    def request(self) -> BrainRequest:
        return BrainRequest(self.model, self.device, self.overrides(),
                            probabilities=self.probabilities, members=self.members)


@dataclass
class BrainResult(TaskResult):
    """The vote's nodes; ``other_nodes`` holds one segmentation per ensemble member (hidden)
    when they were asked for."""

    @property
    def member_nodes(self) -> list[Any]:
        return list(self.other_nodes)

    def rows(self) -> list[dict[str, Any]]:
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


class BrainTumorLogic(TaskLogic):
    """The brain task on up to four sequence nodes."""

    tasks = (TASK.name,)
    request_type = BrainRequest
    demo_label = "Demo ensemble (phantoms)"
    prefix = "BrainTumor2D3D"

    def guess_inputs(self) -> dict[str, Any]:
        return guess_inputs(self.scene)

    def start(self, inputs: Mapping[str, Any], request: RunRequest | None = None
              ) -> StartedRun:
        """Copies of the selected volumes; empty selectors are missing sequences."""
        if all(node is None for node in inputs.values()):
            raise InputError("inputs", "select at least one of T1, T1c, T2 and FLAIR")
        return super().start(inputs, request)

    def compute(self, started: StartedRun, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        """Any thread: the ensemble's vote, without the overlays or the members' label maps
        when they were not asked for."""
        prediction = super().compute(started, progress, cancel)
        request = self.own_request(started.request)
        if not getattr(request, "probabilities", True):
            prediction = replace(prediction, probabilities={})
        if not getattr(request, "members", False):
            prediction = replace(prediction, alternatives={})
        return prediction

    def reference(self, prediction: Prediction, started: StartedRun) -> Any:
        """The node of the sequence the engine computed on (T1c unless it is missing)."""
        return started.nodes[prediction.details["reference"]]

    def add_results(self, prediction: Prediction, started: StartedRun) -> BrainResult:
        """The segmentation on the reference sequence's volume, its overlays and, when the
        prediction carries them, one segmentation per ensemble member; all or nothing."""
        reference = self.reference(prediction, started)
        prefix = self.prefix
        before = set(node_ids(self.scene))
        try:
            nodes = add_prediction(self.scene, prediction, prefix, reference,
                                   display_role=prediction.display_role,
                                   inputs=self.model_inputs(started))
            members = [segmentation_node_from_labels(self.scene, labels, prediction.segments,
                                                     reference, f"{prefix} {name}")
                       for name, labels in prediction.alternatives.items()]
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        for node in members:  # shown on request only: the vote is the result
            node.GetDisplayNode().SetVisibility(False)
        return BrainResult(prediction, nodes, reference, members)


register_logic(TASK.name, BrainTumorLogic)
