"""RectalSeg on volume nodes: the whole run, candidate picking and comparison.

:class:`RectalSegLogic` is the :class:`~OncoSegCommonLib.tasklogic.TaskLogic` of the ``rectal``
task: the module widget and the review app call :meth:`~TaskLogic.start` (main thread: copies
the inputs), :meth:`~TaskLogic.compute` (any thread: the engine's ``predict``) and
:meth:`finish` (main thread: new nodes); :meth:`~TaskLogic.run` does the three in a row for
scripts and tests.

The diffusion images come either as two volumes (``dwi_b0``, ``dwi_b1000``) or as one node
holding every b-value (``dwi``: a MultiVolume, Sequence or DiffusionWeightedVolume node, see
:mod:`RectalSegLib.diffusion`); the engine picks b0 and the high b from the latter, and
:meth:`finish` adds the two images it picked as nodes (the segmentation's reference is the b0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.io.diffusion import B0_ROLE, DWI_ROLE, HIGH_B_ROLE, check_dwi_roles
from oncoseg.method import Hints
from oncoseg.prediction import Prediction
from oncoseg.rectal.candidates import Candidates
from oncoseg.rectal.task import TASK, TUMOUR
from OncoSegCommonLib.compare import compare_segmentations
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.inputs import guess_inputs as common_guess_inputs
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.segmentations import segment_id, set_segments_from_labels
from OncoSegCommonLib.tasklogic import (
    RunRequest,
    StartedRun,
    TaskLogic,
    TaskResult,
    register_logic,
)
from OncoSegCommonLib.taskrun import (
    add_prediction,
    images_from_nodes,
    moved_roles,
    unmoved_inputs,
)
from OncoSegCommonLib.volumes import volume_node_from_image
from RectalSegLib.diffusion import diffusion_nodes, diffusion_series_from_node, is_diffusion_node

ROLES = tuple(role.name for role in TASK.inputs)


@dataclass
class RectalSegParameters:
    """What the panel sets; the widget binds its fields to these."""

    model: str = "demo"  # 'demo' or a model file path
    device: str = "auto"
    registration: bool = True
    threshold: float = 0.5

    def overrides(self) -> dict[str, Any]:
        """Engine settings. Registration on leaves the preset to the engine, which applies the
        one the model was trained with; off resamples only."""
        settings: dict[str, Any] = {"threshold": float(self.threshold)}
        if not self.registration:
            settings["registration"] = "none"
        return settings

    def request(self, seed_ras: Sequence[float] | None = None) -> RunRequest:
        """The run these parameters ask for; ``seed_ras``: a point inside the tumour (RAS, as
        Slicer places it), the component to keep."""
        seed = None if seed_ras is None else _ras_to_lps(seed_ras)
        return RunRequest(self.model, self.device, self.overrides(), Hints(seed_lps_mm=seed))


@dataclass
class RectalSegResult(TaskResult):
    """The run's nodes and its candidate components (every component of p >= threshold)."""

    candidates: Candidates | None = None  # always set by finish

    def rows(self) -> list[dict[str, Any]]:
        """The candidate table: one row per component, largest first."""
        return self.candidates.as_dicts() if self.candidates is not None else []

    def summary(self) -> str:
        count = len(self.candidates.components) if self.candidates is not None else 0
        return f"{count} candidate(s)"


def guess_inputs(scene: Any) -> dict[str, Any]:
    """Volume nodes for each role from their names (T2, b0, b1000/b1100/high b); a node with
    every b-value (a MultiVolume is a scalar volume too) is never one of them."""
    found = common_guess_inputs(scene, TASK, _hint_clash)
    return {role: None if is_diffusion_node(node) else node for role, node in found.items()}


def guess_dwi_node(scene: Any) -> Any | None:
    """The node with every b-value: the only one in the scene, else the one whose name says
    DWI (see ``DWI_SERIES.name_hints``); None when there is no such node or no clear choice."""
    from oncoseg.rectal.task import DWI_SERIES

    found = diffusion_nodes(scene)
    if len(found) == 1:
        return found[0]
    named = [n for n in found if any(h in (n.GetName() or "").lower()
                                     for h in DWI_SERIES.name_hints)]
    return named[0] if len(named) == 1 else None


def inputs_ready(inputs: Mapping[str, Any]) -> bool:
    """T2w, and the diffusion images in one form: b0 + high b, or one node with every b."""
    separate = inputs.get(B0_ROLE) is not None and inputs.get(HIGH_B_ROLE) is not None
    together = inputs.get(DWI_ROLE) is not None
    return inputs.get("t2w") is not None and separate != together


def _hint_clash(name: str, role: str) -> bool:
    """'t2' hides in many names (e.g. 'dwi_t2_b0'); a DWI name is never the T2w."""
    return role == "t2w" and any(h in name for h in ("dwi", "b0", "b1000", "b800", "b1100", "adc"))


