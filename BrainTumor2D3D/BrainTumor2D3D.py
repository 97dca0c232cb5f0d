"""BrainTumor2D3D: brain tumour sub-regions from T1, T1c, T2 and FLAIR, any of them missing
(paper 004).

The Qt layer only: the panel binds BrainTumor2D3D.ui and calls :class:`BrainTumorLogic`
(``BrainTumor2D3DLib``, no Qt, tested headless on slicer-core). The run happens in a worker
thread polled by a timer; training runs as a separate process.
``BrainTumor2D3D.BrainTumor2D3DLogic`` is that logic, imported on first use (see
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

SELECTORS = {"t1": "t1Selector", "t1c": "t1cSelector", "t2": "t2Selector",
             "flair": "flairSelector"}


class BrainTumor2D3D(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BrainTumor2D3D"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Segments a brain tumour into necrotic / non-enhancing core, oedema and enhancing "
            "tumour from T1, T1c, T2 and FLAIR, any of which may be missing. Three 2D networks "
            "(axial, coronal and sagittal slices) with one subnetwork per sequence feed 3D "
            "networks whose segmentations are merged by a hierarchical vote. Research use only, "
            "not for clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: Mlynarski P., Delingette H., Criminisi A., Ayache N., 3D convolutional "
            "neural networks for tumor segmentation using long-range 2D context (2018), "
            "HAL hal-01883716."
        )


class BrainTumor2D3DWidget(ScriptedLoadableModuleWidget, TaskPanel):
    task_name = "brain"
    layouts = ("brats", "nnunet", "auto")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.dependency_panel import dependencies_ready

        if not dependencies_ready(self.layout):  # only the install section until restarted
            return
        from BrainTumor2D3DLib.logic import BrainTumorLogic, guess_inputs
        from OncoSegCommonLib.context import MRMLContext

        self.setup_panel(self.resourcePath("UI/BrainTumor2D3D.ui"),
                         BrainTumorLogic(MRMLContext.from_application()))
        self.ui.volumeTable.setColumnCount(2)
        self.ui.volumeTable.setHorizontalHeaderLabels(["Region", "Volume (mL)"])
        for role, node in guess_inputs(slicer.mrmlScene).items():
            if node is not None:
                getattr(self.ui, SELECTORS[role]).setCurrentNode(node)
        for name in SELECTORS.values():
            getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)",
                                           self.update_buttons)
        self.update_buttons()

    def cleanup(self):
        self.cleanup_panel()

    # ------------------------------------------------------------------ TaskPanel hooks

    def _inputs(self):
        return {role: getattr(self.ui, name).currentNode() for role, name in SELECTORS.items()}

    def inputs_ready(self):
        return any(node is not None for node in self._inputs().values())

    def prepare_run(self):
        from BrainTumor2D3DLib.logic import BrainParameters

        parameters = BrainParameters(model=self.selected_model(),
                                     device=self.ui.deviceSelector.currentText,
                                     probabilities=self.ui.probabilitiesCheckBox.checked,
                                     members=self.ui.membersCheckBox.checked)
        self.started = self.logic.start(self._inputs(), parameters.request())
        return self.logic.compute, (self.started,)

    def finish_run(self, prediction):
        return self.logic.finish(prediction, self.started)

    def show_result(self):
        self.ui.summaryLabel.text = self.result.summary()
        rows = self.result.rows()
        self.ui.volumeTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.ui.volumeTable.setItem(r, 0, qt.QTableWidgetItem(row["region"]))
            self.ui.volumeTable.setItem(r, 1, qt.QTableWidgetItem(f"{row['volume_ml']:.1f}"))


# Slicer's name for the module logic: BrainTumor2D3DLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "BrainTumor2D3DLogic", "BrainTumor2D3DLib.logic",
                             "BrainTumorLogic")


class BrainTumor2D3DTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (BrainTumor2D3DLib.scenarios), in the app."""

    def runTest(self):
        from BrainTumor2D3DLib import scenarios
        from OncoSegCommonLib.checks import run_scenarios_in_app

        run_scenarios_in_app(scenarios.ALL, self.delayDisplay)
        self.delayDisplay("BrainTumor2D3D scenarios passed")
