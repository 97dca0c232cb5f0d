"""Checks the modules' scenarios share (pytest on slicer-core and the in-app tests).

Every scenario runs through :func:`run_scenario`, which fails when VTK or MRML logged an error or
a warning during it: a deprecated call (``SetNamesInitialised`` since Slicer 5.10), a table cell
read out of range, ... only print to the console or Slicer's error log and never raise, so a
scenario that passes its own asserts would hide them. :func:`plotted_points` reads a plot
series back as Slicer's plot view reads it, for the same reason: an empty plot raises nothing.

:data:`COMMON_SCENARIOS` are the shared library's own scenarios (volumes, segmentations,
probability overlays, the loss plot), which OncoSegCommonTest runs in the application.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncoseg.errors import Cancelled
from oncoseg.progress import CancelToken, ProgressCallback
from OncoSegCommonLib.context import MRMLContext

Scenario = Callable[[MRMLContext, Path], object]


def cancelling_mid_run_changes_nothing(
        context: MRMLContext, run: Callable[[ProgressCallback, CancelToken], object],
        stage: str = "Segmenting") -> None:
    """``run(progress, cancel)`` is cancelled when it reports ``stage``; the scene's nodes
    (classes and names) must be exactly those before the run."""
    before = context.node_names()
    token = CancelToken()

    def cancel_at_stage(event):
        if event.stage == stage:
            token.cancel()

    try:
        run(cancel_at_stage, token)
    except Cancelled:
        pass
    else:
        raise AssertionError(f"the run was not cancelled at '{stage}'")
    after = context.node_names()
    assert after == before, f"the scene changed: {sorted(set(after) - set(before))}"


def refused_without_change(context: MRMLContext, run: Callable[[], object],
                           error: type[Exception], *words: str) -> None:
    """``run()`` must raise ``error`` whose message holds every one of ``words`` (the input
    named, what is wrong), and leave the scene's nodes exactly as they were."""
    before = context.node_names()
    try:
        run()
    except error as raised:
        missing = [w for w in words if w not in str(raised)]
        assert not missing, f"{raised!r} does not say {missing}"
    else:
        raise AssertionError(f"accepted, where {error.__name__} ({', '.join(words)}) was due")
    after = context.node_names()
    assert after == before, f"the scene changed: {sorted(set(after) - set(before))}"


def plotted_points(series: Any) -> tuple[list[float], list[float]]:
    """The (x, y) points Slicer's plot view draws for a vtkMRMLPlotSeriesNode, read back
    through the series' table node and column names the way the view reads them; fails, saying
    why, where the view would draw nothing.

    The rule is ``qMRMLPlotViewPrivate::updatePlotFromPlotSeriesNode``
    (Libs/MRML/Widgets/qMRMLPlotView.cxx, v5.10.0 to v5.12.3): no table or no Y column -> no
    plot; a string or bit Y column -> no plot; a scatter series
    (``vtkMRMLPlotSeriesNode::IsXColumnRequired``) needs an X column that is neither, any other
    type plots Y against the row index.
    """
    import vtk

    name = series.GetName()
    table_node = series.GetTableNode()
    table = table_node.GetTable() if table_node is not None else None
    if table is None:
        raise AssertionError(f"plot series '{name}' has no table")

    def numbers(column_name: str, axis: str) -> list[float]:
        column = table.GetColumnByName(column_name) if column_name else None
        if column is None:
            raise AssertionError(f"plot series '{name}': its table has no {axis} column "
                                 f"'{column_name}'")
        if column.GetDataType() in (vtk.VTK_STRING, vtk.VTK_BIT):
            raise AssertionError(f"plot series '{name}': {axis} column '{column_name}' is a "
                                 f"{column.GetClassName()}; Slicer's plot view draws nothing "
                                 "from it")
        return [float(column.GetTuple1(row)) for row in range(column.GetNumberOfTuples())]

    y = numbers(series.GetYColumnName(), "Y")
    if series.IsXColumnRequired():
        return numbers(series.GetXColumnName(), "X"), y
    return [float(row) for row in range(len(y))], y


@dataclass(frozen=True)
class LoggedMessage:
    """One message VTK's output window received: ``level`` is "error" or "warning"."""

    level: str
    text: str

    def __str__(self) -> str:
        # "ERROR: In file, line N\nclass (0x...): what" on one line
        return " ".join(self.text.split())