class RectalSegLogic(TaskLogic):
    """The rectal task on nodes, with the DWI-series input, candidates and comparison."""

    tasks = (TASK.name,)
    prefix = "RectalSeg"

    def guess_inputs(self) -> dict[str, Any]:
        return guess_inputs(self.scene)

    # ------------------------------------------------------------------ running

    def start(self, inputs: Mapping[str, Any], request: RunRequest | None = None
              ) -> StartedRun:
        """Main thread: copies of the input volumes (never modified afterwards); a node with
        every b-value (``dwi``) stands in for ``dwi_b0`` + ``dwi_b1000``, never beside them."""
        check_dwi_roles(role for role, node in inputs.items() if node is not None)
        return super().start(inputs, request)

    def images(self, nodes: Mapping[str, Any]) -> dict[str, Any]:
        """The volumes' copies; the ``dwi`` node becomes a DiffusionSeries."""
        images: dict[str, Any] = images_from_nodes(
            {role: node for role, node in nodes.items() if role != DWI_ROLE})
        if nodes.get(DWI_ROLE) is not None:
            images[DWI_ROLE] = diffusion_series_from_node(nodes[DWI_ROLE])
        return images

    def add_results(self, prediction: Prediction, started: StartedRun) -> RectalSegResult:
        """Main thread: the new nodes (registered volumes, probability map, segmentation, and
        the b0 / high-b images picked from a ``dwi`` node) and the candidate components."""
        inputs = started.nodes
        before = set(node_ids(self.scene))
        try:
            picked = self._picked_dwi_nodes(prediction, inputs)
            reference = picked[B0_ROLE] if picked else inputs[B0_ROLE]
            moved = moved_roles(prediction)
            # each sequence where the model read it (the registered ones: their new copies;
            # a 'dwi' series is no image the model read, the b-values picked from it are)
            unmoved = unmoved_inputs(moved, inputs)
            nodes = add_prediction(self.scene, prediction, self.prefix, reference, moved,
                                   display_role="t2w", inputs={**unmoved, **picked})
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        nodes.volumes.update(picked)
        return RectalSegResult(prediction, nodes, reference, candidates=prediction.extra)

    def _picked_dwi_nodes(self, prediction: Prediction, inputs: Mapping[str, Any]
                          ) -> dict[str, Any]:
        """The b0 and high-b images the engine picked from a ``dwi`` node, as new volumes."""
        dwi = prediction.details.get("dwi")
        if inputs.get(DWI_ROLE) is None or not dwi:
            return {}
        return {role: volume_node_from_image(self.scene, prediction.images[role],
                                             f"{self.prefix} DWI b={value:g}")
                for role, value in ((B0_ROLE, dwi["b0"]), (HIGH_B_ROLE, dwi["high_b"]))}

    # ------------------------------------------------------------------ candidates

    def choose_candidate(self, result: RectalSegResult, index: int) -> None:
        """Keep component ``index`` (a row of the candidate table) as the tumour."""
        known = [c.index for c in result.candidates.components]
        if index not in known:
            raise ValueError(f"there is no candidate {index} (candidates: {known})")
        result.candidates.selected = [index]
        self._write_segment(result)

    def choose_at_point(self, result: RectalSegResult, point_ras: Sequence[float]) -> int:
        """Keep the component under a placed point; returns its index."""
        from oncoseg.postprocess import component_at

        index = component_at(result.candidates.labels, result.prediction.probabilities[
            TUMOUR.name], _ras_to_lps(point_ras))
        if index == 0:
            raise ValueError("the point is not inside any candidate component")
        self.choose_candidate(result, index)
        return index

    def _write_segment(self, result: RectalSegResult) -> None:
        labels = sitk.GetImageFromArray(result.candidates.mask().astype(np.uint8) * TUMOUR.label)
        labels.CopyInformation(result.prediction.labels)
        set_segments_from_labels(result.nodes.segmentation, labels, TASK.segments)

    # ------------------------------------------------------------------ comparing

    def compare(self, result: RectalSegResult, reference_segmentation: Any,
                reference_segment_id: str | None = None) -> dict[str, float]:
        """DSC, HD95, mean surface distance and AUC against a reader's segmentation."""
        return compare_segmentations(
            result.nodes.segmentation, reference_segmentation, result.reference,
            result.nodes.probabilities.get(TUMOUR.name), segment_id(TUMOUR),
            reference_segment_id)


def _ras_to_lps(point: Sequence[float]) -> list[float]:
    return [float(v) for v in ras_lps(np.asarray(point, float))]


def default_training_output(name: str) -> Path:
    from OncoSegCommonLib.models import models_folder

    return models_folder(TASK.name) / name


register_logic(TASK.name, RectalSegLogic)
