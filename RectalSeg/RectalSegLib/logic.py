"""RectalSeg on volume nodes: the whole run, candidate picking and comparison.

The module widget calls :meth:`RectalSegLogic.start` (main thread: copies the inputs),
:meth:`compute` (any thread: the engine's ``predict``) and :meth:`finish` (main thread: new
nodes); :meth:`run` does the three in a row for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.rectal.candidates import Candidates, find_candidates
from oncoseg.rectal.pipeline import DEMO_MODEL, predict
from oncoseg.rectal.task import TASK, TUMOUR
from OncoSegCommonLib.compare import compare_segmentations
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.inputs import guess_inputs as common_guess_inputs
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.segmentations import segment_id, set_segments_from_labels
from OncoSegCommonLib.taskrun import PredictionNodes, add_prediction, images_from_nodes

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


@dataclass
class RectalSegResult:
    prediction: Prediction
    nodes: PredictionNodes
    candidates: Candidates
    reference_node: Any
    inputs: dict[str, Any] = field(default_factory=dict)

    def candidate_rows(self) -> list[dict]:
        """The candidate table: one row per component, largest first."""
        return self.candidates.as_dicts()


def guess_inputs(scene: Any) -> dict[str, Any]:
    """Volume nodes for each role from their names (T2, b0, b1000/b1100/high b)."""
    return common_guess_inputs(scene, TASK, _hint_clash)


def _hint_clash(name: str, role: str) -> bool:
    """'t2' hides in many names (e.g. 'dwi_t2_b0'); a DWI name is never the T2w."""
    return role == "t2w" and any(h in name for h in ("dwi", "b0", "b1000", "b800", "b1100", "adc"))


class RectalSegLogic:
    def __init__(self, context: MRMLContext):
        self.context = context
        self.scene = context.scene

    # ------------------------------------------------------------------ models

    def models(self) -> list[ModelChoice]:
        return available_models(TASK.name, {"Demo model (phantoms)": DEMO_MODEL})

    # ------------------------------------------------------------------ running

    def start(self, inputs: Mapping[str, Any]) -> dict[str, sitk.Image]:
        """Main thread: copies of the input volumes (never modified afterwards)."""
        return images_from_nodes({role: inputs.get(role) for role in ROLES})

    def compute(self, images: Mapping[str, sitk.Image], parameters: RectalSegParameters,
                seed_ras: Sequence[float] | None = None,
                progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        """Any thread: the engine's prediction; touches no node."""
        from oncoseg.device import resolve_device

        seed = None if seed_ras is None else _ras_to_lps(seed_ras)
        return predict(images, parameters.model, resolve_device(parameters.device),
                       parameters.overrides(), seed, progress, cancel)

    def finish(self, prediction: Prediction, inputs: Mapping[str, Any],
               prefix: str = "RectalSeg") -> RectalSegResult:
        """Main thread: the new nodes (registered volumes, probability map, segmentation)."""
        reference = inputs["dwi_b0"]
        moved = [role for role, done in prediction.details["registration"].items()
                 if done.get("method") != "same grid"]
        nodes = add_prediction(self.scene, prediction, prefix, reference, moved,
                               display_role="t2w")
        probability = prediction.probabilities[TUMOUR.name]
        config = prediction.details["config"]
        candidates = find_candidates(probability, config["threshold"], config["keep"],
                                     prediction.details.get("seed_lps_mm"),
                                     config["connectivity"])
        return RectalSegResult(prediction, nodes, candidates, reference, dict(inputs))

    def run(self, inputs: Mapping[str, Any], parameters: RectalSegParameters | None = None,
            seed_ras: Sequence[float] | None = None, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> RectalSegResult:
        images = self.start(inputs)
        prediction = self.compute(images, parameters or RectalSegParameters(), seed_ras,
                                  progress, cancel)
        return self.finish(prediction, inputs)

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
            result.nodes.segmentation, reference_segmentation, result.reference_node,
            result.nodes.probabilities.get(TUMOUR.name), segment_id(TUMOUR),
            reference_segment_id)


def _ras_to_lps(point: Sequence[float]) -> list[float]:
    return [float(v) for v in ras_lps(np.asarray(point, float))]


def default_training_output(name: str) -> Path:
    from OncoSegCommonLib.models import models_folder

    return models_folder(TASK.name) / name
