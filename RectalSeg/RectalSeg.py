"""RectalSeg: rectal tumour segmentation on multiparametric MR (Trebeschi et al., Sci Rep 2017).

The Qt layer only: the panel binds RectalSeg.ui to :class:`RectalSegParameterNode` and calls
:class:`RectalSegLogic` (``RectalSegLib``, no Qt, tested headless on slicer-core); what its
buttons do is the shared panel's (``OncoSegCommonLib.panels``). ``RectalSeg.RectalSegLogic`` is
that logic, imported on first use.
"""

from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from OncoSegCommonLib import panels
from OncoSegCommonLib.lazy import lazy_attribute


class RectalSeg(panels.OncoSegModule):
    help = (
        "Segments a rectal tumour on T2-weighted and diffusion-weighted MR (b0 and high b, "
        "or one DWI series with every b-value, from which they are picked): "
        "T2w is registered onto the b0 grid, a patch CNN gives every voxel's tumour "
        "probability, and the largest component of p >= threshold is kept; every candidate "
        "component is listed so you can keep another one."
    )
    acknowledgement = (
        "Method: Trebeschi S. et al., Deep learning for fully-automated localization and "
        "segmentation of rectal cancer on multiparametric MR. Sci Rep 7, 5301 (2017)."
    )


@parameterNodeWrapper
class RectalSegParameterNode(panels.PanelSettings):
    """The panel's settings, saved with the scene (defaults: RectalSegLib's)."""

    t2w: vtkMRMLScalarVolumeNode
    dwi_b0: vtkMRMLScalarVolumeNode
    dwi_b1000: vtkMRMLScalarVolumeNode
    registration: bool = True
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5


class RectalSegWidget(panels.TaskPanel):
    task_name = "rectal"
    layouts = ("auto", "folders", "nnunet")
    parameters = RectalSegParameterNode
    result_table, result_columns = "candidateTable", ("#", "volume (ml)", "mean p", "max p")

    def setup_module(self):
        # the bound selectors update the buttons through the parameter node; this one is not
        self.ui.dwiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_buttons)
        # the diffusion images come in one of two forms: choosing one clears the other
        self.ui.dwiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._one_dwi_form)
        for selector in (self.ui.b0Selector, self.ui.highBSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._two_dwi_volumes)
        self.ui.candidateTable.connect("cellClicked(int,int)", self._choose_row)
        self.ui.useSeedButton.connect("clicked()", self._use_seed)
        self.ui.compareButton.connect("clicked()", self._compare)

    # ------------------------------------------------------------------ TaskPanel hooks

    def run_inputs(self):
        settings = self.settings
        return {"t2w": settings.t2w, "dwi_b0": settings.dwi_b0,
                "dwi_b1000": settings.dwi_b1000, "dwi": self.ui.dwiSelector.currentNode()}

    def fill_empty_inputs(self):
        from RectalSegLib.logic import guess_dwi_node

        super().fill_empty_inputs()
        settings = self.settings
        if settings.dwi_b0 is None and settings.dwi_b1000 is None and \
                self.ui.dwiSelector.currentNode() is None:
            self.ui.dwiSelector.setCurrentNode(guess_dwi_node(slicer.mrmlScene))

    def inputs_ready(self):
        from RectalSegLib.logic import inputs_ready

        return inputs_ready(self.run_inputs())

    def run_parameters(self):
        from RectalSegLib.logic import RectalSegParameters

        # no seed point: the seed selector chooses among the candidates after the run
        return self.settings_as(RectalSegParameters)

    def show_module_result(self, result):
        self.fill_table([
            (str(row["index"]) + (" (kept)" if row["selected"] else ""),
             f"{row['volume_ml']:.2f}", f"{row['mean_probability']:.2f}",
             f"{row['max_probability']:.2f}") for row in result.rows()])

    def clear_module_result(self):
        self.fill_table([])
        self.ui.compareResultLabel.text = ""

    def result_buttons(self):
        return (self.ui.useSeedButton,)

    # ------------------------------------------------------------------ RectalSeg's own

    def _one_dwi_form(self, node):
        if node is not None:
            self.settings.dwi_b0 = None
            self.settings.dwi_b1000 = None

    def _two_dwi_volumes(self, node):
        if node is not None:
            self.ui.dwiSelector.setCurrentNode(None)

    def _choose_row(self, row, _column):
        index = self.result.rows()[row]["index"]
        self.logic.choose_candidate(self.result, index)
        self.show_module_result(self.result)

    def _use_seed(self):
        markups = self.ui.seedPointSelector.currentNode()
        if markups is None or markups.GetNumberOfControlPoints() == 0:
            self.show_error("Place a point inside the tumour first.")
            return
        point = [0.0, 0.0, 0.0]
        markups.GetNthControlPointPositionWorld(0, point)
        try:
            self.logic.choose_at_point(self.result, point)
        except ValueError as error:
            self.show_error(str(error))
            return
        self.show_module_result(self.result)

    def _compare(self):
        reference = self.ui.referenceSelector.currentNode()
        if reference is None:
            self.show_error("Choose a reference segmentation to compare with.")
            return
        figures = self.logic.compare(self.result, reference)
        self.ui.compareResultLabel.text = ", ".join(f"{k}: {v:.3f}" for k, v in figures.items())


# Slicer's name for the module logic: RectalSegLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "RectalSegLogic", "RectalSegLib.logic")


class RectalSegTest(panels.OncoSegTest):
    """RectalSegLib.scenarios, the headless tests' scenarios, in the application."""
