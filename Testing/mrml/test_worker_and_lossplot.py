"""The panels' shared non-Qt pieces: the background worker and the loss plot."""

import time

from oncoseg.progress import check_cancelled, report
from OncoSegCommonLib.lossplot import LossPlot
from OncoSegCommonLib.worker import Worker


def slow_count(limit, progress=None, cancel=None):
    for i in range(limit):
        check_cancelled(cancel)
        report(progress, "Counting", i + 1, limit)
        time.sleep(0.01)
    return limit


def wait(worker):
    deadline = time.time() + 10
    while not worker.done and time.time() < deadline:
        time.sleep(0.01)
    assert worker.done


def test_worker_reports_progress_and_result():
    worker = Worker(slow_count, 5)
    wait(worker)
    assert worker.result == 5 and worker.error is None
    assert worker.last_event.done == 5 and worker.status_text() == "Done."


def test_worker_cancel_and_errors():
    worker = Worker(slow_count, 10_000)
    worker.cancel.cancel()
    wait(worker)
    assert worker.result is None
    assert worker.status_text() == "Cancelled; nothing was added to the scene."
    failing = Worker(slow_count, "many")
    wait(failing)
    assert failing.status_text().startswith("Failed: ")


class FakePlotWidget:
    view = None

    def setMRMLPlotViewNode(self, node):
        self.view = node


def test_loss_plot_builds_a_chart_and_appends_epochs(mrml):
    widget = FakePlotWidget()
    plot = LossPlot(mrml.scene, widget, "Test training")
    assert widget.view.GetPlotChartNodeID() == plot.chart.GetID()
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 2
    plot.update([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}])
    plot.update([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0},
                 {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7}])
    table = plot.table.GetTable()
    assert table.GetNumberOfRows() == 2
    assert plot.table.GetCellText(1, 2) == "0.7"


def test_a_panel_plot_keeps_one_view_node_whatever_the_runs(mrml):
    """Each training (and each staging run) used to add a plot view node to the scene."""
    widget = FakePlotWidget()
    plots = [LossPlot(mrml.scene, widget, "Test training") for _ in range(3)]
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
    assert widget.view.GetPlotChartNodeID() == plots[-1].chart.GetID()
    mrml.scene.Clear(0)  # File > Close Scene: the next run's plot still gets a view
    LossPlot(mrml.scene, widget, "Test training")
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
