"""RectalSeg: rectal tumour segmentation on multiparametric MR (Trebeschi et al., Sci Rep 2017).

The Qt layer only: the panel binds RectalSeg.ui to :class:`RectalSegParameters` and calls
:class:`RectalSegLogic` (``RectalSegLib``, no Qt), which is tested headless on slicer-core. The
run happens in a worker thread polled by a timer; training runs as a separate process.
``RectalSeg.RectalSegLogic`` is that logic, imported on first use (see ``__getattr__``).
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


class RectalSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "RectalSeg"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Segments a rectal tumour on T2-weighted and diffusion-weighted MR (b0 and high b, "
            "or one DWI series with every b-value, from which they are picked): "
            "T2w is registered onto the b0 grid, a patch CNN gives every voxel's tumour "
            "probability, and the largest component of p >= threshold is kept; every candidate "
            "component is listed so you can keep another one. Research use only, not for "
            "clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: Trebeschi S. et al., Deep learning for fully-automated localization and "
            "segmentation of rectal cancer on multiparametric MR. Sci Rep 7, 5301 (2017)."
        )


class RectalSegWidget(ScriptedLoadableModuleWidget, TaskPanel):
    task_name = "rectal"
    layouts = ("auto", "folders", "nnunet")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.dependency_panel import dependencies_ready

        if not dependencies_ready(self.layout):  # only the install section until restarted
            return
        from OncoSegCommonLib.context import MRMLContext
        from RectalSegLib.logic import RectalSegLogic

        self.setup_panel(self.resourcePath("UI/RectalSeg.ui"),
                         RectalSegLogic(MRMLContext.from_application()))
        self.ui.candidateTable.setColumnCount(4)
        self.ui.candidateTable.setHorizontalHeaderLabels(
            ["#", "volume (ml)", "mean p", "max p"])
        self._fill_inputs()
        for selector in (self.ui.t2wSelector, self.ui.b0Selector, self.ui.highBSelector,
                         self.ui.dwiSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_buttons)
        # the diffusion images come in one of two forms: choosing one clears the other
        self.ui.dwiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._one_dwi_form)
        for selector in (self.ui.b0Selector, self.ui.highBSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._two_dwi_volumes)
        self.ui.candidateTable.connect("cellClicked(int,int)", self._choose_row)
        self.ui.useSeedButton.connect("clicked()", self._use_seed)
        self.ui.compareButton.connect("clicked()", self._compare)
        self.update_buttons()

    def cleanup(self):
        self.cleanup_panel()

    # ------------------------------------------------------------------ TaskPanel hooks

    def _inputs(self):
        return {"t2w": self.ui.t2wSelector.currentNode(),
                "dwi_b0": self.ui.b0Selector.currentNode(),
                "dwi_b1000": self.ui.highBSelector.currentNode(),
                "dwi": self.ui.dwiSelector.currentNode()}

    def inputs_ready(self):
        from RectalSegLib.logic import inputs_ready

        return inputs_ready(self._inputs())

    def prepare_run(self):
        from RectalSegLib.logic import RectalSegParameters

        parameters = RectalSegParameters(model=self.selected_model(),
                                         device=self.ui.deviceSelector.currentText,
                                         registration=self.ui.registrationCheckBox.checked,
                                         threshold=self.ui.thresholdSlider.value)
        # no seed point: the seed selector chooses among the candidates after the run
        self.started = self.logic.start(self._inputs(), parameters.request())
        return self.logic.compute, (self.started,)

    def finish_run(self, prediction):
        return self.logic.finish(prediction, self.started)

    def show_result(self):
        rows = self.result.rows()
        table = self.ui.candidateTable
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [str(row["index"]) + (" (kept)" if row["selected"] else ""),
                      f"{row['volume_ml']:.2f}", f"{row['mean_probability']:.2f}",
                      f"{row['max_probability']:.2f}"]
            for c, value in enumerate(values):
                table.setItem(r, c, qt.QTableWidgetItem(value))

    def result_buttons(self):
        return (self.ui.useSeedButton,)

    # ------------------------------------------------------------------ RectalSeg's own

    def _fill_inputs(self):
        from RectalSegLib.logic import guess_inputs

        found = guess_inputs(slicer.mrmlScene)
        for role, selector in (("t2w", self.ui.t2wSelector), ("dwi_b0", self.ui.b0Selector),
                               ("dwi_b1000", self.ui.highBSelector)):
            if selector.currentNode() is None and found[role] is not None:
                selector.setCurrentNode(found[role])
        if found["dwi_b0"] is None and found["dwi_b1000"] is None and \
                self.ui.dwiSelector.currentNode() is None:
            from RectalSegLib.logic import guess_dwi_node

            self.ui.dwiSelector.setCurrentNode(guess_dwi_node(slicer.mrmlScene))

    def _one_dwi_form(self, node):
        if node is not None:
            self.ui.b0Selector.setCurrentNode(None)
            self.ui.highBSelector.setCurrentNode(None)

    def _two_dwi_volumes(self, node):
        if node is not None:
            self.ui.dwiSelector.setCurrentNode(None)

    def _choose_row(self, row, _column):
        index = self.result.rows()[row]["index"]
        self.logic.choose_candidate(self.result, index)
        self.show_result()

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
        self.show_result()

    def _compare(self):
        reference = self.ui.referenceSelector.currentNode()
        if reference is None:
            slicer.util.errorDisplay("Choose a reference segmentation to compare with.")
            return
        figures = self.logic.compare(self.result, reference)
        self.ui.compareResultLabel.text = ", ".join(f"{k}: {v:.3f}" for k, v in figures.items())


# Slicer's name for the module logic: RectalSegLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "RectalSegLogic", "RectalSegLib.logic")


class RectalSegTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (RectalSegLib.scenarios), in the application."""

    def runTest(self):
        from OncoSegCommonLib.checks import run_scenarios_in_app
        from RectalSegLib import scenarios

        run_scenarios_in_app(scenarios.ALL, self.delayDisplay)
        self.delayDisplay("RectalSeg scenarios passed")
