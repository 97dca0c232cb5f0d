"""What Slicer only logs or silently draws empty, made to fail on slicer-core: VTK/MRML errors
and warnings around a scenario (OncoSegCommonLib.checks), the probability colour table made
without deprecated calls, and plot tables whose series hold numbers (a plot view draws nothing
from a string column: Libs/MRML/Widgets/qMRMLPlotView.cxx, updatePlotFromPlotSeriesNode, at
v5.10.0 and v5.12.3)."""

import math

import numpy as np
import pytest
import vtk

from OncoSegCommonLib.checks import (
    LoggedMessage,
    PlotWidgetStandIn,
    plotted_points,
    run_scenario,
    vtk_messages,
)
from OncoSegCommonLib.lossplot import LossPlot, numeric_column
from OncoSegCommonLib.probability import COLOR_TABLE_NAME, probability_color_table

# ------------------------------------------------------------------ VTK's output window


def test_errors_and_warnings_are_captured_and_passed_on(mrml):
    """Both kinds of message, from MRML's own macros, in order; the window in place before
    gets its instance back and every message (Slicer's error log still shows them)."""
    original = vtk.vtkOutputWindow.GetInstance()
    before = vtk.vtkStringOutputWindow()  # stands in for Slicer's error log
    vtk.vtkOutputWindow.SetInstance(before)
    try:
        with vtk_messages() as messages:
            table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "T")
            table.GetCellText(3, 3)  # vtkErrorMacro: invalid column index
            colours = mrml.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "C")
            colours.GetNoName()  # vtkWarningMacro: deprecated since Slicer 5.10
            vtk.vtkOutputWindow.GetInstance().DisplayGenericWarningText("generic")
            assert before.GetOutput() == ""  # nothing passed on while the block runs
        assert vtk.vtkOutputWindow.GetInstance() is before
    finally:
        vtk.vtkOutputWindow.SetInstance(original)
    assert [m.level for m in messages] == ["error", "warning", "warning"], messages
    assert "GetCellText failed: invalid column index 3" in messages[0].text
    assert "GetNoName() method is deprecated" in messages[1].text
    assert messages[2].text == "generic"
    passed_on = before.GetOutput()
    assert "invalid column index 3" in passed_on and "GetNoName()" in passed_on
    assert "\n" not in str(messages[0])  # one line per message in a failure


def test_a_scenario_that_logs_fails_listing_the_messages(mrml, tmp_path):
    def deprecated_call(context, folder):
        probability = context.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "P")
        probability.SetNamesInitialised(True)  # an error on every call since Slicer 5.10

    with pytest.raises(AssertionError) as failure:
        run_scenario(deprecated_call, mrml, tmp_path)
    assert "deprecated_call logged 1 VTK/MRML error(s) or warning(s)" in str(failure.value)
    assert "SetNamesInitialised() method is deprecated" in str(failure.value)

    def clean(context, folder):
        return context.scene.AddNewNodeByClass("vtkMRMLTableNode", "quiet")

    assert run_scenario(clean, mrml, tmp_path).GetName() == "quiet"


def test_a_failing_scenario_still_restores_the_window(mrml, tmp_path):
    window = vtk.vtkOutputWindow.GetInstance()

    def broken(context, folder):
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        run_scenario(broken, mrml, tmp_path)
    assert vtk.vtkOutputWindow.GetInstance() is window


def test_logged_message_reads_on_one_line():
    message = LoggedMessage("error", "ERROR: In a.cxx, line 3\nvtkX (0x1): bad\n\n")
    assert str(message) == "ERROR: In a.cxx, line 3 vtkX (0x1): bad"


# ------------------------------------------------------------------ the probability colours


def test_probability_colours_are_named_without_deprecated_calls(mrml):
    """SetColor(index, name, ...) names and defines each entry (vtkMRMLColorTableNode.cxx,
    SetColor -> vtkMRMLColorNode::SetColorName, v5.10.0 / v5.12.3); SetNamesInitialised
    logged an error on every table made."""
    with vtk_messages() as messages:
        table = probability_color_table(mrml.scene)
        again = probability_color_table(mrml.scene)
    assert messages == [], [str(m) for m in messages]
    assert again is table and table.GetName() == COLOR_TABLE_NAME
    assert table.GetNumberOfColors() == 256
    assert [table.GetColorName(i) for i in (0, 128, 255)] == ["p0.00", "p0.50", "p1.00"]
    assert all(table.GetColorDefined(i) for i in range(256))
    dark, bright = [0.0] * 4, [0.0] * 4
    table.GetColor(0, dark)
    table.GetColor(255, bright)
    assert sum(dark[:3]) < 0.1 < 2.5 < sum(bright[:3]) and dark[3] == bright[3] == 1.0


