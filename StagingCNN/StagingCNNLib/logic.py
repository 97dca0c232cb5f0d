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

from oncoseg import verbs
from oncoseg.errors import InputError
from oncoseg.method import demo_model_file, model_settings
from oncoseg.modelfile import resolve_model_file
from oncoseg.prediction import Prediction
from oncoseg.staging.config import no_roi_refusal
from oncoseg.staging.task import TASK
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.lossplot import numeric_column
from OncoSegCommonLib.models import model_choice
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
    from oncoseg.export import ExportResult
    from oncoseg.staging.predict import StagingScores

SCORE_COLUMNS = ("slice", "P(T3)", "threshold")
ROI_ROLE = "roi"  # a mask volume (the task's input) or a markups ROI (its box: a hint)


@dataclass
class StagingParameters:
    model: str = "demo"
    device: str = "auto"
    tta: int | None = None  # test-time augmentation passes; None = the engine's default
    threshold: float | None = None  # None = the threshold stored in the model
    # without an ROI: None = the engine's default (refused); 'centre' = a centred square
    without_roi: str | None = None

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
        if self.without_roi is not None:
            settings["without_roi"] = self.without_roi
        return settings

    def request(self) -> RunRequest:
        """The run these parameters ask for (the ROI is an input: see :meth:`StagingLogic.
        start`)."""
        return RunRequest(self.model, self.device, self.overrides())


@dataclass
class StagingStarted(StartedRun):
    """A started staging run; ``roi_note`` says how an ROI without a size was placed (empty
    when the ROI was used as drawn, or none was given)."""

    roi_note: str = ""


@dataclass
class StagingResult(TaskResult):
    """P(T3), the stage and the slice scores; ``other_nodes`` holds the score table, the
    chart and its two series. ``roi_note``: see :class:`StagingStarted`."""

    roi_note: str = ""

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

    @property
    def calibrated(self) -> bool:
        """Whether P(T3) is a calibrated probability (the model file holds a calibration)
        or the network's own score."""
        return self.scores.calibrated

    def summary(self) -> str:
        """The stage, P(T3) and the threshold it was read at; whether P(T3) is calibrated
        (a reader takes "P(T3) = 0.51" for a probability: an uncalibrated score says so)."""
        scores = self.scores
        line = (f"{self.stage}: P(T3) = {self.p_t3:.2f} (threshold {scores.threshold:.2f}; "
                f"crop from the {scores.roi_source} ROI)")
        how = (f"P(T3) calibrated: {scores.calibration}" if scores.calibrated else
               "P(T3) uncalibrated: the network's score, not a probability")
        return "\n".join([line, how, *([self.roi_note] if self.roi_note else [])])

    def rows(self) -> list[dict[str, Any]]:
        """One row per slice: its P(T3)."""
        return [{"slice": k, "P(T3)": round(s, 3)} for k, s in enumerate(self.slice_scores)]


def report_stage(result: StagingResult, t2w_node: Any, output: str,
                 series_folder: str | None = None, overwrite: bool = False,
                 database: Any = None) -> ExportResult:
    """The stage, P(T3) and its threshold as a TID 1500 DICOM SR referencing the T2w's DICOM
    series (from ``series_folder``, or the series the node was loaded from), naming the model
    that staged it: what a PACS indexes, where a panel's text is lost."""
    from oncoseg.export import export_measurements
    from oncoseg.io.dicom import Algorithm
    from oncoseg.io.dicomsr import Staging
    from OncoSegCommonLib.export import referenced_series

    series = referenced_series(t2w_node, "a DICOM SR of its stage", series_folder,
                               database=database)
    scores = result.scores
    return export_measurements(output, series, staging=Staging(scores.p_t3, scores.threshold,
                                                               scores.stage),
                               overwrite=overwrite,
                               algorithm=Algorithm.of_model(result.prediction.model))


def roi_box_lps(roi_node: Any) -> list[float]:
    """A markups ROI (RAS, possibly rotated) as the LPS box x0 y0 z0 x1 y1 z1 that holds it."""
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    corners = np.array([ras_lps(np.array([x, y, z])) for x in bounds[0:2] for y in bounds[2:4]
                        for z in bounds[4:6]])
    return [*corners.min(axis=0).tolist(), *corners.max(axis=0).tolist()]


def _world_size(roi_node: Any) -> list[float]:
    size = [0.0] * 3
    roi_node.GetSizeWorld(size)
    return size


def roi_needs_a_size(roi_node: Any) -> bool:
    """True for a markups ROI that was never given a size: one made from the selector ("Create
    new ROI") or whose placement stopped after the first click. Its box is a point, so it is
    placed by :meth:`StagingLogic.default_roi` rather than used as is.

    Slicer itself treats a zero size as "not defined yet" (vtkMRMLMarkupsROINode.cxx,
    UpdateControlPointsFromBoxROI: ``Norm(Size) == 0`` -> no control point; v5.10.0 and
    v5.12.3), and placing an ROI with the mouse gives any flat axis the smallest other side
    (UpdateBoxROIFromControlPoints), so only a script makes a partly flat one: refused by
    :func:`check_roi_size`.
    """
    return not any(_world_size(roi_node))


def check_roi_size(roi_node: Any) -> None:
    """Refuse a markups ROI that is flat along some axis but not all (a plane, not a box)."""
    size = _world_size(roi_node)
    if any(size) and not all(side > 0 for side in size):
        shown = " x ".join(f"{side:g}" for side in size)
        raise InputError(ROI_ROLE, f"'{roi_node.GetName()}' is flat ({shown} mm): give it a "
                         "size in every direction in the slice views, round rectum and tumour")


