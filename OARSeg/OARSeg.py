"""OARSeg: organs at risk on pelvic CT (Sartor et al. 2020) and GI-tract organs on abdominal
MR (UW-Madison GI tract, paper 001).

The Qt layer only: the panel binds OARSeg.ui to :class:`OARSegParameterNode` and calls
:class:`OARSegLogic` (``OARSegLib``, no Qt, tested headless on slicer-core); what its buttons do
is the shared panel's (``OncoSegCommonLib.panels``). The mode selector switches the task (one
:class:`OARSegLogic` per task): organs, models, input label and training layouts follow it.
``OARSeg.OARSegLogic`` is that logic, imported on first use.
"""

from typing import Annotated

import qt
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from OncoSegCommonLib import panels
from OncoSegCommonLib.lazy import lazy_attribute


class OARSeg(panels.OncoSegModule):
    help = (
        "CT mode: segments femoral heads, bladder, bowel bag and the nodal CTV on pelvic CT "
        "with a 3D fully convolutional network; each organ keeps its largest connected "
        "component (the nodal CTV both of its sides, less pieces under 0.2 mL), with holes "
        "filled. Trains on clinical RT structure sets, including "
        "patients whose structure sets lack some organs. MR mode: stomach, small and large "
        "bowel on axial abdominal MR, slice by slice with neighbouring slices as context "
        "(FCN-ResNet50), at the threshold tuned on validation data."
    )
    acknowledgement = (
        "Method: Sartor H. et al., Auto-segmentations by convolutional neural network in "
        "cervical and anorectal cancer with clinical structure sets as the ground truth. "
        "Clin Transl Radiat Oncol 25 (2020). MR: GI-tract segmentation on the UW-Madison "
        "Kaggle data with a fully convolutional ResNet-50, after Hueber P., Molhoek J., "
        "van der Voort S., Segmenting MRI scans using deep learning to improve cancer "
        "treatment (CS4245 Seminar Computer Vision by Deep Learning, TU Delft)."
    )


@parameterNodeWrapper
class OARSegParameterNode(panels.PanelSettings):
    """The panel's settings, saved with the scene. A threshold of 0 means the model's own."""

    mode: str = "CT"
    image: vtkMRMLScalarVolumeNode
    threshold: Annotated[float, WithinRange(0.0, 0.95)] = 0.0
    probabilities: bool = False


class OARSegWidget(panels.TaskPanel):
    task_name = "oar-ct"
    layouts = ("rtstruct", "nnunet", "folders", "auto")
    parameters = OARSegParameterNode
    result_table, result_columns = "volumeTable", ("organ", "volume (ml)")

    def setup_module(self):
        from OARSegLib.logic import MODES

        self.mode = None
        for name in MODES:
            self.ui.modeSelector.addItem(name)
        self.ui.modeSelector.connect("currentTextChanged(QString)", self._set_mode)
        self.ui.referenceSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                          self._fill_reference_segments)
        self.ui.compareButton.connect("clicked()", self._compare)
        self._set_mode("CT")

    def _set_mode(self, name):
        """The chosen mode's logic (its task), organs, models, input label and training
        layouts."""
        from OARSegLib.logic import MODES, OARSegLogic

        if name == self.mode:
            return
        if self.controller.running:  # the run in progress finishes with its own task
            self.ui.modeSelector.setCurrentText(self.mode)
            self.show_status("Wait for the run to end (or cancel it) to switch the mode.")
            return
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
        self.controller.forget_result()  # the other task's result is not this one's
        self.update_buttons()

    # ------------------------------------------------------------------ TaskPanel hooks

    def fill_empty_inputs(self):
        from OARSegLib.logic import MODES

        if self.settings.image is None:
            self.settings.image = self.logic.guess_inputs().get(MODES[self.mode].role)

    def _organs(self):
        items = [self.ui.organList.item(i) for i in range(self.ui.organList.count)]
        return tuple(item.text() for item in items if item.checkState() == qt.Qt.Checked)

    def inputs_ready(self):
        return self.settings.image is not None

    def run_inputs(self):
        from OARSegLib.logic import MODES

        return {MODES[self.mode].role: self.settings.image}

    def run_parameters(self):
        from OARSegLib.logic import OARSegParameters

        if not self._organs():
            raise ValueError("Tick at least one organ.")
        threshold = self.settings.threshold
        return self.settings_as(OARSegParameters, mode=self.mode, organs=self._organs(),
                                threshold=threshold if self.mode == "MR" and threshold > 0
                                else None)

    def show_module_result(self, result):
        self.fill_table([(row["organ"], f"{row['volume_ml']:.1f}") for row in result.rows()])

    def clear_module_result(self):
        self.fill_table([])
        self.ui.compareResultLabel.text = ""

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
            self.show_error("Choose a reference segmentation and its segment.")
            return
        organ = self.ui.compareOrganSelector.currentText
        if organ not in self.result.organs:
            self.show_error(f"{organ} was not segmented in this run.")
            return
        figures = self.logic.compare(self.result, reference, organ, segment)
        self.ui.compareResultLabel.text = ", ".join(f"{k}: {v:.3f}" for k, v in figures.items())


# Slicer's name for the module logic: OARSegLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "OARSegLogic", "OARSegLib.logic")


class OARSegTest(panels.OncoSegTest):
    """OARSegLib.scenarios, the headless tests' scenarios, in the application."""
