"""BrainTumor2D3D: brain tumour sub-regions from T1, T1c, T2 and FLAIR, any of them missing
(paper 004).

The Qt layer only: the panel binds BrainTumor2D3D.ui to :class:`BrainTumor2D3DParameterNode`
and calls :class:`BrainTumorLogic` (``BrainTumor2D3DLib``, no Qt, tested headless on
slicer-core); what its buttons do is the shared panel's (``OncoSegCommonLib.panels``).
``BrainTumor2D3D.BrainTumor2D3DLogic`` is that logic, imported on first use.
"""

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import parameterNodeWrapper

from OncoSegCommonLib import panels
from OncoSegCommonLib.lazy import lazy_attribute

ROLES = ("t1", "t1c", "t2", "flair")


class BrainTumor2D3D(panels.OncoSegModule):
    help = (
        "Segments a brain tumour into necrotic / non-enhancing core, oedema and enhancing "
        "tumour from T1, T1c, T2 and FLAIR, any of which may be missing. Three 2D networks "
        "(axial, coronal and sagittal slices) with one subnetwork per sequence feed 3D "
        "networks whose segmentations are merged by a hierarchical vote."
    )
    acknowledgement = (
        "Method: Mlynarski P., Delingette H., Criminisi A., Ayache N., 3D convolutional "
        "neural networks for tumor segmentation using long-range 2D context (2018), "
        "HAL hal-01883716."
    )


@parameterNodeWrapper
class BrainTumor2D3DParameterNode(panels.PanelSettings):
    """The panel's settings, saved with the scene (defaults: BrainTumor2D3DLib's)."""

    t1: vtkMRMLScalarVolumeNode
    t1c: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    probabilities: bool = True
    members: bool = False


class BrainTumor2D3DWidget(panels.TaskPanel):
    task_name = "brain"
    layouts = ("brats", "nnunet", "auto")
    parameters = BrainTumor2D3DParameterNode
    result_table, result_columns = "volumeTable", ("Region", "Volume (mL)")

    # ------------------------------------------------------------------ TaskPanel hooks

    def run_inputs(self):
        return {role: getattr(self.settings, role) for role in ROLES}

    def inputs_ready(self):
        return any(node is not None for node in self.run_inputs().values())

    def run_parameters(self):
        from BrainTumor2D3DLib.logic import BrainParameters

        return self.settings_as(BrainParameters)

    def show_module_result(self, result):
        self.ui.summaryLabel.text = result.summary()
        self.fill_table([(row["region"], f"{row['volume_ml']:.1f}") for row in result.rows()])

    def clear_module_result(self):
        self.ui.summaryLabel.text = ""
        self.fill_table([])


# Slicer's name for the module logic: BrainTumor2D3DLib's, imported on first use
__getattr__ = lazy_attribute(__name__, "BrainTumor2D3DLogic", "BrainTumor2D3DLib.logic",
                             "BrainTumorLogic")


class BrainTumor2D3DTest(panels.OncoSegTest):
    """BrainTumor2D3DLib.scenarios, the headless tests' scenarios, in the application."""