class StagingLogic(TaskLogic):
    """The staging task on a T2w node, with a markups ROI as the crop box."""

    tasks = (TASK.name,)
    prefix = "StagingCNN"

    def start(self, inputs: Mapping[str, Any], request: RunRequest | None = None
              ) -> StartedRun:
        """Main thread: a copy of the T2w (and of an ROI mask volume); a markups ROI under
        ``roi`` becomes the LPS box the engine crops to (``Hints.roi_lps_mm``).

        No ROI at all (nor a box in the request's hints) is refused, as the engine refuses
        it, unless the request's ``without_roi=centre`` asks for the centred square. A markups
        ROI without a size (:func:`roi_needs_a_size`) is placed first (:meth:`default_roi`)
        round the point the reader clicked, after every input was checked, so a refused run
        leaves it as it was; without a point it is refused (placed at the T2w's centre only
        with ``without_roi=centre``); a flat one is refused (:func:`check_roi_size`)."""
        roi = inputs.get(ROI_ROLE)
        asked = request or RunRequest()
        if roi is None and asked.hints.roi_lps_mm is None:
            settings = self.settings(asked)
            if settings.without_roi != "centre":
                raise no_roi_refusal(settings)
        if roi is None or not roi.IsA("vtkMRMLMarkupsROINode"):
            return super().start(inputs, request)
        check_roi_size(roi)
        settings = self.settings(asked) if roi_needs_a_size(roi) else None
        if settings is not None and not roi.GetNumberOfDefinedControlPoints() and \
                settings.without_roi != "centre":
            raise InputError(ROI_ROLE, f"'{roi.GetName()}' has no size yet: place it round "
                             "rectum and tumour in the slice views (two clicks), or click once "
                             "on the tumour to have the model's crop put there")
        started = super().start({**inputs, ROI_ROLE: None}, request)
        note = ""
        if settings is not None:
            note = self.default_roi(roi, started.nodes["t2w"], settings.automatic_side_mm)
        request = started.request
        hints = verbs.check_hints(self.task, replace(request.hints,
                                                     roi_lps_mm=roi_box_lps(roi)))
        return StagingStarted({**started.nodes, ROI_ROLE: roi}, started.images,
                              replace(request, hints=hints), started.notes, roi_note=note)

    def settings(self, request: RunRequest) -> Any:
        """The settings the request's model runs with. Reads the model file's header only."""
        path = resolve_model_file(request.model, demo_model_file(self.task))
        metadata = model_choice(path, self.task.name).header.metadata
        return model_settings(self.task, metadata, request.overrides)

    def crop_side_mm(self, request: RunRequest) -> float:
        """The side of the in-plane square the request's model crops to when no ROI is given
        (:attr:`StagingConfig.automatic_side_mm`): what a default ROI is given."""
        return self.settings(request).automatic_side_mm

    def default_roi(self, roi: Any, t2w: Any, side: float) -> str:
        """Give a markups ROI without a size the model's crop (:meth:`crop_side_mm`): a
        ``side`` mm square in the axial (R-A) plane, through every slice of ``t2w``, centred
        where the user's one click put it, else on the T2w volume's centre. The node is
        changed (the views show the box used, to move for the next run); returns what the
        result says about it."""
        bounds = [0.0] * 6
        t2w.GetRASBounds(bounds)
        if roi.GetNumberOfDefinedControlPoints() > 0:
            centre = [0.0] * 3
            roi.GetCenterWorld(centre)
            where = "the point placed"
        else:
            centre = [(bounds[2 * axis] + bounds[2 * axis + 1]) / 2 for axis in range(3)]
            where = f"the centre of '{t2w.GetName()}'"
        roi.SetCenterWorld(*centre)
        roi.SetSizeWorld(side, side, bounds[5] - bounds[4])
        return (f"The ROI '{roi.GetName()}' had no size: it was placed around {where}, "
                f"{side:g} x {side:g} mm (the model's crop) through every slice. Move it onto "
                "rectum and tumour and run again for a reliable result.")

    def add_results(self, prediction: Prediction, started: StartedRun) -> StagingResult:
        """The slice-score table and chart, added together or not at all."""
        prefix = self.prefix
        before = set(node_ids(self.scene))
        try:
            scores: StagingScores = prediction.extra
            count = len(scores.slice_p_t3)
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{prefix} slice scores")
            # numbers, not AddColumn()'s strings: a plot view draws nothing from text
            for column in (numeric_column(SCORE_COLUMNS[0], range(count), integer=True),
                           numeric_column(SCORE_COLUMNS[1], scores.slice_p_t3),
                           numeric_column(SCORE_COLUMNS[2], [scores.threshold] * count)):
                table.AddColumn(column)
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
            chart.SetTitle(f"{scores.stage}: P(T3) = {scores.p_t3:.2f}"
                           f"{'' if scores.calibrated else ' (uncalibrated)'}, threshold "
                           f"{scores.threshold:.2f}")
            chart.SetXAxisTitle("slice")
            chart.SetYAxisTitle("P(T3)")
        except Exception:
            remove_nodes_added_since(self.scene, before)
            raise
        return StagingResult(prediction, PredictionNodes(), self.reference(prediction, started),
                             [table, chart, *series_nodes],
                             getattr(started, "roi_note", ""))

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
