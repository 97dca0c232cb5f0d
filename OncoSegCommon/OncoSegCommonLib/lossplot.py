"""Numbers as Slicer plots: table columns a plot view can draw, and the training loss plot.

A plot series names the X and Y columns of a table node, and Slicer's plot view draws nothing
from a string (or bit) column: ``qMRMLPlotViewPrivate::updatePlotFromPlotSeriesNode`` returns no
plot for one, with only a Qt warning (Libs/MRML/Widgets/qMRMLPlotView.cxx, v5.10.0 to v5.12.3).
``vtkMRMLTableNode.AddColumn()`` without an array makes exactly such a column (VTK_STRING when
the table has no schema: Libs/MRML/Core/vtkMRMLTableNode.cxx, AddColumn). So every column a
series plots is made by :func:`numeric_column`, a vtkIntArray or vtkDoubleArray.

The panel passes its qMRMLPlotWidget to :class:`LossPlot`; this file itself needs no Qt, so it
is tested headless with any object that accepts ``setMRMLPlotViewNode``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COLUMNS = ("epoch", "train_loss", "val_loss")


def numeric_column(name: str, values: Iterable[float | None] = (), integer: bool = False
                   ) -> Any:
    """A column a plot series can draw: a vtkIntArray (``integer``) or vtkDoubleArray named
    ``name`` holding ``values``. In a double column a missing value (None) is NaN, which VTK's
    charts leave out rather than draw as 0."""
    import vtk

    array = vtk.vtkIntArray() if integer else vtk.vtkDoubleArray()
    array.SetName(name)
    for value in values:
        array.InsertNextValue(int(value) if integer else _number(value))
    return array


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def panel_plot_view(scene: Any, name: str) -> Any:
    """The plot view node a panel's plot widget shows: one per panel plot, found again by
    every run (a new view per run piled up in the scene)."""
    tag = f"OncoSeg {name}"
    view = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
    if view is None:
        view = scene.CreateNodeByClass("vtkMRMLPlotViewNode")
        view.UnRegister(None)  # owned by the Python variable until the scene takes it
        view.SetSingletonTag(tag)
        view.SetName(name)
        view = scene.AddNode(view)
    return view


class LossPlot:
    """A table (epoch: int, train_loss and val_loss: double), a chart of the two losses
    against the epoch, and a plot view showing it in the panel's plot widget."""

    def __init__(self, scene: Any, widget: Any, title: str):
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} losses")
        for name in COLUMNS:
            self.table.AddColumn(numeric_column(name, integer=name == "epoch"))
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{title} chart")
        for column, colour in (("train_loss", (0.2, 0.4, 0.8)), ("val_loss", (0.9, 0.4, 0.1))):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{title} {column}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetColor(*colour)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetXAxisTitle("epoch")
        chart.SetYAxisTitle("loss")
        self.chart = chart
        view = panel_plot_view(scene, f"{title} view")
        view.SetPlotChartNodeID(chart.GetID())
        widget.setMRMLPlotViewNode(view)
        self.rows = 0

    def update(self, epochs: Sequence[Mapping[str, float]]) -> None:
        """Append the epochs not shown yet (the training process's ``status.epochs``): one
        table modification, so the plot redraws once per call. An epoch without a number is
        counted (its row's position); a missing loss is NaN (not drawn)."""
        new = epochs[self.rows:]
        if not new:
            return
        table = self.table.GetTable()
        for offset, record in enumerate(new, start=self.rows + 1):
            epoch = record.get("epoch")
            table.GetColumnByName("epoch").InsertNextValue(int(epoch if epoch is not None
                                                                else offset))
            for key in COLUMNS[1:]:
                table.GetColumnByName(key).InsertNextValue(_number(record.get(key)))
        table.Modified()  # the table node passes it on: the series and the view update
        self.rows = len(epochs)