# ------------------------------------------------------------------ plots


def test_numeric_columns_are_typed():
    epochs = numeric_column("epoch", [1, 2], integer=True)
    losses = numeric_column("loss", [0.5, None])
    assert (epochs.GetClassName(), epochs.GetName()) == ("vtkIntArray", "epoch")
    assert [epochs.GetValue(i) for i in range(2)] == [1, 2]
    assert losses.GetClassName() == "vtkDoubleArray"
    assert losses.GetValue(0) == 0.5 and math.isnan(losses.GetValue(1))


def _series(mrml, table, x, y, kind="PlotTypeScatter"):
    series = mrml.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{y} series")
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName(x)
    series.SetYColumnName(y)
    series.SetPlotType(getattr(series, kind))
    return series


def test_plotted_points_follow_the_plot_views_rule(mrml):
    """What would have caught the empty plots: AddColumn() makes text, which the view skips."""
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "scores")
    text = table.AddColumn()  # what the staging table and the loss plot used to do
    text.SetName("as text")
    table.AddColumn(numeric_column("index", [0, 1], integer=True))
    table.AddColumn(numeric_column("value", [0.25, 0.75]))
    table.SetCellText(0, 0, "0.1")
    table.SetCellText(1, 0, "0.2")
    assert text.GetClassName() == "vtkStringArray"
    assert plotted_points(_series(mrml, table, "index", "value")) == ([0.0, 1.0], [0.25, 0.75])
    with pytest.raises(AssertionError, match="Y column 'as text' is a vtkStringArray"):
        plotted_points(_series(mrml, table, "index", "as text"))
    with pytest.raises(AssertionError, match="X column 'as text' is a vtkStringArray"):
        plotted_points(_series(mrml, table, "as text", "value"))
    # a line series plots against the row index: its X column is not read
    line = _series(mrml, table, "as text", "value", "PlotTypeLine")
    assert plotted_points(line) == ([0.0, 1.0], [0.25, 0.75])
    with pytest.raises(AssertionError, match="no Y column 'missing'"):
        plotted_points(_series(mrml, table, "index", "missing"))
    orphan = mrml.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "orphan")
    with pytest.raises(AssertionError, match="'orphan' has no table"):
        plotted_points(orphan)



def test_the_loss_plot_draws_the_epochs(mrml):
    widget = PlotWidgetStandIn()
    with vtk_messages() as messages:
        plot = LossPlot(mrml.scene, widget, "Training")
        modified = []
        plot.table.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: modified.append(1))
        plot.update([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}])
        plot.update([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0},
                     {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7},
                     {"epoch": 3, "train_loss": 0.4}])  # a record without its val_loss
        plot.update([])  # nothing new: no redraw
    assert messages == [], [str(m) for m in messages]
    assert len(modified) == 2, "the table node tells the plot once per update with new rows"
    table = plot.table.GetTable()
    assert [table.GetColumn(c).GetClassName() for c in range(3)] == \
        ["vtkIntArray", "vtkDoubleArray", "vtkDoubleArray"]
    assert table.GetNumberOfRows() == 3 and plot.rows == 3
    points = {}
    for index in range(plot.chart.GetNumberOfPlotSeriesNodes()):
        series = plot.chart.GetNthPlotSeriesNode(index)
        points[series.GetYColumnName()] = plotted_points(series)
    assert points["train_loss"] == ([1.0, 2.0, 3.0], [0.9, 0.5, 0.4])
    xs, ys = points["val_loss"]
    assert xs == [1.0, 2.0, 3.0] and ys[:2] == [1.0, 0.7] and np.isnan(ys[2])
    assert widget.view.GetPlotChartNodeID() == plot.chart.GetID()


def test_an_epoch_without_its_number_is_counted(mrml):
    plot = LossPlot(mrml.scene, PlotWidgetStandIn(), "Training")
    plot.update([{"train_loss": 0.9, "val_loss": 1.0}, {"train_loss": 0.8, "val_loss": 0.9}])
    epochs = plot.table.GetTable().GetColumnByName("epoch")
    assert [epochs.GetValue(i) for i in range(2)] == [1, 2]
