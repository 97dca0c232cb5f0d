"""OARSeg: organs at risk on pelvic CT (Sartor et al. 2020).

The Qt layer only: the panel binds OARSeg.ui to :class:`OARSegParameters` and calls
:class:`OARSegLogic` (``OARSegLib``, no Qt, tested headless on slicer-core). The run happens in
a worker thread polled by a timer; training runs as a separate process.
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


class OARSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OARSeg"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Segments femoral heads, bladder, bowel bag and the nodal CTV on pelvic CT with a 3D "
            "fully convolutional network; each organ keeps its largest connected component, "
            "with holes filled. Trains on clinical RT structure sets, including patients whose "
            "structure sets lack some organs. Research use only, not for clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: Sartor H. et al., Auto-segmentations by convolutional neural network in "
            "cervical and anorectal cancer with clinical structure sets as the ground truth. "
            "Clin Transl Radiat Oncol 25 (2020)."
        )


class OARSegWidget(ScriptedLoadableModuleWidget):
    POLL_MS = 100

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OARSegLib.logic import ORGANS, OARSegLogic
        from OncoSegCommonLib.context import MRMLContext

        panel = slicer.util.loadUI(self.resourcePath("UI/OARSeg.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = OARSegLogic(MRMLContext.from_application())
        self.result = None
        self.worker = None
        self.training = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self._poll)

        for organ in ORGANS:
            item = qt.QListWidgetItem(organ)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            self.ui.organList.addItem(item)
            self.ui.compareOrganSelector.addItem(organ)
        for device in ("auto", "cpu", "cuda"):
            self.ui.deviceSelector.addItem(device)
        for layout in ("rtstruct", "nnunet", "folders", "auto"):
            self.ui.layoutSelector.addItem(layout)
        self.ui.volumeTable.setColumnCount(2)
        self.ui.volumeTable.setHorizontalHeaderLabels(["organ", "volume (ml)"])
        self._fill_models()

        self.ui.ctSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._update_buttons)
        self.ui.referenceSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                          self._fill_reference_segments)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self._show_model)
        self.ui.modelBrowseButton.connect("clicked()", self._browse_model)
        self.ui.applyButton.connect("clicked()", self._apply)
        self.ui.cancelButton.connect("clicked()", self._cancel)
        self.ui.opacitySlider.connect("valueChanged(double)", self._opacity)
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
            choice = model_choice(path, "oar-ct", Path(path).name)
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return
        self.models.append(choice)
        self.ui.modelSelector.addItem(choice.label, str(choice.path))
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.count - 1)

    def _organs(self):
        items = [self.ui.organList.item(i) for i in range(self.ui.organList.count)]
        return tuple(item.text() for item in items if item.checkState() == qt.Qt.Checked)

    def _parameters(self):
        from OARSegLib.logic import OARSegParameters

        return OARSegParameters(model=self.ui.modelSelector.currentData or "demo",
                                device=self.ui.deviceSelector.currentText,
                                organs=self._organs(),
                                probabilities=self.ui.probabilitiesCheckBox.checked)

    def _update_buttons(self, *_):
        running = self.worker is not None
        self.ui.applyButton.enabled = self.ui.ctSelector.currentNode() is not None and not running
        self.ui.cancelButton.enabled = running
        for widget in (self.ui.openEditorButton, self.ui.compareButton):
            widget.enabled = self.result is not None and not running

    # ------------------------------------------------------------------ running

    def _apply(self):
        from oncoseg.errors import InputError
        from OncoSegCommonLib.worker import Worker

        if not self._organs():
            slicer.util.errorDisplay("Tick at least one organ.")
            return
        self.ct_node = self.ui.ctSelector.currentNode()
        try:
            images = self.logic.start(self.ct_node)
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return
        self.worker = Worker(self.logic.compute, images, self._parameters())
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
            self.result = self.logic.finish(worker.result, self.ct_node)
            self._show_result()
        self._update_buttons()

    def _show_result(self):
        prediction = self.result.prediction
        seconds = sum(v for k, v in prediction.timings.items() if k != "total")
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = "\n".join([f"Done in {seconds:.1f} s.", *prediction.messages])
        rows = self.result.volume_rows()
        self.ui.volumeTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.ui.volumeTable.setItem(r, 0, qt.QTableWidgetItem(row["organ"]))
            self.ui.volumeTable.setItem(r, 1, qt.QTableWidgetItem(f"{row['volume_ml']:.1f}"))

    def _opacity(self, value):
        from OncoSegCommonLib.probability import set_overlay_opacity

        set_overlay_opacity(slicer.mrmlScene, value)

    def _open_editor(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.nodes.segmentation)
        editor.setSourceVolumeNode(self.result.reference_node)

    def _fill_reference_segments(self, node):
        self.ui.referenceSegmentSelector.clear()
        if node is None:
            return
        segmentation = node.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            self.ui.referenceSegmentSelector.addItem(
                segmentation.GetNthSegment(index).GetName(),
                segmentation.GetNthSegmentID(index))

    def _compare(self):
        reference = self.ui.referenceSelector.currentNode()
        segment = self.ui.referenceSegmentSelector.currentData
        if reference is None or not segment:
            slicer.util.errorDisplay("Choose a reference segmentation and its segment.")
            return
        organ = self.ui.compareOrganSelector.currentText
        if organ not in self.result.organs:
            slicer.util.errorDisplay(f"{organ} was not segmented in this run.")
            return
        figures = self.logic.compare(self.result, reference, organ, segment)
        self.ui.compareResultLabel.text = ", ".join(f"{k}: {v:.3f}" for k, v in figures.items())

    # ------------------------------------------------------------------ training

    def _train(self):
        from OncoSegCommonLib.lossplot import LossPlot
        from OncoSegCommonLib.models import models_folder
        from OncoSegCommonLib.training_process import TrainingProcess, training_command

        dataset = self.ui.datasetPathLineEdit.currentPath
        if not dataset:
            slicer.util.errorDisplay("Choose the cohort folder first.")
            return
        name = self.ui.runNameLineEdit.text.strip() or time.strftime("oar-ct-%Y%m%d-%H%M%S")
        self.training_output = models_folder("oar-ct") / name
        self.training = TrainingProcess(training_command(
            "oar-ct", dataset, self.training_output, self.ui.layoutSelector.currentText,
            self.ui.deviceSelector.currentText))
        self.loss_plot = LossPlot(slicer.mrmlScene, self.ui.lossPlotWidget, "OARSeg training")
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


class OARSegLogic(ScriptedLoadableModuleLogic):
    """Slicer's module-logic slot; the real logic is OARSegLib.logic.OARSegLogic."""


class OARSegTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (OARSegLib.scenarios), in the application."""

    def runTest(self):
        import tempfile

        from OARSegLib import scenarios
        from OncoSegCommonLib.context import MRMLContext

        with tempfile.TemporaryDirectory() as folder:
            for scenario in scenarios.ALL:
                self.delayDisplay(scenario.__name__)
                slicer.mrmlScene.Clear(0)
                scenario(MRMLContext.from_application(), Path(folder) / scenario.__name__)
        self.delayDisplay("OARSeg scenarios passed")
