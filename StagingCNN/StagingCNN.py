"""StagingCNN: T2 vs T3 rectal cancer from the T2w volume (paper 002).

The Qt layer only: the panel binds StagingCNN.ui to :class:`StagingCNNParameterNode` and calls
:class:`StagingLogic` (``StagingCNNLib``, no Qt, tested headless on slicer-core); what its
buttons do is the shared panel's (``OncoSegCommonLib.panels``). A click on a point of the
slice-score plot moves the slice views to that slice. ``StagingCNN.StagingCNNLogic`` is that
logic, imported on first use.
"""

from typing import Annotated

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper

from OncoSegCommonLib import panels
from OncoSegCommonLib.lazy import lazy_attribute


class StagingCNN(panels.OncoSegModule):
    help = (
        "Discriminates T2 from T3 rectal cancer on an axial T2w volume: N4 bias-field "
        "correction, a crop around rectum and tumour (place an ROI), every slice resized to "
        "256 x 256; a ResNet-18 style network with 3D convolution in its last stage (f-rMC5) "
        "and bilinear pooling over slices gives P(T3), the stage at the model's threshold, "
        "and a score per slice. P(T3) is a calibrated probability when the model file holds "
        "a calibration (Platt scaling fitted on validation cases; the demo's does); the panel "
        "says when it is only the network's score."
    )
    acknowledgement = (
        "Method: a ResNet-18 based volumetric CNN for preoperative T2 / T3 staging of rectal "
        "cancer on MR, with late 3D fusion (f-rMC5), bilinear depth aggregation and focal + "
        "triplet loss (AUC 0.831 on 10-fold cross-validation). The paper's text as OncoSeg "
        "received it (keywords: Rectal Cancer Staging, Medical Volume Classification, "
        "Convolutional Neural Network, Anisotropy) carries no title or authors to cite."
    )


@parameterNodeWrapper
class StagingCNNParameterNode(panels.PanelSettings):
    """The panel's settings, saved with the scene. A threshold of 0 means the model's own."""

    t2w: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    threshold: Annotated[float, WithinRange(0.0, 0.95)] = 0.0
    tta: Annotated[int, WithinRange(1, 32)] = 8


class StagingCNNWidget(panels.TaskPanel):
    task_name = "staging"
    layouts = ("staging", "auto")
    parameters = StagingCNNParameterNode

    def setup_module(self):
        self.ui.slicePlotWidget.plotView().connect("dataSelected(vtkStringArray*, vtkCollection*)",
                                                   self._slice_clicked)
        self.ui.reportButton.connect("clicked()", self._report)

    # ------------------------------------------------------------------ TaskPanel hooks

    def inputs_ready(self):
        return self.settings.t2w is not None

    def run_inputs(self):
        # the markups ROI (if any) becomes the crop box in start
        return {"t2w": self.settings.t2w, "roi": self.settings.roi}

    def run_parameters(self):
        from StagingCNNLib.logic import StagingParameters

        return self.settings_as(StagingParameters, threshold=self.settings.threshold or None)

    def show_module_result(self, result):
        from OncoSegCommonLib.lossplot import panel_plot_view

        self.ui.stageLabel.text = result.summary()
        view = panel_plot_view(slicer.mrmlScene, "StagingCNN view")
        view.SetPlotChartNodeID(result.chart.GetID())
        self.ui.slicePlotWidget.setMRMLPlotViewNode(view)

    def clear_module_result(self):
        self.ui.stageLabel.text = ""
        self.ui.reportStatusLabel.text = ""

    def _report(self):
        """The result as a DICOM SR (StagingCNNLib.logic.report_stage does the work)."""
        from oncoseg.errors import InputError
        from StagingCNNLib.logic import report_stage

        output = self.ui.reportOutputPathLineEdit.currentPath
        if self.result is None or not output:
            self.ui.reportStatusLabel.text = "Stage a T2w first, then choose the SR file."
            return
        try:
            written = report_stage(self.result, self.settings.t2w, output,
                                   self.ui.reportSeriesPathLineEdit.currentPath or None,
                                   self.ui.reportOverwriteCheckBox.checked,
                                   getattr(slicer, "dicomDatabase", None))
        except InputError as error:
            self.ui.reportStatusLabel.text = str(error)
            return
        self.ui.reportStatusLabel.text = f"Wrote {written.path}"

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


class StagingCNNTest(panels.OncoSegTest):
    """StagingCNNLib.scenarios, the headless tests' scenarios, in the application."""
