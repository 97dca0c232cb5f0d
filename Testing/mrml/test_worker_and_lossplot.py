"""The panels' shared non-Qt pieces: the background worker and the loss plot."""

import ctypes
import itertools
import threading
import time
from types import SimpleNamespace

import pytest

from oncoseg.progress import check_cancelled, report
from OncoSegCommonLib.checks import PlotWidgetStandIn
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


# Slicer's main thread outside Python: a C call made through PyDLL keeps the GIL.
_nanosleep = ctypes.PyDLL(None).nanosleep


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def hold_gil(seconds):
    _nanosleep(ctypes.byref(_Timespec(0, int(seconds * 1e9))), None)


def pure_python_steps(stop, progress=None, cancel=None):
    """Work that needs the GIL all the time; returns how many steps it made."""
    steps = 0
    while not stop.is_set():
        steps += 1
    return steps


def steps_under_main_loop(lend_s, cycles=10, period_s=0.05):
    """The worker's steps while the main thread runs ``cycles`` timer periods holding the GIL
    except during ``worker.lend(lend_s)``."""
    stop = threading.Event()
    worker = Worker(pure_python_steps, stop)
    for _ in range(cycles):
        started = time.perf_counter()
        if lend_s:
            worker.lend(lend_s)
        hold_gil(max(0.0, period_s - (time.perf_counter() - started)))
    stop.set()
    worker.lend(10)
    assert worker.done and worker.error is None
    return worker.result


def test_lending_runs_the_worker_while_the_main_thread_holds_the_gil_otherwise():
    without = steps_under_main_loop(0.0)
    with_loans = steps_under_main_loop(0.04)
    # the loans are 80 % of the time; without them the worker runs only at GIL hand-overs
    assert with_loans > 3 * without, (with_loans, without)


def test_lend_returns_when_the_run_ends():
    worker = Worker(slow_count, 5)
    started = time.perf_counter()
    assert worker.lend(10) is True and worker.done and worker.result == 5
    assert time.perf_counter() - started < 5, "lend waited for its whole budget"
    assert worker.lend(10) is True  # over: at once


class FakeClock:
    """time.perf_counter for Worker.lend: a wait advances it by what was asked plus the delay
    in taking the GIL back; the main thread's own work (a redraw) advances it too."""

    def __init__(self):
        self.now = 100.0
        self.waits: list[float] = []
        self.late = 0.0

    def perf_counter(self):
        return self.now

    def wait(self, seconds):  # the worker's "finished" event: never set here
        self.waits.append(seconds)
        self.now += seconds + self.late
        return False


def test_lend_keeps_the_main_thread_s_rhythm(monkeypatch):
    """While the run goes on, the main thread gets the GIL back about every ``seconds``: its
    own work between loans (a 10 ms redraw) and the delays in taking the GIL back come out of
    the next wait, which is never less than half of ``seconds``. On a clock of the test's, so
    no figure depends on this machine's load."""
    from OncoSegCommonLib import worker as worker_module

    stop = threading.Event()
    worker = Worker(pure_python_steps, stop)
    clock = FakeClock()
    monkeypatch.setattr(worker_module.time, "perf_counter", clock.perf_counter)
    # the run's thread ends (sets the event) once ``stop`` is set: its set() is a no-op here
    monkeypatch.setattr(worker, "_finished", SimpleNamespace(wait=clock.wait,
                                                             is_set=lambda: False,
                                                             set=lambda: None))
    worker._back = clock.now
    returns = []
    for tick in range(12):
        clock.late = 0.004 if tick >= 6 else 0.0  # from tick 6 on, the GIL comes back late
        assert worker.lend(0.04) is False
        returns.append(clock.now)
        clock.now += 0.010  # the redraw and the tick's Python
    stop.set()
    assert clock.waits[0] == pytest.approx(0.04)
    assert clock.waits[1:6] == pytest.approx([0.03] * 5)  # 40 ms less the 10 ms redraw
    assert clock.waits[7:] == pytest.approx([0.026] * 5)  # and less the 4 ms late
    cycles = [b - a for a, b in itertools.pairwise(returns)]
    assert cycles[:5] == pytest.approx([0.04] * 5) and cycles[-4:] == pytest.approx([0.04] * 4)
    # a main thread busier than the loan still lends at least half of it
    clock.now += 0.1
    worker.lend(0.04)
    assert clock.waits[-1] == pytest.approx(0.02)
    worker.thread.join(10)  # nothing of the run outlives the test
    assert not worker.thread.is_alive()


def test_loss_plot_builds_a_chart_and_appends_epochs(mrml):
    widget = PlotWidgetStandIn()
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
    widget = PlotWidgetStandIn()
    plots = [LossPlot(mrml.scene, widget, "Test training") for _ in range(3)]
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
    assert widget.view.GetPlotChartNodeID() == plots[-1].chart.GetID()
    mrml.scene.Clear(0)  # File > Close Scene: the next run's plot still gets a view
    LossPlot(mrml.scene, widget, "Test training")
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
