"""OARSeg: organs at risk on pelvic CT (Sartor et al. 2020) and GI-tract organs on abdominal
MR (UW-Madison GI tract, paper 001).

The Qt layer only: the panel binds OARSeg.ui to :class:`OARSegParameters` and calls
:class:`OARSegLogic` (``OARSegLib``, no Qt, tested headless on slicer-core). The mode selector
switches the task (one :class:`OARSegLogic` per task): organs, models, input label and
training layouts follow it. The run happens in a worker thread polled by a timer; training runs
as a separate process. ``OARSeg.OARSegLogic`` is that logic, imported on first use (see
``__getattr__``).
"""


import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from OncoSegCommonLib.lazy import lazy_attribute
from OncoSegCommonLib.panels import TaskPanel  # (also makes the engine importable)


class OARSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "OARSeg"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "CT mode: segments femoral heads, bladder, bowel bag and the nodal CTV on pelvic CT "
            "with a 3D fully convolutional network; each organ keeps its largest connected "
            "component, with holes filled. Trains on clinical RT structure sets, including "
            "patients whose structure sets lack some organs. MR mode: stomach, small and large "
            "bowel on axial abdominal MR, slice by slice with neighbouring slices as context "
            "(FCN-ResNet50), at the threshold tuned on validation data. Research use only, not "
            "for clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: Sartor H. et al., Auto-segmentations by convolutional neural network in "
            "cervical and anorectal cancer with clinical structure sets as the ground truth. "
            "Clin Transl Radiat Oncol 25 (2020). MR: GI-tract segmentation on the UW-Madison "
            "Kaggle data with a fully convolutional ResNet-50, after Hueber P., Molhoek J., "
            "van der Voort S., Segmenting MRI scans using deep learning to improve cancer "
            "treatment (CS4245 Seminar Computer Vision by Deep Learning, TU Delft)."
        )


class OARSegWidget(ScriptedLoadableModuleWidget, TaskPanel):
    task_name = "oar-ct"
    layouts = ("rtstruct", "nnunet", "folders", "auto")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.dependency_panel import dependencies_ready

        if not dependencies_ready(self.layout):  # only the install section until restarted
            return
        from OARSegLib.logic import MODES, OARSegLogic
        from OncoSegCommonLib.context import MRMLContext

        self.mode = "CT"
        self.setup_panel(self.resourcePath("UI/OARSeg.ui"),
                         OARSegLogic(MRMLContext.from_application()))
        for name in MODES:
            self.ui.modeSelector.addItem(name)
        self.ui.volumeTable.setColumnCount(2)
        self.ui.volumeTable.setHorizontalHeaderLabels(["organ", "volume (ml)"])
        self.ui.modeSelector.connect("currentTextChanged(QString)", self._set_mode)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_buttons)
        self.ui.referenceSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                          self._fill_reference_segments)
        self.ui.compareButton.connect("clicked()", self._compare)
        self._set_mode("CT")

    def cleanup(self):
        self.cleanup_panel()

    def _set_mode(self, name):
        """The chosen mode's logic (its task), organs, models, input label and training
        layouts."""
        from OARSegLib.logic import MODES, OARSegLogic

        mode = MODES[name]
        self.mode, self.task_name, self.layouts = name, mode.task.name, mode.layouts
        self.logic = OARSegLogic(self.logic.context, mode.task)
        self.ui.inputLabel.text = mode.input_label
        self.ui.organList.clear()
        self.ui.compareOrganSelector.clear()
        for organ in mode.organs:
            item = qt.QListWidgetItem(organ)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Checked)
            self.ui.organList.addItem(item)
            self.ui.compareOrganSelector.addItem(organ)
        self.ui.layoutSelector.clear()
        for layout in mode.layouts:
            self.ui.layoutSelector.addItem(layout)
        self.ui.thresholdSpinBox.enabled = name == "MR"
        self.fill_models()
        self.result = None
        self.update_buttons()

    # ------------------------------------------------------------------ TaskPanel hooks

    def _organs(self):
        items = [self.ui.organList.item(i) for i in range(self.ui.organList.count)]
        return tuple(item.text() for item in items if item.checkState() == qt.Qt.Checked)

    def inputs_ready(self):
        return self.ui.inputSelector.currentNode() is not None

    def prepare_run(self):
        from OARSegLib.logic import MODES, OARSegParameters

        if not self._organs():
            raise ValueError("Tick at least one organ.")
        threshold = self.ui.thresholdSpinBox.value
        parameters = OARSegParameters(mode=self.mode, model=self.selected_model(),
                                      device=self.ui.deviceSelector.currentText,
                                      organs=self._organs(),
                                      probabilities=self.ui.probabilitiesCheckBox.checked,
                                      threshold=threshold if self.mode == "MR" and threshold > 0
                                      else None)
        inputs = {MODES[self.mode].role: self.ui.inputSelector.currentNode()}
        self.started = self.logic.start(inputs, parameters.request())
        return self.logic.compute, (self.started,)

    def finish_run(self, prediction):
        return self.logic.finish(prediction, self.started)

    def show_result(self):
        rows = self.result.rows()
        self.ui.volumeTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.ui.volumeTable.setItem(r, 0, qt.QTableWidgetItem(row["organ"]))
            self.ui.volumeTable.setItem(r, 1, qt.QTableWidgetItem(f"{row['volume_ml']:.1f}"))

    # ------------------------------------------------------------------ OARSeg's own

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


# Slicer's name for the module logic: OARSegLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "OARSegLogic", "OARSegLib.logic")


class OARSegTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (OARSegLib.scenarios), in the application."""

    def runTest(self):
        from OARSegLib import scenarios
        from OncoSegCommonLib.checks import run_scenarios_in_app

        run_scenarios_in_app(scenarios.ALL, self.delayDisplay)
        self.delayDisplay("OARSeg scenarios passed")
