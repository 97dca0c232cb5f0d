"""RectalSeg: rectal tumour segmentation on multiparametric MR (Trebeschi et al., Sci Rep 2017).

The Qt layer only: the panel binds RectalSeg.ui to :class:`RectalSegParameters` and calls
:class:`RectalSegLogic` (``RectalSegLib``, no Qt), which is tested headless on slicer-core. The
run happens in a worker thread polled by a timer; training runs as a separate process.
"""

import time
from pathlib import Path

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

import OncoSegCommonLib  # noqa: F401  (makes the engine importable)


class RectalSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "RectalSeg"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Segments a rectal tumour on T2-weighted and diffusion-weighted MR (b0 and high b): "
            "T2w is registered onto the b0 grid, a patch CNN gives every voxel's tumour "
            "probability, and the largest component of p >= threshold is kept; every candidate "
            "component is listed so you can keep another one. Research use only, not for "
            "clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: Trebeschi S. et al., Deep learning for fully-automated localization and "
            "segmentation of rectal cancer on multiparametric MR. Sci Rep 7, 5301 (2017)."
        )


class RectalSegWidget(ScriptedLoadableModuleWidget):
    POLL_MS = 100

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.context import MRMLContext
        from RectalSegLib.logic import RectalSegLogic

        panel = slicer.util.loadUI(self.resourcePath("UI/RectalSeg.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = RectalSegLogic(MRMLContext.from_application())
        self.result = None
        self.worker = None
        self.training = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self._poll)

        for device in ("auto", "cpu", "cuda"):
            self.ui.deviceSelector.addItem(device)
        for layout in ("auto", "folders", "nnunet"):
            self.ui.layoutSelector.addItem(layout)
        self.ui.candidateTable.setColumnCount(4)
        self.ui.candidateTable.setHorizontalHeaderLabels(
            ["#", "volume (ml)", "mean p", "max p"])
        self._fill_models()
        self._fill_inputs()

        for selector in (self.ui.t2wSelector, self.ui.b0Selector, self.ui.highBSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._update_buttons)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self._show_model)
        self.ui.modelBrowseButton.connect("clicked()", self._browse_model)
        self.ui.applyButton.connect("clicked()", self._apply)
        self.ui.cancelButton.connect("clicked()", self._cancel)
        self.ui.opacitySlider.connect("valueChanged(double)", self._opacity)
        self.ui.candidateTable.connect("cellClicked(int,int)", self._choose_row)
        self.ui.useSeedButton.connect("clicked()", self._use_seed)
        self.ui.openEditorButton.connect("clicked()", self._open_editor)
        self.ui.compareButton.connect("clicked()", self._compare)
        self.ui.trainButton.connect("clicked()", self._train)
        self.ui.trainCancelButton.connect("clicked()", self._stop_training)
        self._update_buttons()

    def cleanup(self):
        self.timer.stop()
        if self.worker is not None:
            self.worker.cancel.cancel()
        if self.training is not None:
            self.training.cancel()

    # ------------------------------------------------------------------ panel state

    def _fill_inputs(self):
        from RectalSegLib.logic import guess_inputs

        found = guess_inputs(slicer.mrmlScene)
        for role, selector in (("t2w", self.ui.t2wSelector), ("dwi_b0", self.ui.b0Selector),
                               ("dwi_b1000", self.ui.highBSelector)):
            if selector.currentNode() is None and found[role] is not None:
                selector.setCurrentNode(found[role])

    def _fill_models(self, select=None):
        self.models = self.logic.models()
        self.ui.modelSelector.clear()
        for choice in self.models:
            self.ui.modelSelector.addItem(choice.label, str(choice.path))
        if select is not None:
            index = self.ui.modelSelector.findData(str(select))
            if index >= 0:
                self.ui.modelSelector.setCurrentIndex(index)
        self._show_model()

    def _show_model(self, *_):
        index = self.ui.modelSelector.currentIndex
        text = self.models[index].summary() if 0 <= index < len(self.models) else \
            "No model: load a model file."
        self.ui.modelInfoLabel.text = text

    def _browse_model(self):
        from oncoseg.errors import InputError
        from OncoSegCommonLib.models import model_choice

        path = qt.QFileDialog.getOpenFileName(self.parent, "Model file", "",
                                              "OncoSeg models (*.safetensors)")
        if not path:
            return
        try:
            choice = model_choice(path, "rectal", Path(path).name)
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return
        self.models.append(choice)
        self.ui.modelSelector.addItem(choice.label, str(choice.path))
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.count - 1)

    def _inputs(self):
        return {"t2w": self.ui.t2wSelector.currentNode(),
                "dwi_b0": self.ui.b0Selector.currentNode(),
                "dwi_b1000": self.ui.highBSelector.currentNode()}

    def _parameters(self):
        from RectalSegLib.logic import RectalSegParameters

        path = self.ui.modelSelector.currentData
        return RectalSegParameters(model=path or "demo", device=self.ui.deviceSelector.currentText,
                                   registration=self.ui.registrationCheckBox.checked,
                                   threshold=self.ui.thresholdSlider.value)

    def _update_buttons(self, *_):
        running = self.worker is not None
        ready = all(node is not None for node in self._inputs().values())
        self.ui.applyButton.enabled = ready and not running
        self.ui.cancelButton.enabled = running
        has_result = self.result is not None
        for widget in (self.ui.useSeedButton, self.ui.openEditorButton, self.ui.compareButton):
            widget.enabled = has_result and not running

    # ------------------------------------------------------------------ running

    def _apply(self):
        from oncoseg.errors import InputError

        try:
            images = self.logic.start(self._inputs())
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return
        from OncoSegCommonLib.worker import Worker

        self.inputs = self._inputs()
        self.worker = Worker(self.logic.compute, images, self._parameters(), None)  # no seed
        self.ui.statusLabel.text = "Running..."
        self.ui.progressBar.value = 0
        self._update_buttons()
        self.timer.start()

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
            self.result = self.logic.finish(worker.result, self.inputs)
            self._show_result()
        self._update_buttons()

    def _show_result(self):
        prediction = self.result.prediction
        seconds = sum(v for k, v in prediction.timings.items() if k != "total")
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = "\n".join([f"Done in {seconds:.1f} s.", *prediction.messages])
        self._fill_candidates()

    def _fill_candidates(self):
        rows = self.result.candidate_rows()
        table = self.ui.candidateTable
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [str(row["index"]) + (" (kept)" if row["selected"] else ""),
                      f"{row['volume_ml']:.2f}", f"{row['mean_probability']:.2f}",
                      f"{row['max_probability']:.2f}"]
            for c, value in enumerate(values):
                table.setItem(r, c, qt.QTableWidgetItem(value))

    def _choose_row(self, row, _column):
        index = self.result.candidate_rows()[row]["index"]
        self.logic.choose_candidate(self.result, index)
        self._fill_candidates()

    def _use_seed(self):
        markups = self.ui.seedPointSelector.currentNode()
        if markups is None or markups.GetNumberOfControlPoints() == 0:
            slicer.util.errorDisplay("Place a point inside the tumour first.")
            return
        point = [0.0, 0.0, 0.0]
        markups.GetNthControlPointPositionWorld(0, point)
        try:
            self.logic.choose_at_point(self.result, point)
        except ValueError as error:
            slicer.util.errorDisplay(str(error))
            return
        self._fill_candidates()

    def _opacity(self, value):
        from OncoSegCommonLib.probability import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, value)

    def _open_editor(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.nodes.segmentation)
        editor.setSourceVolumeNode(self.result.reference_node)

    def _compare(self):
        reference = self.ui.referenceSelector.currentNode()
        if reference is None:
            slicer.util.errorDisplay("Choose a reference segmentation to compare with.")
            return
        figures = self.logic.compare(self.result, reference)
        self.ui.compareResultLabel.text = ", ".join(f"{k}: {v:.3f}" for k, v in figures.items())

    # ------------------------------------------------------------------ training

    def _train(self):
        from OncoSegCommonLib.training_process import TrainingProcess, training_command
        from RectalSegLib.logic import default_training_output

        dataset = self.ui.datasetPathLineEdit.currentPath
        if not dataset:
            slicer.util.errorDisplay("Choose the data set folder first.")
            return
        name = self.ui.runNameLineEdit.text.strip() or time.strftime("rectal-%Y%m%d-%H%M%S")
        self.training_output = default_training_output(name)
        command = training_command("rectal", dataset, self.training_output,
                                   self.ui.layoutSelector.currentText,
                                   self.ui.deviceSelector.currentText)
        self.training = TrainingProcess(command)
        from OncoSegCommonLib.lossplot import LossPlot

        self.loss_plot = LossPlot(slicer.mrmlScene, self.ui.lossPlotWidget, "RectalSeg training")
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
            self._fill_models(select=model)


class RectalSegLogic(ScriptedLoadableModuleLogic):
    """Slicer's module-logic slot; the real logic is RectalSegLib.logic.RectalSegLogic."""


class RectalSegTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (RectalSegLib.scenarios), in the application."""

    def runTest(self):
        import tempfile

        from OncoSegCommonLib.context import MRMLContext
        from RectalSegLib import scenarios

        slicer.mrmlScene.Clear(0)
        with tempfile.TemporaryDirectory() as folder:
            for scenario in scenarios.ALL:
                self.delayDisplay(scenario.__name__)
                slicer.mrmlScene.Clear(0)
                scenario(MRMLContext.from_application(), Path(folder) / scenario.__name__)
        self.delayDisplay("RectalSeg scenarios passed")
