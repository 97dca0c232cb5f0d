"""Checks the modules' scenarios share (pytest on slicer-core and the in-app tests).

Every scenario runs through :func:`run_scenario`, which fails when VTK or MRML logged an error or
a warning during it: a deprecated call (``SetNamesInitialised`` since Slicer 5.10), a table cell
read out of range, ... only print to the console or Slicer's error log and never raise, so a
scenario that passes its own asserts would hide them. :func:`plotted_points` reads a plot
series back as Slicer's plot view reads it, for the same reason: an empty plot raises nothing.
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
