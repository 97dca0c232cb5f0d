"""What RectalSeg must do on a scene, written once: pytest runs these headless on slicer-core,
and RectalSegTest runs them in the application. Each takes an MRML context and a scratch
folder, and raises AssertionError when the module misbehaves."""

from __future__ import annotations

from pathlib import Path

from oncoseg.io.volumes import read_image
from oncoseg.verbs import phantom
from OncoSegCommonLib.checks import cancelling_mid_run_changes_nothing
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.segmentations import segmentation_node_from_labels
from OncoSegCommonLib.volumes import update_volume_node, volume_node_from_image
from RectalSegLib.logic import RectalSegLogic, RectalSegParameters, guess_inputs

NODE_NAMES = {"t2w": "T2 axial", "dwi_b0": "DWI b0", "dwi_b1000": "DWI b1000"}
PHANTOM_SEED = 4242  # not a seed the demo model trained on


def load_phantom(context: MRMLContext, folder: Path) -> tuple[dict, Path]:
    """A phantom case as three volume nodes named as a scanner would name them."""
    [case] = phantom("rectal", folder, cases=1, seed=PHANTOM_SEED)
    nodes = {role: volume_node_from_image(context.scene, read_image(case / f"{role}.nii.gz"),
                                          name) for role, name in NODE_NAMES.items()}
    return nodes, case


def _count(context: MRMLContext, class_name: str) -> int:
    return context.scene.GetNumberOfNodesByClass(class_name)


def run_creates_outputs(context: MRMLContext, folder: Path):
    nodes, case = load_phantom(context, folder)
    assert guess_inputs(context.scene) == nodes, "the selectors' auto-fill missed a role"
    segmentations = _count(context, "vtkMRMLSegmentationNode")
    volumes = _count(context, "vtkMRMLScalarVolumeNode")
    result = RectalSegLogic(context).run(nodes)
    assert _count(context, "vtkMRMLSegmentationNode") == segmentations + 1
    # one probability map plus the registered T2w (b1000 shares the b0 grid)
    assert _count(context, "vtkMRMLScalarVolumeNode") == volumes + 2
    assert list(result.nodes.probabilities) == ["Rectal tumour"]
    assert set(result.nodes.volumes) == {"t2w"}
    rows = result.rows()
    assert rows and sum(r["selected"] for r in rows) == 1, rows
    assert result.nodes.segmentation.GetSegmentation().GetNumberOfSegments() == 1
    return result, nodes, case


def choosing_a_candidate_replaces_the_segment(context: MRMLContext, folder: Path) -> None:
    nodes, _ = load_phantom(context, folder)
    logic = RectalSegLogic(context)
    # a low threshold gives several candidates to choose from (the demo trained on 2026-12-07
    # leaves one at 0.05 on this phantom, three at 0.005: the tumour and two of 6-8 voxels)
    result = logic.run(nodes, RectalSegParameters(threshold=0.005).request())
    rows = result.rows()
    assert len(rows) >= 2, f"expected several candidates at p >= 0.005, got {len(rows)}"
    segmentation = result.nodes.segmentation
    before = _segment_voxels(result)
    logic.choose_candidate(result, rows[-1]["index"])
    after = _segment_voxels(result)
    assert after == rows[-1]["voxels"], (after, rows[-1])
    assert after != before
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    assert _count(context, "vtkMRMLSegmentationNode") == 1


def _segment_voxels(result) -> int:
    import SimpleITK as sitk

    from OncoSegCommonLib.segmentations import labels_from_segmentation_node

    labels = labels_from_segmentation_node(result.nodes.segmentation, result.reference)
    return int((sitk.GetArrayViewFromImage(labels) > 0).sum())


def cancelling_leaves_the_scene_unchanged(context: MRMLContext, folder: Path) -> None:
    nodes, _ = load_phantom(context, folder)
    cancelling_mid_run_changes_nothing(
        context, lambda progress, cancel: RectalSegLogic(context).run(
            nodes, progress=progress, cancel=cancel))


def comparing_with_a_reader(context: MRMLContext, folder: Path) -> None:
    result, nodes, case = run_creates_outputs(context, folder)
    from oncoseg.rectal.task import TASK

    truth = read_image(case / "label.nii.gz")
    reader = segmentation_node_from_labels(context.scene, truth, TASK.segments,
                                           nodes["dwi_b0"], "Reader 1")
    figures = RectalSegLogic(context).compare(result, reader)
    assert set(figures) == {"dsc", "hd95_mm", "msd_paper_mm", "msd_pooled_mm", "auc"}, figures
    assert figures["dsc"] > 0.7 and figures["auc"] > 0.95, figures


def dwi_volume_sequence(context: MRMLContext, case: Path, name: str = "ep2d_diff_tra"):
    """The case's b0 and b1000 as one Sequence node, as the DICOM module's MultiVolumeImporter
    loads a DWI series as a "Volume Sequence": index values '0', '1' (frame numbers, empty index
    name and unit) and the MultiVolume attributes copied onto the sequence
    (MultiVolumeImporterPlugin.load)."""
    import slicer

    sequence = context.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("")
    sequence.SetIndexUnit("")
    sequence.SetAttribute("MultiVolume.FrameLabels", "0.0,1000.0")
    sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "Siemens.B-value")
    sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "sec/mm2")
    sequence.SetAttribute("MultiVolume.NumberOfFrames", "2")
    for frame, role in enumerate(("dwi_b0", "dwi_b1000")):
        volume = slicer.vtkMRMLScalarVolumeNode()  # not in the scene: the sequence copies it
        update_volume_node(volume, read_image(case / f"{role}.nii.gz"))
        sequence.SetDataNodeAtValue(volume, str(frame))
    return sequence


def run_with_every_b_value_in_one_sequence(context: MRMLContext, folder: Path) -> None:
    """A DWI series loaded as one sequence gives the segmentation of the separate b0 and b1000
    volumes, and the two images picked become nodes."""
    import numpy as np

    nodes, case = load_phantom(context, folder)
    sequence = dwi_volume_sequence(context, case)
    logic = RectalSegLogic(context)
    fast = RectalSegParameters(registration=False).request()
    separate = logic.run(nodes, fast)
    combined = logic.run({"t2w": nodes["t2w"], "dwi": sequence}, fast)
    assert combined.reference.GetName() == "RectalSeg DWI b=0", \
        combined.reference.GetName()
    assert combined.nodes.volumes["dwi_b1000"].GetName() == "RectalSeg DWI b=1000"
    assert any(m.startswith("dwi: 2 b-values (0, 1000 s/mm^2); b0 = 0, high b = 1000")
               for m in combined.prediction.messages), combined.prediction.messages
    a = _labels(separate)
    b = _labels(combined)
    dice = 2 * float((a & b).sum()) / float(a.sum() + b.sum())
    assert dice >= 0.99 and np.any(a), dice


def _labels(result):
    import SimpleITK as sitk

    from OncoSegCommonLib.segmentations import labels_from_segmentation_node

    labels = labels_from_segmentation_node(result.nodes.segmentation, result.reference)
    return sitk.GetArrayFromImage(labels) > 0


ALL = (run_creates_outputs, choosing_a_candidate_replaces_the_segment,
       cancelling_leaves_the_scene_unchanged, comparing_with_a_reader,
       run_with_every_b_value_in_one_sequence)
