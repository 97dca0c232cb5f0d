"""The Qt half every OncoSeg module panel shares (this file may import qt: its name says so).

A module file (``RectalSeg.py``, ...) holds three small classes built on the ones here:
:class:`OncoSegModule` (title, help, acknowledgement), :class:`TaskPanel` (the panel) and
:class:`OncoSegTest` (the module's scenarios in the application). :class:`TaskPanel` binds
widgets and nothing else: what its buttons do is :class:`~OncoSegCommonLib.panelstate.
PanelController`'s (no Qt, tested headless with fakes), and the settings live in the module's
parameter node (``parameterNodeWrapper``, saved with the scene and restored; bound to the widgets
that carry a ``SlicerParameterName`` in the .ui). It owns the model selector (bundled, trained
here, or a file; the header's summary under it), the device selector, the run (a worker thread
lent the GIL by the panel's timer, progress bar, Cancel), the probability-overlay opacity, the
Segment Editor button, the export section (segmentation modules) and the training panel (a
separate process, its progress and a live loss plot; a finished model joins the selector).
The widget names it uses must exist in every module's .ui (checked by a static test), except
the segmentation widgets (opacity, Segment Editor, compare), which classification modules leave
out.

Slicer APIs used here, read at v5.10.0 and v5.12.x: ``ScriptedLoadableModule*`` and
``slicer.util.VTKObservationMixin`` / ``errorDisplay(text, detailedText=...)``
(Base/Python/slicer/ScriptedLoadableModule.py, Base/Python/slicer/util.py: ``detailedText``
is set on the ctkMessageBox), the parameter node as ``ScriptedLoadableModuleLogic.
getParameterNode`` makes it (see ``OncoSegCommonLib.parameters``) and the template's scene-close
handling (Utilities/Templates/Modules/Scripted/TemplateKey.py).
"""

from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SEGMENTATION_WIDGETS = ("opacitySlider", "openEditorButton", "compareButton")
DISCLAIMER = " Research use only, not for clinical use."


class OncoSegModule(ScriptedLoadableModule):
    """A module's entry in Slicer's module list; the module sets ``help`` and
    ``acknowledgement`` (the method's paper)."""

    help = ""
    acknowledgement = ""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = type(self).__name__
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = self.help + DISCLAIMER
        self.parent.acknowledgementText = self.acknowledgement


class OncoSegTest(ScriptedLoadableModuleTest):
    """The module's scenarios (``<Name>Lib.scenarios``, also run headless by the tests), in the
    application. Module files subclass it as ``panels.OncoSegTest`` (not imported by name), so
    that unittest's loader finds only ``<Name>Test`` in the module."""

    def runTest(self):
        from OncoSegCommonLib.selftest import skip_unless_engine_ready

        skip_unless_engine_ready(self)  # first: the scenarios import torch and the engine
        import importlib

        from OncoSegCommonLib.checks import run_scenarios_in_app

        name = type(self).__name__.removesuffix("Test")
        scenarios = importlib.import_module(f"{name}Lib.scenarios")
        run_scenarios_in_app(scenarios.ALL, self.delayDisplay)
        self.delayDisplay(f"{name} scenarios passed")


class PanelSettings:
    """The settings every panel has; a module's ``@parameterNodeWrapper`` class derives from it
    (the wrapper reads the fields with ``typing.get_type_hints``, which includes a base class's:
    Base/Python/slicer/parameterNodeWrapper/wrapper.py, ``_processClass``, v5.10.0)."""

    device: str = "auto"
    model: str = "demo"  # the model selector's data: 'demo' or a model file


