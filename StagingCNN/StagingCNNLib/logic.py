"""StagingCNN on a T2w volume node: P(T3) with the predicted stage, and the slice-wise scores as
a Slicer plot whose points lead the slice views to their slice.

:class:`StagingLogic` is the :class:`~OncoSegCommonLib.tasklogic.TaskLogic` of the ``staging``
task: :meth:`start` copies the inputs and turns a markups ROI into the box the engine crops to
(main thread), :meth:`~TaskLogic.compute` runs the engine (any thread, no node touched) and
:meth:`finish` adds the score table and chart at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from oncoseg.prediction import Prediction
from oncoseg.staging.task import TASK
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.tasklogic import (
    RunRequest,
    StartedRun,
    TaskLogic,
    TaskResult,
    register_logic,
)
from OncoSegCommonLib.taskrun import PredictionNodes

if TYPE_CHECKING:
    from oncoseg.staging.predict import StagingScores

SCORE_COLUMNS = ("slice", "P(T3)", "threshold")
ROI_ROLE = "roi"  # a mask volume (the task's input) or a markups ROI (its box: a hint)


@dataclass
class StagingParameters:
    model: str = "demo"
    device: str = "auto"
    tta: int | None = None  # test-time augmentation passes; None = the engine's default
    threshold: float | None = None  # None = the threshold stored in the model

    def __post_init__(self) -> None:
        if self.tta is not None and self.tta < 1:
            raise ValueError(f"test-time augmentation needs at least 1 pass (got {self.tta})")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"the threshold must lie between 0 and 1 (got {self.threshold})")

    def overrides(self) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if self.tta is not None:
            settings["tta"] = self.tta
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        return settings

    def request(self) -> RunRequest:
        """The run these parameters ask for (the ROI is an input: see :meth:`StagingLogic.
        start`)."""
        return RunRequest(self.model, self.device, self.overrides())


@dataclass
class StagingResult(TaskResult):
    """P(T3), the stage and the slice scores; ``other_nodes`` holds the score table, the
    chart and its two series."""

    @property
    def table(self) -> Any:
        """vtkMRMLTableNode: slice, P(T3), threshold."""
        return self.other_nodes[0]

    @property
    def chart(self) -> Any:
        """vtkMRMLPlotChartNode of the slice scores and the threshold."""
        return self.other_nodes[1]

    @property
    def scores(self) -> StagingScores:
        return self.prediction.extra

    @property
    def stage(self) -> str:
        return self.scores.stage

    @property
    def p_t3(self) -> float:
        return self.scores.p_t3

    @property
    def slice_scores(self) -> list[float]:
        return list(self.scores.slice_p_t3)

    def summary(self) -> str:
        return (f"{self.stage}: P(T3) = {self.p_t3:.2f} (threshold "
                f"{self.scores.threshold:.2f}; crop from the {self.scores.roi_source} ROI)")

    def rows(self) -> list[dict[str, Any]]:
        """One row per slice: its P(T3)."""
        return [{"slice": k, "P(T3)": round(s, 3)} for k, s in enumerate(self.slice_scores)]


def roi_box_lps(roi_node: Any) -> list[float]:
    """A markups ROI (RAS, possibly rotated) as the LPS box x0 y0 z0 x1 y1 z1 that holds it."""
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    corners = np.array([ras_lps(np.array([x, y, z])) for x in bounds[0:2] for y in bounds[2:4]
                        for z in bounds[4:6]])
    return [*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()]


def _ijk_to_ras(volume_node: Any) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


class StagingLogic(TaskLogic):
    """The staging task on a T2w node, with a markups ROI as the crop box."""

    tasks = (TASK.name,)
    prefix = "StagingCNN"

    def start(self, inputs: Mapping[str, Any], request: RunRequest | None = None
              ) -> StartedRun:
        """Main thread: a copy of the T2w (and of an ROI mask volume); a markups ROI under
        ``roi`` becomes the LPS box the engine crops to (``Hints.roi_lps_mm``)."""
        roi = inputs.get(ROI_ROLE)
        if roi is None or not roi.IsA("vtkMRMLMarkupsROINode"):
            return super().start(inputs, request)
        request = self.own_request(request)
        request = replace(request, hints=replace(request.hints, roi_lps_mm=roi_box_lps(roi)))
        started = super().start({**inputs, ROI_ROLE: None}, request)
        started.nodes[ROI_ROLE] = roi
        return started

    def finish(self, prediction: Prediction, started: StartedRun) -> StagingResult:
        """The slice-score table and chart, added together or not at all."""
        prefix = self.prefix
        before = set(node_ids(self.scene))
        try:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{prefix} slice scores")
            for name in SCORE_COLUMNS:
                column = table.AddColumn()
                column.SetName(name)
            scores: StagingScores = prediction.extra
            threshold = scores.threshold
            for index, score in enumerate(scores.slice_p_t3):
                row = table.AddEmptyRow()
                for column, value in enumerate((index, score, threshold)):
                    table.SetCellText(row, column, f"{value:g}")
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{prefix} chart")
            series_nodes = []
            for column, colour, kind in (("P(T3)", (0.8, 0.2, 0.2), "PlotTypeScatter"),
                                         ("threshold", (0.5, 0.5, 0.5), "PlotTypeLine")):
                series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode",
                                                      f"{prefix} {column}")
                series.SetAndObserveTableNodeID(table.GetID())
                series.SetXColumnName("slice")
                series.SetYColumnName(column)
                series.SetPlotType(getattr(series, kind))
                series.SetColor(*colour)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
                series_nodes.append(series)
            chart.SetTitle(f"{scores.stage}: P(T3) = {scores.p_t3:.2f}")
            chart.SetXAxisTitle("slice")
            chart.SetYAxisTitle("P(T3)")
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        return StagingResult(prediction, PredictionNodes(), self.reference(prediction, started),
                             [table, chart, *series_nodes])

    def jump_to_slice(self, result: StagingResult, index: int) -> list[float]:
        """Centre every slice view on slice ``index`` of the T2w (a click on the plot)."""
        import slicer

        if not 0 <= index < len(result.slice_scores):
            raise ValueError(f"slice {index} is not a slice of the volume "
                             f"(0-{len(result.slice_scores) - 1})")
        # the network's axial slices, wherever they lie in the node's own voxel order
        x, y, z = result.scores.slice_centres_lps_mm[index]
        ras = [-x, -y, z]
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, *ras,
                                              slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        return ras


register_logic(TASK.name, StagingLogic)