@contextmanager
def vtk_messages() -> Iterator[list[LoggedMessage]]:
    """The VTK/MRML errors and warnings logged inside the block, in order.

    VTK's macros (vtkErrorMacro, vtkWarningMacro, vtkGenericWarningMacro) write to the
    ``vtkOutputWindow`` instance. Slicer's is CTK's ``ctkVTKOutputWindow``, which overrides
    ``DisplayErrorText`` to fill the error log and invokes no event (CTK
    Libs/Visualization/VTK/Core/ctkVTKErrorLogMessageHandler.cpp; installed by
    Base/QTGUI/qSlicerApplication.cxx at v5.10.0), so observing it would see nothing: a
    ``vtkStringOutputWindow`` stands in for the block instead (its base class invokes
    ErrorEvent / WarningEvent from DisplayErrorText / DisplayWarningText /
    DisplayGenericWarningText), and on leaving, the previous window gets back the instance
    and every message, so Slicer's error log (or the console) still shows them.
    """
    import vtk

    previous = vtk.vtkOutputWindow.GetInstance()
    capture = vtk.vtkStringOutputWindow()
    messages: list[LoggedMessage] = []

    def observer(level: str):
        @vtk.calldata_type(vtk.VTK_STRING)
        def record(_caller, _event, text):
            messages.append(LoggedMessage(level, str(text)))
        return record

    capture.AddObserver(vtk.vtkCommand.ErrorEvent, observer("error"))
    capture.AddObserver(vtk.vtkCommand.WarningEvent, observer("warning"))
    vtk.vtkOutputWindow.SetInstance(capture)
    try:
        yield messages
    finally:
        vtk.vtkOutputWindow.SetInstance(previous)
        for message in messages:
            if message.level == "error":
                previous.DisplayErrorText(message.text)
            else:
                previous.DisplayWarningText(message.text)


def run_scenario(scenario: Scenario, context: MRMLContext, folder: Path) -> object:
    """``scenario(context, folder)``, failing when VTK or MRML logged an error or a warning
    during it (each listed); returns what the scenario returns."""
    with vtk_messages() as messages:
        outcome = scenario(context, folder)
    if messages:
        listed = "\n".join(f"- {message}" for message in messages)
        raise AssertionError(f"{scenario.__name__} logged {len(messages)} VTK/MRML "
                             f"error(s) or warning(s):\n{listed}")
    return outcome


def run_scenarios_in_app(scenarios: Sequence[Scenario], show: Callable[[str], object]) -> None:
    """Each scenario on the application's cleared scene with its own scratch folder, Slicer's
    error log free of VTK/MRML errors and warnings while it runs (:func:`run_scenario`);
    ``show`` is the test case's ``delayDisplay``. What every ``<Name>Test.runTest`` does."""
    import tempfile

    import slicer

    with tempfile.TemporaryDirectory() as folder:
        for scenario in scenarios:
            show(scenario.__name__)
            slicer.mrmlScene.Clear(0)
            run_scenario(scenario, MRMLContext.from_application(),
                         Path(folder) / scenario.__name__)


# ------------------------------------------------------------------ OncoSegCommonLib's scenarios
# What the shared library must do on a scene, written once: pytest runs them on slicer-core
# (Testing/mrml/test_common_scenarios.py) and OncoSegCommonTest in the application, each through
# run_scenario. Small images made here: the application has none of the tests' helpers.


def _oblique_image(values: Any, spacing: Sequence[float] = (0.8, 1.3, 3.5)) -> Any:
    """``values`` (z, y, x) on an oblique, left-right flipped LPS grid."""
    import numpy as np
    import SimpleITK as sitk

    ax, ay, az = 0.3, -0.2, 0.5
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    image = sitk.GetImageFromArray(np.asarray(values))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin((-12.5, 30.25, 7.0))
    image.SetDirection(tuple((rz @ ry @ rx @ np.diag([-1.0, 1.0, 1.0])).ravel()))
    return image


def _same_image(a: Any, b: Any, what: str) -> None:
    import numpy as np
    import SimpleITK as sitk

    assert a.GetSize() == b.GetSize(), (what, a.GetSize(), b.GetSize())
    for name in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(a, name)(), getattr(b, name)(), atol=1e-6), (what, name)
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)), what


def a_volume_keeps_its_voxels_and_geometry(context: MRMLContext, folder: Path) -> None:
    """An oblique, flipped LPS image -> a volume node -> the same image; the node places each
    voxel at the RAS point of the image's LPS point (RAS = LPS with x and y negated)."""
    import numpy as np
    import vtk

    from OncoSegCommonLib.volumes import image_from_volume_node, volume_node_from_image

    values = np.arange(6 * 9 * 11, dtype=np.int16).reshape(6, 9, 11) - 200
    image = _oblique_image(values)
    node = volume_node_from_image(context.scene, image, "OncoSeg check volume")
    _same_image(image_from_volume_node(node), image, "volume node")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = matrix.MultiplyPoint((10.0, 2.0, 5.0, 1.0))[:3]
    lps = image.TransformIndexToPhysicalPoint((10, 2, 5))
    assert np.allclose(ras, (-lps[0], -lps[1], lps[2]), atol=1e-6), (ras, lps)


