"""Training losses as a Slicer plot: a table node, two series and a chart in a plot view.

The panel passes its qMRMLPlotWidget; this file itself needs no Qt, so it is tested headless
with any object that accepts ``setMRMLPlotViewNode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("epoch", "train_loss", "val_loss")


class LossPlot:
    def __init__(self, scene: Any, widget: Any, title: str):
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} losses")
        for name in COLUMNS:
            self.table.AddColumn().SetName(name)
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
        view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{title} view")
        view.SetPlotChartNodeID(chart.GetID())
        widget.setMRMLPlotViewNode(view)
        self.rows = 0

    def update(self, epochs: Sequence[dict[str, float]]) -> None:
        """Append the epochs not shown yet (the training process's ``status.epochs``)."""
        for record in epochs[self.rows:]:
            row = self.table.AddEmptyRow()
            for column, key in enumerate(COLUMNS):
                self.table.SetCellText(row, column, str(record.get(key, "")))
        self.rows = len(epochs)
