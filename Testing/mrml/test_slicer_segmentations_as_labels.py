"""A Slicer segmentation saved next to a scan, used as the case's labels for training and
evaluation: read by its segments' names.

A researcher corrects or draws the organs in Slicer's Segment Editor and saves the
segmentation (``label.seg.nrrd``) in the case folder. Slicer numbers the segments in the order
they were drawn; until 2026-12-07 OncoSeg took those numbers for its own, so a bladder drawn
first was read as "Femoral head L" (label 1), in training and evaluation alike, without a
word. The files here are written by Slicer's own storage node (slicer-core).
"""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from oncoseg.cli import main
from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.io.segnrrd import read_seg_nrrd
from oncoseg.io.volumes import read_image
from oncoseg.oar.ct.evaluation import organ_figures
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct
from oncoseg.tasks import SegmentSpec
from OncoSegCommonLib.segmentations import segmentation_node_from_labels
from OncoSegCommonLib.volumes import volume_node_from_image

TASK_LABEL = {s.name: s.label for s in CT_SEGMENTS}


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory):
    """One pelvic CT phantom as NIfTI with its label map (OncoSeg's values)."""
    root = tmp_path_factory.mktemp("ct")
    assert main(["phantom", "oar-ct", "--cases", "1", "--seed", "9", "--layout", "nnunet",
                 "--output", str(root / "nn"), "--progress", "none"]) == 0
    return root / "nn" / "imagesTr" / "oarct_000_0000.nii.gz", \
        root / "nn" / "labelsTr" / "oarct_000.nii.gz"


def _saved_by_slicer(mrml, phantom_ct, folder, drawn):
    """The case folder: the CT and the segments ``drawn`` (their names in Slicer, in the
    order drawn, each the voxels of the task's organ it is), saved by Slicer's storage
    node as label.seg.nrrd."""
    ct_path, label_path = phantom_ct
    folder.mkdir(parents=True)
    shutil.copyfile(ct_path, folder / "ct.nii.gz")
    truth = sitk.GetArrayFromImage(read_image(label_path))
    order = np.zeros_like(truth)
    specs = []
    for index, (slicer_name, organ) in enumerate(drawn, start=1):
        order[truth == TASK_LABEL[organ]] = index
        specs.append(SegmentSpec(index, slicer_name, (0.2 * index % 1, 0.5, 0.7)))
    labels = sitk.GetImageFromArray(order)
    labels.CopyInformation(read_image(label_path))
    volume = volume_node_from_image(mrml.scene, read_image(ct_path), "ct")
    node = segmentation_node_from_labels(mrml.scene, labels, specs, volume, "drawn")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(folder / "label.seg.nrrd"))
    assert storage.WriteData(node) == 1
    return truth


def test_a_slicer_segmentation_is_read_by_its_segments_names(mrml, phantom_ct, tmp_path):
    """Drawn bladder first, named as readers name them (TG-263, other case and spacing), the
    nodal CTV not drawn: each organ lands on its own label, and the CTV is unknown for the
    case (not annotated), as in a structure set that lacks it."""
    drawn = [("Bladder", "Bladder"), ("Femur_Head_L", "Femoral head L"),
             ("femoral head r", "Femoral head R"), ("Bowel Bag", "Bowel bag")]
    truth = _saved_by_slicer(mrml, phantom_ct, tmp_path / "data" / "oarct_000", drawn)
    values = {s.name: s.label_value for s in read_seg_nrrd(
        tmp_path / "data" / "oarct_000" / "label.seg.nrrd").segments}
    assert values["Bladder"] != TASK_LABEL["Bladder"]  # Slicer's own numbering differs
    (case,) = read_dataset(tmp_path / "data", "auto", ["ct"]).cases
    ct = read_case_ct(case)
    labels, annotated = case_labels(case, ct)
    np.testing.assert_array_equal(labels, np.where(truth == TASK_LABEL["Nodal CTV"], 0, truth))
    assert annotated == ["Femoral head L", "Femoral head R", "Bladder", "Bowel bag"]
    figures = organ_figures(case, lambda _ct: SimpleNamespace(labels=read_image(
        phantom_ct[1])))  # the task's own truth as the "prediction"
    assert figures["dice_bladder"] == pytest.approx(1.0)
    assert figures["dice_femoral_head_l"] == pytest.approx(1.0)
    assert figures["dice_nodal_ctv"] is None


def test_a_segment_the_task_does_not_know_is_refused_by_name(mrml, phantom_ct, tmp_path):
    drawn = [("Bladder", "Bladder"), ("Rectum", "Bowel bag")]
    _saved_by_slicer(mrml, phantom_ct, tmp_path / "data" / "oarct_000", drawn)
    (case,) = read_dataset(tmp_path / "data", "auto", ["ct"]).cases
    with pytest.raises(InputError, match=r"case 'oarct_000'.*label file label\.seg\.nrrd: "
                       r"segment\(s\) 'Rectum' match none of the task's"):
        case_labels(case, read_case_ct(case))