class TaskPanel(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """A module's panel. The module sets ``task_name``, ``layouts`` and ``parameters`` (its
    ``@parameterNodeWrapper`` class) and fills in the hooks at the end of the class."""

    task_name = ""  # the engine task the panel runs
    layouts = ("auto",)  # the training layouts offered, first the default
    parameters = None  # the module's @parameterNodeWrapper class
    result_table = ""  # the .ui's table listing a result (segment volumes, candidates)
    result_columns = ()  # its column headers

    def __init__(self, parent=None):
        VTKObservationMixin.__init__(self)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    # ------------------------------------------------------------------ life cycle

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.dependency_panel import dependencies_ready

        if not dependencies_ready(self.layout):  # only the install section until restarted
            return
        from OncoSegCommonLib.context import MRMLContext
        from OncoSegCommonLib.panelstate import PanelController

        panel = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = self.make_logic(MRMLContext.from_application())
        self.controller = PanelController(self, self)
        self.timer = qt.QTimer()
        self.timer.setInterval(self.controller.POLL_MS)
        self.timer.connect("timeout()", self._tick)
        for device in ("auto", "cpu", "cuda"):
            self.ui.deviceSelector.addItem(device)
        for layout in self.layouts:
            self.ui.layoutSelector.addItem(layout)
        self.fill_models()
        self.ui.modelSelector.connect("currentIndexChanged(int)", self._show_model)
        self.ui.modelBrowseButton.connect("clicked()", self._browse_model)
        self.ui.applyButton.connect("clicked()", self._apply)
        self.ui.cancelButton.connect("clicked()", self.controller.cancel)
        opacity, editor, _ = self._segmentation_widgets()
        if opacity is not None:
            opacity.connect("valueChanged(double)", self._opacity)
        if editor is not None:
            editor.connect("clicked()", self._open_editor)
        self.ui.trainButton.connect("clicked()", self._train)
        self.ui.trainCancelButton.connect("clicked()", self.controller.stop_training)
        self.export_panel = None
        if editor is not None:  # segmentation modules export their results
            from OncoSegCommonLib.export_panel import ExportPanel

            self.export_panel = ExportPanel(self.layout)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._scene_closing)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self._scene_closed)
        if self.result_table:
            table = getattr(self.ui, self.result_table)
            table.setColumnCount(len(self.result_columns))
            table.setHorizontalHeaderLabels(list(self.result_columns))
        self.setup_module()
        self.initialize_parameter_node()
        self.update_buttons()

    def cleanup(self):
        self.removeObservers()
        if not hasattr(self, "controller"):  # set up without its dependencies: nothing runs
            return
        self.timer.stop()
        self.controller.close()

    def enter(self):
        if hasattr(self, "controller"):
            self.initialize_parameter_node()

    def exit(self):
        self.set_parameter_node(None)

    def _scene_closing(self, caller, event):
        self.set_parameter_node(None)
        self.controller.scene_closing()
        self.update_buttons()

    def _scene_closed(self, caller, event):
        if self.parent.isEntered:
            self.initialize_parameter_node()

    # ------------------------------------------------------------------ parameter node

    def initialize_parameter_node(self):
        """The module's parameter node (made on first use, found again in a loaded scene),
        bound to the widgets; empty input selectors get the module's guesses."""
        from OncoSegCommonLib.parameters import parameter_node

        self.set_parameter_node(self.parameters(parameter_node(slicer.mrmlScene,
                                                               self.moduleName)))
        self.fill_empty_inputs()
        index = self.ui.modelSelector.findData(self._parameterNode.model)
        if index >= 0:
            self.ui.modelSelector.setCurrentIndex(index)

    def set_parameter_node(self, parameters):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.update_buttons)
            self._parameterNodeGuiTag = None
        self._parameterNode = parameters
        if parameters is not None:
            self._parameterNodeGuiTag = parameters.connectGui(self.ui)
            self.addObserver(parameters, vtk.vtkCommand.ModifiedEvent, self.update_buttons)
            self.update_buttons()

    @property
    def settings(self):
        """The module's settings (its parameter node); None while none is bound: between
        the start of File > Close Scene and the module's next entry."""
        return self._parameterNode

    # ------------------------------------------------------------------ models

    def fill_models(self, select=None):
        self.models = self.available_models()
        self.ui.modelSelector.clear()
        for choice in self.models:
            self.ui.modelSelector.addItem(choice.label, str(choice.path))
        if select is not None:
            index = self.ui.modelSelector.findData(str(select))
            if index >= 0:
                self.ui.modelSelector.setCurrentIndex(index)
        self._show_model()

    def selected_model(self):
        return self.ui.modelSelector.currentData or "demo"

    def _show_model(self, *_):
        index = self.ui.modelSelector.currentIndex
        self.ui.modelInfoLabel.text = self.models[index].summary() \
            if 0 <= index < len(self.models) else "No model: load a model file."
        if self._parameterNode is not None:
            self._parameterNode.model = self.selected_model()

    def _browse_model(self):
        from oncoseg.errors import InputError
        from OncoSegCommonLib.models import model_choice

        path = qt.QFileDialog.getOpenFileName(self.parent, "Model file", "",
                                              "OncoSeg models (*.safetensors)")
        if not path:
            return
        try:
            choice = model_choice(path, self.task_name, Path(path).name)
        except InputError as error:
            self.show_error(str(error))
            return
        self.models.append(choice)
        self.ui.modelSelector.addItem(choice.label, str(choice.path))
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.count - 1)

    # ------------------------------------------------------------------ running

    def update_buttons(self, *_):
        if not hasattr(self, "controller"):
            return
        running = self.controller.running
        self.ui.applyButton.enabled = (self.settings is not None and self.inputs_ready()
                                       and not running)
        self.ui.cancelButton.enabled = running
        _, editor, compare = self._segmentation_widgets()
        for widget in (w for w in (editor, compare, *self.result_buttons()) if w is not None):
            widget.enabled = self.result is not None and not running

    @property
    def result(self):
        """The last run's result, None before a run and after the scene is closed."""
        return self.controller.result if hasattr(self, "controller") else None

    def _apply(self):
        if self.controller.apply():
            self.timer.start()

    def _tick(self):
        if not self.controller.tick():
            self.timer.stop()

    def _segmentation_widgets(self):
        """(opacity slider, editor button, compare button), None where the .ui has none."""
        return tuple(getattr(self.ui, name, None) for name in SEGMENTATION_WIDGETS)

    def _opacity(self, value):
        from OncoSegCommonLib.probability import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, value)

    def _open_editor(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.nodes.segmentation)
        editor.setSourceVolumeNode(self.result.reference)

    def fill_table(self, rows):
        """The result table's rows, each a sequence of cell texts."""
        table = getattr(self.ui, self.result_table)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, qt.QTableWidgetItem(text))

    # ------------------------------------------------------------------ PanelView

    def show_status(self, text):
        self.ui.statusLabel.text = text

    def show_progress(self, fraction):
        self.ui.progressBar.value = int(100 * fraction)

    def show_running(self, running):
        self.update_buttons()

    def show_error(self, message, details=""):
        if details:
            slicer.util.errorDisplay(message, detailedText=details)
        else:
            slicer.util.errorDisplay(message)

    def show_result(self, result):
        self.show_module_result(result)
        if self.export_panel is not None:
            self.export_panel.show(result.nodes.segmentation, result.reference,
                                   result.nodes.probabilities)

    def clear_result(self):
        self.clear_module_result()

    def training_started(self, title):
        from OncoSegCommonLib.lossplot import LossPlot

        self.loss_plot = LossPlot(slicer.mrmlScene, self.ui.lossPlotWidget, title)
        self.ui.trainButton.enabled = False
        self.ui.trainCancelButton.enabled = True
        self.timer.start()

    def show_training(self, status):
        if status.fraction is not None:
            self.ui.trainProgressBar.value = int(100 * status.fraction)
        self.ui.trainStatusLabel.text = f"{status.stage} {status.message}".strip()
        self.loss_plot.update(status.epochs)

    def training_finished(self, model, message):
        self.ui.trainStatusLabel.text = message
        self.ui.trainButton.enabled = True
        self.ui.trainCancelButton.enabled = False
        if model is not None:
            self.fill_models(select=model)

    # ------------------------------------------------------------------ training

    def _train(self):
        from OncoSegCommonLib.panelstate import TrainingRequest

        self.controller.train(TrainingRequest(
            self.task_name, self.ui.datasetPathLineEdit.currentPath,
            self.ui.runNameLineEdit.text, self.ui.layoutSelector.currentText,
            self.settings.device))

    # ------------------------------------------------------------------ module hooks

    def make_logic(self, context):
        """The logic its ``<Name>Lib.logic`` registers for the panel's task."""
        import importlib

        from OncoSegCommonLib.tasklogic import logic_for

        importlib.import_module(f"{self.moduleName}Lib.logic")
        return logic_for(context, self.task_name)

    def setup_module(self):
        """The module's own widgets: table headers, extra buttons, its signal connections."""

    def fill_empty_inputs(self):
        """Empty input selectors get the logic's guesses (from node names)."""
        for role, node in self.logic.guess_inputs().items():
            if node is not None and hasattr(self.settings, role) and \
                    getattr(self.settings, role) is None:
                setattr(self.settings, role, node)

    def inputs_ready(self):
        """True when every input the run needs is chosen."""
        raise NotImplementedError

    def prepare_run(self):
        """Main thread: (compute function, its arguments) for the worker; InputError or
        ValueError with a message for the user when the inputs are not usable."""
        self.started = self.logic.start(self.run_inputs(), self.run_parameters().request())
        return self.logic.compute, (self.started,)

    def run_inputs(self):
        """role -> the chosen node (and the logic's other inputs, e.g. an ROI)."""
        raise NotImplementedError

    def run_parameters(self):
        """The Lib's parameters for this run (see :meth:`settings_as`)."""
        raise NotImplementedError

    def settings_as(self, parameters_class, **given):
        """``parameters_class`` (a Lib dataclass) from the settings of the same names, the
        model from the selector, and ``given`` where the panel's value differs."""
        import dataclasses

        given.setdefault("model", self.selected_model())
        names = {f.name for f in dataclasses.fields(parameters_class)} - set(given)
        values = {n: getattr(self.settings, n) for n in names if hasattr(self.settings, n)}
        return parameters_class(**values, **given)

    def finish_run(self, prediction):
        """Main thread: add the result to the scene; returns the module's result object."""
        return self.logic.finish(prediction, self.started)

    def show_module_result(self, result):
        """Fill the module's own result widgets (tables)."""

    def clear_module_result(self):
        """Empty the module's own result widgets."""

    def available_models(self):
        """The model choices for the panel's task (modules with modes pick theirs)."""
        return self.logic.models()

    def result_buttons(self):
        """The module's own buttons that need a result."""
        return ()
