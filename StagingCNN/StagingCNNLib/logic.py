"""StagingCNN on a T2w volume node: P(T3) with the predicted stage, and the slice-wise scores as
a Slicer plot whose points lead the slice views to their slice.

As in the other modules, :meth:`start` copies the inputs (main thread), :meth:`compute` runs the
engine (any thread, no node touched) and :meth:`finish` adds the score table and chart at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.method import demo_model_file
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.staging.predict import predict_staging
from oncoseg.staging.task import TASK
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.models import ModelChoice, available_models
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.taskrun import images_from_nodes

SCORE_COLUMNS = ("slice", "P(T3)", "threshold")


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

    def engine_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if self.tta is not None:
            settings["tta"] = self.tta
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        return settings


@dataclass
class StagingResult:
    prediction: Prediction
    reference_node: Any
    table: Any  # vtkMRMLTableNode: slice, P(T3), threshold
    chart: Any  # vtkMRMLPlotChartNode

    @property
    def stage(self) -> str:
        return self.prediction.details["stage"]

    @property
    def p_t3(self) -> float:
        return self.prediction.details["p_t3"]

    @property
    def slice_scores(self) -> list[float]:
        return self.prediction.details["slice_p_t3"]

    def summary(self) -> str:
        details = self.prediction.details
        return (f"{self.stage}: P(T3) = {self.p_t3:.2f} (threshold {details['threshold']:.2f}; "
                f"crop from the {details['roi']['source']} ROI)")


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


class StagingLogic:
    def __init__(self, context: MRMLContext):
        self.context = context
        self.scene = context.scene

    def models(self) -> list[ModelChoice]:
        return available_models(TASK.name, {"Demo model (phantoms)": demo_model_file(TASK)})

    def start(self, t2w_node: Any, roi_node: Any | None = None
              ) -> tuple[dict[str, sitk.Image], list[float] | None]:
        images = images_from_nodes({"t2w": t2w_node})
        return images, roi_box_lps(roi_node) if roi_node is not None else None

    def compute(self, images: dict[str, sitk.Image], roi_box: list[float] | None,
                parameters: StagingParameters, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Prediction:
        from oncoseg.device import resolve_device

        return predict_staging(images, parameters.model, resolve_device(parameters.device),
                               parameters.engine_settings(), progress, cancel, roi_box)

    def finish(self, prediction: Prediction, t2w_node: Any,
               prefix: str = "StagingCNN") -> StagingResult:
        """The slice-score table and chart, added together or not at all."""
        before = set(node_ids(self.scene))
        try:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{prefix} slice scores")
            for name in SCORE_COLUMNS:
                column = table.AddColumn()
                column.SetName(name)
            threshold = prediction.details["threshold"]
            for index, score in enumerate(prediction.details["slice_p_t3"]):
                row = table.AddEmptyRow()
                for column, value in enumerate((index, score, threshold)):
                    table.SetCellText(row, column, f"{value:g}")
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{prefix} chart")
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
            chart.SetTitle(f"{prediction.details['stage']}: P(T3) = "
                           f"{prediction.details['p_t3']:.2f}")
            chart.SetXAxisTitle("slice")
            chart.SetYAxisTitle("P(T3)")
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        return StagingResult(prediction, t2w_node, table, chart)

    def run(self, t2w_node: Any, roi_node: Any | None = None,
            parameters: StagingParameters | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> StagingResult:
        images, roi_box = self.start(t2w_node, roi_node)
        prediction = self.compute(images, roi_box, parameters or StagingParameters(), progress,
                                  cancel)
        return self.finish(prediction, t2w_node)

    def jump_to_slice(self, result: StagingResult, index: int) -> list[float]:
        """Centre every slice view on slice ``index`` of the T2w (a click on the plot)."""
        import slicer

        if not 0 <= index < len(result.slice_scores):
            raise ValueError(f"slice {index} is not a slice of the volume "
                             f"(0-{len(result.slice_scores) - 1})")
        # the network's axial slices, wherever they lie in the node's own voxel order
        x, y, z = result.prediction.details["slice_centres_lps_mm"][index]
        ras = [-x, -y, z]
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, *ras,
                                              slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        return ras
