"""The Qt half every OncoSeg module panel shares (this file may import qt: its name says so).

:class:`TaskPanel` is mixed into a module's ``ScriptedLoadableModuleWidget``. It owns the model
selector (bundled, trained here, or a file; the header's summary under it), the device
selector, the run (a :class:`Worker` thread polled by a timer, progress bar, Cancel), the
probability-overlay opacity, the Segment Editor button, the export section (segmentation
modules) and the training panel (a separate process, its progress and a live loss plot; a
finished model joins the selector). The module
supplies its logic and what is specific to it through the hooks at the end of the class.
The widget names it uses must exist in every module's .ui (checked by a static test), except
the segmentation widgets (opacity, Segment Editor, compare), which classification modules leave
out.
"""

import time
from pathlib import Path

import qt
import slicer

SEGMENTATION_WIDGETS = ("opacitySlider", "openEditorButton", "compareButton")


class TaskPanel:
    POLL_MS = 100
    task_name = ""  # the engine task the panel runs
    layouts = ("auto",)  # the training layouts offered, first the default

    def setup_panel(self, ui_path, logic):
        """Load the .ui, bind the shared widgets; call from the widget's ``setup``."""
        panel = slicer.util.loadUI(ui_path)
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self.result = None
        self.worker = None
        self.training = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self._poll)
        for device in ("auto", "cpu", "cuda"):
            self.ui.deviceSelector.addItem(device)
        for layout in self.layouts:
            self.ui.layoutSelector.addItem(layout)
        self.fill_models()
        self.ui.modelSelector.connect("currentIndexChanged(int)", self._show_model)
        self.ui.modelBrowseButton.connect("clicked()", self._browse_model)
        self.ui.applyButton.connect("clicked()", self._apply)
        self.ui.cancelButton.connect("clicked()", self._cancel)
        opacity, editor, _ = self._segmentation_widgets()
        if opacity is not None:
            opacity.connect("valueChanged(double)", self._opacity)
        if editor is not None:
            editor.connect("clicked()", self._open_editor)
        self.ui.trainButton.connect("clicked()", self._train)
        self.ui.trainCancelButton.connect("clicked()", self._stop_training)
        self.export_panel = None
        if editor is not None:  # segmentation modules export their results
            from OncoSegCommonLib.export_panel import ExportPanel

            self.export_panel = ExportPanel(self.layout)

    def cleanup_panel(self):
        if not hasattr(self, "timer"):  # set up without its dependencies: nothing runs
            return
        self.timer.stop()
        if self.worker is not None:
            self.worker.cancel.cancel()
        if self.training is not None:
            self.training.cancel()

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
            slicer.util.errorDisplay(str(error))
            return
        self.models.append(choice)
        self.ui.modelSelector.addItem(choice.label, str(choice.path))
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.count - 1)

    # ------------------------------------------------------------------ running

    def update_buttons(self, *_):
        running = self.worker is not None
        self.ui.applyButton.enabled = self.inputs_ready() and not running
        self.ui.cancelButton.enabled = running
        _, editor, compare = self._segmentation_widgets()
        for widget in (w for w in (editor, compare, *self.result_buttons()) if w is not None):
            widget.enabled = self.result is not None and not running

    def _apply(self):
        from oncoseg.errors import InputError
        from OncoSegCommonLib.worker import Worker

        try:
            compute, args = self.prepare_run()
        except (InputError, ValueError) as error:
            slicer.util.errorDisplay(str(error))
            return
        self.worker = Worker(compute, *args)
        self.ui.statusLabel.text = "Running..."
        self.ui.progressBar.value = 0
        self.update_buttons()
        self.timer.start()

    def _segmentation_widgets(self):
        """(opacity slider, editor button, compare button), None where the .ui has none."""
        return tuple(getattr(self.ui, name, None) for name in SEGMENTATION_WIDGETS)

    def _cancel(self):
        if self.worker is not None:
            self.worker.cancel.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def _poll(self):
        if self.worker is not None:
            self._poll_worker()
        if self.training is not None:
            self._poll_training()
        if self.worker is None and self.training is None:
            self.timer.stop()

    def _poll_worker(self):
        event = self.worker.last_event
        if event is not None and event.fraction is not None:
            self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.stage} {event.message}".strip()
        if not self.worker.done:
            return
        worker, self.worker = self.worker, None
        if worker.error is not None:
            self.ui.statusLabel.text = worker.status_text()
        else:
            self.result = self.finish_run(worker.result)
            prediction = self.result.prediction
            seconds = sum(v for k, v in prediction.timings.items() if k != "total")
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = "\n".join([f"Done in {seconds:.1f} s.",
                                                  *prediction.messages])
            self.show_result()
            if self.export_panel is not None:
                self.export_panel.show(self.result.nodes.segmentation, self.result.reference)
        self.update_buttons()

    def _opacity(self, value):
        from OncoSegCommonLib.probability import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, value)

    def _open_editor(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.nodes.segmentation)
        editor.setSourceVolumeNode(self.result.reference)

    # ------------------------------------------------------------------ training

    def _train(self):
        from OncoSegCommonLib.lossplot import LossPlot
        from OncoSegCommonLib.models import models_folder
        from OncoSegCommonLib.training_process import TrainingProcess, training_command

        dataset = self.ui.datasetPathLineEdit.currentPath
        if not dataset:
            slicer.util.errorDisplay("Choose the data set folder first.")
            return
        name = self.ui.runNameLineEdit.text.strip() or \
            time.strftime(f"{self.task_name}-%Y%m%d-%H%M%S")
        self.training_output = models_folder(self.task_name) / name
        self.training = TrainingProcess(training_command(
            self.task_name, dataset, self.training_output, self.ui.layoutSelector.currentText,
            self.ui.deviceSelector.currentText))
        self.loss_plot = LossPlot(slicer.mrmlScene, self.ui.lossPlotWidget,
                                  f"{self.task_name} training")
        self.ui.trainButton.enabled = False
        self.ui.trainCancelButton.enabled = True
        self.timer.start()

    def _stop_training(self):
        if self.training is not None:
            self.training.cancel()

    def _poll_training(self):
        status = self.training.poll()
        if status.fraction is not None:
            self.ui.trainProgressBar.value = int(100 * status.fraction)
        self.ui.trainStatusLabel.text = f"{status.stage} {status.message}".strip()
        self.loss_plot.update(status.epochs)
        if self.training.returncode is None:
            return
        training, self.training = self.training, None
        model = training.model_path(self.training_output)
        self.ui.trainStatusLabel.text = (f"Model written to {model}" if model else
                                         "Training stopped: " + " ".join(status.other_output[-3:]))
        self.ui.trainButton.enabled = True
        self.ui.trainCancelButton.enabled = False
        if model is not None:
            self.fill_models(select=model)

    # ------------------------------------------------------------------ module hooks

    def inputs_ready(self):
        """True when every input selector holds a node."""
        raise NotImplementedError

    def prepare_run(self):
        """Main thread: (compute function, its arguments) for the worker; raise InputError
        or ValueError with a message for the user when the inputs are not usable."""
        raise NotImplementedError

    def finish_run(self, prediction):
        """Main thread: add the result to the scene; returns the module's result object."""
        raise NotImplementedError

    def show_result(self):
        """Fill the module's own result widgets (tables)."""

    def available_models(self):
        """The model choices for the panel's task (modules with modes pick theirs)."""
        return self.logic.models()

    def result_buttons(self):
        """The module's own buttons that need a result."""
        return ()
