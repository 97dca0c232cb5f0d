"""StagingCNN: T2 vs T3 rectal cancer from the T2w volume (paper 002).

The Qt layer only: the panel binds StagingCNN.ui to :class:`StagingParameters` and calls
:class:`StagingLogic` (``StagingCNNLib``, no Qt, tested headless on slicer-core). The run
happens in a worker thread polled by a timer; training runs as a separate process. A click on a
point of the slice-score plot moves the slice views to that slice. ``StagingCNN.StagingCNNLogic``
is that logic, imported on first use (see ``__getattr__``).
"""


import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from OncoSegCommonLib.lazy import lazy_attribute
from OncoSegCommonLib.panels import TaskPanel  # (also makes the engine importable)


class StagingCNN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "StagingCNN"
        self.parent.categories = ["OncoSeg"]
        self.parent.dependencies = ["OncoSegCommon"]
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = (
            "Discriminates T2 from T3 rectal cancer on an axial T2w volume: N4 bias-field "
            "correction, a crop around rectum and tumour (place an ROI), every slice resized to "
            "256 x 256; a ResNet-18 style network with 3D convolution in its last stage (f-rMC5) "
            "and bilinear pooling over slices gives P(T3), the stage at the model's threshold, "
            "and a score per slice. Research use only, not for clinical use."
        )
        self.parent.acknowledgementText = (
            "Method: a ResNet-18 based volumetric CNN for preoperative T2 / T3 staging of rectal "
            "cancer on MR, with late 3D fusion (f-rMC5), bilinear depth aggregation and focal + "
            "triplet loss (AUC 0.831 on 10-fold cross-validation). The paper's text as OncoSeg "
            "received it (keywords: Rectal Cancer Staging, Medical Volume Classification, "
            "Convolutional Neural Network, Anisotropy) carries no title or authors to cite."
        )


class StagingCNNWidget(ScriptedLoadableModuleWidget, TaskPanel):
    task_name = "staging"
    layouts = ("staging", "auto")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from OncoSegCommonLib.dependency_panel import dependencies_ready

        if not dependencies_ready(self.layout):  # only the install section until restarted
            return
        from OncoSegCommonLib.context import MRMLContext
        from StagingCNNLib.logic import StagingLogic

        self.setup_panel(self.resourcePath("UI/StagingCNN.ui"),
                         StagingLogic(MRMLContext.from_application()))
        self.ui.t2wSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_buttons)
        self.ui.slicePlotWidget.plotView().connect("dataSelected(vtkStringArray*, vtkCollection*)",
                                                   self._slice_clicked)
        self.update_buttons()

    def cleanup(self):
        self.cleanup_panel()

    # ------------------------------------------------------------------ TaskPanel hooks

    def inputs_ready(self):
        return self.ui.t2wSelector.currentNode() is not None

    def prepare_run(self):
        from StagingCNNLib.logic import StagingParameters

        threshold = self.ui.thresholdSpinBox.value
        parameters = StagingParameters(model=self.selected_model(),
                                       device=self.ui.deviceSelector.currentText,
                                       tta=self.ui.ttaSpinBox.value,
                                       threshold=threshold if threshold > 0 else None)
        # the markups ROI (if any) becomes the crop box in start
        inputs = {"t2w": self.ui.t2wSelector.currentNode(),
                  "roi": self.ui.roiSelector.currentNode()}
        self.started = self.logic.start(inputs, parameters.request())
        return self.logic.compute, (self.started,)

    def finish_run(self, prediction):
        return self.logic.finish(prediction, self.started)

    def show_result(self):
        self.ui.stageLabel.text = self.result.summary()
        view = getattr(self, "plot_view", None)
        if view is None or slicer.mrmlScene.GetNodeByID(view.GetID()) is None:
            # one view for the panel's plot, reused by every run
            view = self.plot_view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotViewNode",
                                                                       "StagingCNN view")
        view.SetPlotChartNodeID(self.result.chart.GetID())
        self.ui.slicePlotWidget.setMRMLPlotViewNode(view)

    # ------------------------------------------------------------------ StagingCNN's own

    def _slice_clicked(self, series_ids, points):
        """The plot reports the clicked points per series; the point's index is the slice."""
        if self.result is None or points.GetNumberOfItems() == 0:
            return
        selected = points.GetItemAsObject(0)
        if selected is not None and selected.GetNumberOfTuples() > 0:
            self.logic.jump_to_slice(self.result, int(selected.GetValue(0)))


# Slicer's name for the module logic: StagingCNNLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "StagingCNNLogic", "StagingCNNLib.logic",
                             "StagingLogic")


class StagingCNNTest(ScriptedLoadableModuleTest):
    """The same scenarios as the headless tests (StagingCNNLib.scenarios), in the application."""

    def runTest(self):
        from OncoSegCommonLib.checks import run_scenarios_in_app
        from StagingCNNLib import scenarios

        run_scenarios_in_app(scenarios.ALL, self.delayDisplay)
        self.delayDisplay("StagingCNN scenarios passed")