def labels_cross_a_segmentation_node(context: MRMLContext, folder: Path) -> None:
    """A label map -> a segmentation node with one segment per spec (names, colours,
    terminology; an empty one too) -> the same label map, adding only the segmentation and
    its display node."""
    import numpy as np
    import SimpleITK as sitk

    from oncoseg.tasks import SegmentSpec
    from oncoseg.terminology import Code, Terminology
    from OncoSegCommonLib.segmentations import (
        labels_from_segmentation_node,
        segment_id,
        segmentation_node_from_labels,
    )
    from OncoSegCommonLib.volumes import volume_node_from_image

    bladder = Terminology(Code("SCT", "123037004", "Anatomical Structure"),
                          Code("SCT", "89837001", "Urinary bladder"))
    specs = (SegmentSpec(1, "Femoral head L", (0.9, 0.8, 0.3)),
             SegmentSpec(3, "Bladder", (0.85, 0.65, 0.25), bladder),
             SegmentSpec(7, "Nodal CTV", (0.3, 0.6, 0.9)))  # left empty on purpose
    reference = _oblique_image(np.zeros((6, 10, 12), np.int16))
    volume = volume_node_from_image(context.scene, reference, "OncoSeg check reference")
    array = np.zeros((6, 10, 12), np.uint8)
    array[1:3, 2:6, 2:7] = 1
    array[3:5, 5:8, 6:10] = 3
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(reference)
    before = context.scene.GetNumberOfNodes()
    node = segmentation_node_from_labels(context.scene, labels, specs, volume,
                                         "OncoSeg check segmentation")
    assert context.scene.GetNumberOfNodes() - before == 2, context.node_names()
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName()
            for i in range(segmentation.GetNumberOfSegments())] == [s.name for s in specs]
    segment = segmentation.GetSegment(segment_id(specs[1]))
    assert np.allclose(segment.GetColor(), specs[1].color)
    assert Terminology.from_slicer(segment.GetTerminology()) == bladder
    _same_image(labels_from_segmentation_node(node, volume, specs), labels, "segmentation")


def a_probability_map_overlays_the_anatomy(context: MRMLContext, folder: Path) -> None:
    """A probability map is every slice view's foreground over the anatomy, in OncoSeg's
    colours, hidden below 0.05; showing it again reuses the node and the colour table."""
    import numpy as np
    import SimpleITK as sitk

    from OncoSegCommonLib.probability import (
        COLOR_TABLE_NAME,
        set_overlay_opacity,
        show_probability_map,
    )
    from OncoSegCommonLib.volumes import volume_node_from_image

    if context.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode") is None:
        context.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # headless: no views
    reference = _oblique_image(np.ones((5, 8, 9), np.int16))
    background = volume_node_from_image(context.scene, reference, "OncoSeg check anatomy")
    probability = sitk.GetImageFromArray(np.linspace(0, 1, 5 * 8 * 9, dtype=np.float32)
                                         .reshape(5, 8, 9))
    probability.CopyInformation(reference)
    node = show_probability_map(context.scene, probability, "OncoSeg check probability",
                                background, opacity=0.4)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == COLOR_TABLE_NAME
    assert display.GetApplyThreshold() and abs(display.GetLowerThreshold() - 0.05) < 1e-9
    composites = context.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    set_overlay_opacity(context.scene, 0.8)
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        assert composite.GetForegroundVolumeID() == node.GetID()
        assert composite.GetBackgroundVolumeID() == background.GetID()
        assert abs(composite.GetForegroundOpacity() - 0.8) < 1e-9
    count = context.scene.GetNumberOfNodes()
    assert show_probability_map(context.scene, probability, "again", node=node) is node
    assert context.scene.GetNumberOfNodes() == count


class PlotWidgetStandIn:
    """Stands in for a panel's qMRMLPlotWidget (this file has no Qt; the tests use it too)."""

    view = None

    def setMRMLPlotViewNode(self, node: Any) -> None:
        self.view = node


def a_loss_plot_draws_every_epoch(context: MRMLContext, folder: Path) -> None:
    """The live loss plot's two series hold each epoch's losses as numbers, as the plot view
    reads them (:func:`plotted_points`)."""
    from OncoSegCommonLib.lossplot import LossPlot

    widget = PlotWidgetStandIn()
    plot = LossPlot(context.scene, widget, "OncoSeg check training")
    epochs = [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0},
              {"epoch": 2, "train_loss": 0.5, "val_loss": 0.75}]
    plot.update(epochs[:1])
    plot.update(epochs)
    assert widget.view.GetPlotChartNodeID() == plot.chart.GetID()
    points = {}
    for index in range(plot.chart.GetNumberOfPlotSeriesNodes()):
        series = plot.chart.GetNthPlotSeriesNode(index)
        points[series.GetYColumnName()] = plotted_points(series)
    assert points == {"train_loss": ([1.0, 2.0], [0.9, 0.5]),
                      "val_loss": ([1.0, 2.0], [1.0, 0.75])}, points


COMMON_SCENARIOS: tuple[Scenario, ...] = (
    a_volume_keeps_its_voxels_and_geometry, labels_cross_a_segmentation_node,
    a_probability_map_overlays_the_anatomy, a_loss_plot_draws_every_epoch)
