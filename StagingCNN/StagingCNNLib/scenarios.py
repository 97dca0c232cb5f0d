"""What StagingCNN must do on a scene, written once for pytest on slicer-core and for
StagingCNNTest in the application. Each takes an MRML context and a scratch folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.verbs import phantom
from OncoSegCommonLib.checks import (
    cancelling_mid_run_changes_nothing,
    plotted_points,
    refused_without_change,
)
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.volumes import volume_node_from_image
from StagingCNNLib.logic import StagingLogic, StagingParameters, roi_needs_a_size

PHANTOM_SEED = 4343  # not a seed the demo model trained on
FAST = StagingParameters(tta=2).request()
CENTRE = StagingParameters(tta=2, without_roi="centre").request()  # a centred square asked for


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
    # the shipped demo holds a calibration: the panel says so, with the threshold read at
    assert result.calibrated and result.prediction.details["calibrated"]
    assert "P(T3) calibrated: Platt scaling" in result.summary(), result.summary()
    assert f"threshold {result.scores.threshold:.2f}" in result.summary()
    assert "threshold" in result.chart.GetTitle()
    assert [r["slice"] for r in result.rows()] == list(range(slices))
    assert result.nodes.segmentation is None and len(result.all_nodes()) == 4  # table, chart,
    assert {result.table, result.chart} <= set(result.all_nodes())  # and the two series
    slice_scores_are_plotted(result)


def slice_scores_are_plotted(result) -> None:
    """The table's columns are numbers (a plot view draws nothing from AddColumn()'s strings)
    and each series of the chart, read back as the view reads it, holds the slice scores."""
    table = result.table.GetTable()
    assert [table.GetColumn(c).GetClassName() for c in range(table.GetNumberOfColumns())] == \
        ["vtkIntArray", "vtkDoubleArray", "vtkDoubleArray"], "the score table holds no numbers"
    slices = [float(k) for k in range(len(result.slice_scores))]
    plotted = {}
    for index in range(result.chart.GetNumberOfPlotSeriesNodes()):
        series = result.chart.GetNthPlotSeriesNode(index)
        plotted[series.GetYColumnName()] = plotted_points(series)
    assert set(plotted) == {"P(T3)", "threshold"}, plotted
    xs, ys = plotted["P(T3)"]
    assert xs == slices and np.allclose(ys, result.slice_scores, atol=1e-9), (xs, ys)
    xs, ys = plotted["threshold"]
    assert xs == slices and np.allclose(ys, result.scores.threshold), ys


def without_an_roi_the_run_is_refused_unless_the_centre_is_asked_for(context: MRMLContext,
                                                                     folder: Path) -> None:
    """A square at the T2w's centre misses rectum and tumour on a pelvic field of view (the
    demo called every T2 phantom T3 so): no ROI is refused, changing nothing, unless the
    request asks for the centred square, which the result then names."""
    t2w, _, _ = load_phantom(context, folder)
    refused_without_change(context, lambda: StagingLogic(context).run(
        {"t2w": t2w, "roi": None}, FAST), InputError, "roi: none was given")
    result = StagingLogic(context).run({"t2w": t2w, "roi": None}, CENTRE)
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
    refused_without_change(context, lambda: StagingLogic(context).jump_to_slice(result, 999),
                           ValueError, "not a slice")


def an_roi_outside_the_image_changes_nothing(context: MRMLContext, folder: Path) -> None:
    t2w, _, _ = load_phantom(context, folder)
    far = roi_node(context, [400.0, 400.0, 400.0, 450.0, 450.0, 450.0])
    refused_without_change(context, lambda: StagingLogic(context).run(
        {"t2w": t2w, "roi": far}, FAST), InputError, "outside the t2w image")


def an_roi_without_a_size_gets_the_models_crop(context: MRMLContext, folder: Path) -> None:
    """A new ROI from the selector has no size: refused, unchanged, with how to place it;
    with the centred square asked for, it is placed around the T2w's centre with the model's
    crop (every slice), the run crops to it and says so; an ROI whose placement stopped
    after one click keeps that point as its centre."""
    t2w, _, _ = load_phantom(context, folder)
    logic = StagingLogic(context)
    side = logic.crop_side_mm(FAST)
    fresh = context.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "New ROI")
    assert roi_needs_a_size(fresh)
    refused_without_change(context, lambda: logic.run({"t2w": t2w, "roi": fresh}, FAST),
                           InputError, "'New ROI' has no size yet")
    assert roi_needs_a_size(fresh)
    result = logic.run({"t2w": t2w, "roi": fresh}, CENTRE)
    bounds = [0.0] * 6
    t2w.GetRASBounds(bounds)
    centre, size = [0.0] * 3, [0.0] * 3
    fresh.GetCenterWorld(centre)
    fresh.GetSizeWorld(size)
    assert np.allclose(centre, [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)])
    assert np.allclose(size, [side, side, bounds[5] - bounds[4]]), size
    assert not roi_needs_a_size(fresh)
    assert result.prediction.details["roi"]["source"] == "box"
    assert "'New ROI' had no size" in result.summary(), result.summary()
    assert "the centre of 'Rectum T2w'" in result.roi_note
    # the box is the engine's own automatic square: the same crop, to a voxel
    automatic = logic.run({"t2w": t2w, "roi": None}, CENTRE).prediction.details["roi"]
    crop = result.prediction.details["roi"]["crop_voxels"]
    for axis in ("x", "y"):
        assert np.allclose(crop[axis], automatic["crop_voxels"][axis], atol=1), (crop, automatic)
    clicked = context.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Clicked ROI")
    point = [c + 5.0 for c in centre]
    clicked.AddControlPoint(*point)  # the first of the two clicks that place a box
    assert roi_needs_a_size(clicked)
    result = logic.run({"t2w": t2w, "roi": clicked}, FAST)
    clicked.GetCenterWorld(centre)
    assert np.allclose(centre, point) and "around the point placed" in result.roi_note


def a_flat_roi_is_refused_and_changes_nothing(context: MRMLContext, folder: Path) -> None:
    t2w, roi, _ = load_phantom(context, folder)
    roi.SetSize(40.0, 0.0, 30.0)
    refused_without_change(context, lambda: StagingLogic(context).run(
        {"t2w": t2w, "roi": roi}, FAST), InputError, "'Rectum ROI' is flat (40 x 0 x 30 mm)")
    assert list(roi.GetSize()) == [40.0, 0.0, 30.0]


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    t2w, roi, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: StagingLogic(context).run(
            {"t2w": t2w, "roi": roi}, FAST, progress=progress, cancel=cancel), stage="Staging")


def the_stage_is_reported_as_a_dicom_sr(context: MRMLContext, folder: Path) -> None:
    """The staged T2w's series gets a TID 1500 report: the cT category, P(T3) and the
    threshold, referencing the series' images and naming the model; an existing file is
    replaced only when asked, and without a series nothing is written."""
    import pydicom

    from oncoseg.io.dicom import Patient, write_ct_series
    from OncoSegCommonLib.export import SERIES_FOLDER_ATTRIBUTE
    from StagingCNNLib.logic import report_stage

    t2w, roi, case = load_phantom(context, folder / "phantom")
    result = StagingLogic(context).run({"t2w": t2w, "roi": roi}, FAST)
    output = folder / "stage-sr.dcm"
    try:
        report_stage(result, t2w, str(output))
        raise AssertionError("a T2w without a DICOM series was reported")
    except InputError as error:
        assert "needs the folder of its DICOM series" in str(error)
    assert not output.exists()
    series = folder / "series"  # the T2w as a DICOM series (the writer at hand writes CT)
    write_ct_series(case.read("t2w"), series, Patient("P1", "Phantom^T2"), "T2w")
    t2w.SetAttribute(SERIES_FOLDER_ATTRIBUTE, str(series))
    report_stage(result, t2w, str(output))
    ds = pydicom.dcmread(output)
    assert ds.Modality == "SR"
    values = {}
    for item in _walk(ds.ContentSequence):
        if item.ValueType == "NUM":
            measured = item.MeasuredValueSequence[0]
            values[item.ConceptNameCodeSequence[0].CodeValue] = float(measured.NumericValue)
    assert abs(values["P-cT3"] - result.p_t3) < 1e-9
    assert abs(values["cT3-threshold"] - result.scores.threshold) < 1e-9
    [equipment] = ds.ContributingEquipmentSequence
    assert equipment.ManufacturerModelName == result.prediction.model["file"]
    try:
        report_stage(result, t2w, str(output))
        raise AssertionError("an existing report was replaced unasked")
    except InputError:
        pass
    report_stage(result, t2w, str(output), overwrite=True)


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


ALL = (staging_gives_p_t3_and_a_slice_plot, the_stage_is_reported_as_a_dicom_sr,
       without_an_roi_the_run_is_refused_unless_the_centre_is_asked_for,
       clicking_a_slice_moves_the_views_there, an_roi_outside_the_image_changes_nothing,
       an_roi_without_a_size_gets_the_models_crop, a_flat_roi_is_refused_and_changes_nothing,
       cancelling_leaves_the_scene_unchanged)
