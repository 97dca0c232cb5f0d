"""What StagingCNN must do on a scene, written once for pytest on slicer-core and for
StagingCNNTest in the application. Each takes an MRML context and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.verbs import phantom
from OncoSegCommonLib.checks import cancelling_mid_run_changes_nothing
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.volumes import volume_node_from_image
from StagingCNNLib.logic import StagingLogic, StagingParameters

PHANTOM_SEED = 4343  # not a seed the demo model trained on
FAST = StagingParameters(tta=2).request()


def load_phantom(context: MRMLContext, folder: Path):
    """A T2w phantom as a volume node and a markups ROI around rectum and tumour."""
    phantom("staging", folder, cases=1, seed=PHANTOM_SEED)
    case = read_dataset(folder).cases[0]
    t2w = volume_node_from_image(context.scene, case.read("t2w"), "Rectum T2w")
    return t2w, roi_node(context, case.info["roi_lps_mm"]), case


def roi_node(context: MRMLContext, box_lps: list[float]):
    low, high = np.asarray(box_lps[:3]), np.asarray(box_lps[3:])
    node = context.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Rectum ROI")
    node.SetCenter(*ras_lps((low + high) / 2))
    node.SetSize(*(high - low))
    return node


def staging_gives_p_t3_and_a_slice_plot(context: MRMLContext, folder: Path) -> None:
    t2w, roi, _ = load_phantom(context, folder)
    result = StagingLogic(context).run({"t2w": t2w, "roi": roi}, FAST)
    assert result.stage in ("T2", "T3") and 0.0 <= result.p_t3 <= 1.0
    assert result.prediction.details["roi"]["source"] == "box"
    slices = t2w.GetImageData().GetDimensions()[2]
    assert result.table.GetNumberOfRows() == slices == len(result.slice_scores)
    assert result.chart.GetNumberOfPlotSeriesNodes() == 2
    assert "P(T3)" in result.summary()
    assert [r["slice"] for r in result.rows()] == list(range(slices))
    assert result.nodes.segmentation is None and len(result.all_nodes()) == 4  # table, chart,
    assert {result.table, result.chart} <= set(result.all_nodes())  # and the two series


def without_an_roi_the_crop_is_automatic_and_said(context: MRMLContext, folder: Path) -> None:
    t2w, _, _ = load_phantom(context, folder)
    result = StagingLogic(context).run({"t2w": t2w, "roi": None}, FAST)
    assert result.prediction.details["roi"]["source"] == "automatic"
    assert any("no ROI given" in m for m in result.prediction.messages)


def clicking_a_slice_moves_the_views_there(context: MRMLContext, folder: Path) -> None:
    t2w, roi, _ = load_phantom(context, folder)
    result = StagingLogic(context).run({"t2w": t2w, "roi": roi}, FAST)
    red = context.scene.GetFirstNodeByClass("vtkMRMLSliceNode")
    if red is None:  # headless scenes have no views
        red = context.scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
        red.SetLayoutName("Red")
        red.SetOrientationToAxial()
    ras = StagingLogic(context).jump_to_slice(result, 5)
    matrix = red.GetSliceToRAS()
    assert abs(matrix.GetElement(2, 3) - ras[2]) < 1e-3, (matrix.GetElement(2, 3), ras)
    try:
        StagingLogic(context).jump_to_slice(result, 999)
    except ValueError as error:
        assert "not a slice" in str(error)
    else:
        raise AssertionError("slice 999 was accepted")


def an_roi_outside_the_image_changes_nothing(context: MRMLContext, folder: Path) -> None:
    t2w, _, _ = load_phantom(context, folder)
    far = roi_node(context, [400.0, 400.0, 400.0, 450.0, 450.0, 450.0])
    before = context.node_names()
    try:
        StagingLogic(context).run({"t2w": t2w, "roi": far}, FAST)
    except InputError as error:
        assert "outside the t2w image" in str(error)
    else:
        raise AssertionError("an ROI outside the image was accepted")
    assert context.node_names() == before


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    t2w, roi, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: StagingLogic(context).run(
            {"t2w": t2w, "roi": roi}, FAST, progress=progress, cancel=cancel), stage="Staging")


ALL = (staging_gives_p_t3_and_a_slice_plot, without_an_roi_the_crop_is_automatic_and_said,
       clicking_a_slice_moves_the_views_there, an_roi_outside_the_image_changes_nothing,
       cancelling_leaves_the_scene_unchanged)
