"""Slicer segmentation files (``.seg.nrrd``) as a case's labels: each segment is the task's
segment of its name (or coded meaning), never the value Slicer's drawing order gave it.
(Files written by Slicer's own storage node: Testing/mrml/test_slicer_segmentations_as_labels.py.)
"""

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.datasets.base import Case, label_file_on
from oncoseg.datasets.cache import case_key
from oncoseg.errors import InputError
from oncoseg.io.segnrrd import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.rectal.task import TASK as RECTAL

SPEC = {s.name: s for s in CT_SEGMENTS}


def _grid() -> sitk.Image:
    image = sitk.Image(12, 10, 6, sitk.sitkInt16)
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((-10.0, 5.0, 20.0))
    return image


def _masks(shape):
    a = np.zeros(shape, bool)
    a[1:4, 2:6, 2:7] = True
    b = np.zeros(shape, bool)
    b[2:5, 4:9, 5:11] = True  # overlaps a
    return a, b


def test_overlapping_segments_the_later_of_the_tasks_wins(tmp_path):
    """Overlapping segments are layers (a 4D file); where they overlap the task's later
    segment takes the voxel, as for a structure set (rtstruct_cohort.load_labels)."""
    grid = _grid()
    bowel, bladder = _masks(sitk.GetArrayViewFromImage(grid).shape)
    path = write_seg_nrrd(Segmentation.from_masks(grid, [bowel, bladder], [
        Segment("a", "Bag_Bowel", (0.5, 0.5, 0.2)), Segment("b", "Bladder", (0.9, 0.9, 0.2))]),
        tmp_path / "label.seg.nrrd")
    assert len(read_seg_nrrd(path).layers) == 2
    labels = label_file_on(path, grid, "c1", "ct", segments=CT_SEGMENTS)
    expected = np.zeros(bowel.shape, np.uint8)
    expected[bladder] = SPEC["Bladder"].label
    expected[bowel] = SPEC["Bowel bag"].label  # Bowel bag comes after Bladder in the task
    np.testing.assert_array_equal(labels, expected)


def test_a_segment_renamed_in_slicer_is_known_by_its_coded_meaning(tmp_path):
    """An OncoSeg result saved from Slicer keeps each segment's terminology; a reader who
    renamed the bladder 'urinary bladder (edited)' still gives the bladder."""
    grid = _grid()
    mask, _ = _masks(sitk.GetArrayViewFromImage(grid).shape)
    path = write_seg_nrrd(Segmentation.from_masks(grid, [mask], [Segment(
        "OncoSeg_Bladder", "urinary bladder (edited)", (0.9, 0.9, 0.2),
        terminology=SPEC["Bladder"].terminology.to_slicer())]), tmp_path / "label.seg.nrrd")
    labels = label_file_on(path, grid, "c1", "ct", segments=CT_SEGMENTS)
    np.testing.assert_array_equal(labels, np.where(mask, SPEC["Bladder"].label, 0))
    case = Case("c1", {"ct": tmp_path / "ct.nii.gz"}, {"label": path})
    assert case.annotated_segments(CT_SEGMENTS) == ["Bladder"]


def test_rectal_reads_its_one_segment_whatever_its_name_and_refuses_two(tmp_path):
    """The rectal tumour was any voxel above 0: a rectal wall drawn beside it in the same
    file became tumour. One segment is the tumour whatever Slicer named it; a second segment
    the task does not have is refused by name."""
    grid = _grid()
    tumour, wall = _masks(sitk.GetArrayViewFromImage(grid).shape)
    one = write_seg_nrrd(Segmentation.from_masks(grid, [tumour], [
        Segment("Segment_1", "Segment_1", (0.9, 0.2, 0.2))]), tmp_path / "one.seg.nrrd")
    np.testing.assert_array_equal(
        label_file_on(one, grid, "r1", "t2w", segments=RECTAL.segments) > 0, tumour)
    two = write_seg_nrrd(Segmentation.from_masks(grid, [wall, tumour], [
        Segment("w", "Rectal wall", (0.2, 0.2, 0.9)), Segment("t", "GTVp", (0.9, 0.2, 0.2))]),
        tmp_path / "two.seg.nrrd")
    with pytest.raises(InputError, match=r"case 'r1'.*two\.seg\.nrrd: segment\(s\) 'Rectal "
                       r"wall' match none of the task's \(Rectal tumour, their TG-263"):
        label_file_on(two, grid, "r1", "t2w", segments=RECTAL.segments)
    with pytest.raises(InputError, match="is a segmentation of 2 segments"):
        label_file_on(two, grid, "r1", "t2w")  # a task that reads one unnamed structure


def test_two_segments_for_one_organ_are_refused(tmp_path):
    grid = _grid()
    a, b = _masks(sitk.GetArrayViewFromImage(grid).shape)
    path = write_seg_nrrd(Segmentation.from_masks(grid, [a, b], [
        Segment("a", "Bladder", (0.9, 0.9, 0.2)), Segment("b", "bladder", (0.9, 0.9, 0.3))]),
        tmp_path / "label.seg.nrrd")
    with pytest.raises(InputError, match="segments 'Bladder' and 'bladder' are both 'Bladder'"):
        label_file_on(path, grid, "c1", "ct", segments=CT_SEGMENTS)


def test_a_plain_nrrd_label_map_is_read_by_its_values(tmp_path):
    grid = _grid()
    values = np.zeros(sitk.GetArrayViewFromImage(grid).shape, np.uint8)
    values[2:4, 3:5, 3:6] = 3
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(grid)
    sitk.WriteImage(image, str(tmp_path / "label.nrrd"))
    np.testing.assert_array_equal(
        label_file_on(tmp_path / "label.nrrd", grid, "c1", "ct", segments=CT_SEGMENTS), values)
    case = Case("c1", {"ct": tmp_path / "ct.nii.gz"}, {"label": tmp_path / "label.nrrd"})
    assert case.annotated_segments(CT_SEGMENTS) is None


def test_arrays_prepared_before_segmentations_were_read_by_name_are_not_reused(monkeypatch,
                                                                               tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"x")
    case = Case("c1", {"ct": tmp_path / "ct.nii.gz"})
    key = case_key(case, "settings")
    monkeypatch.setattr("oncoseg.datasets.cache.LABEL_READING", "")
    assert case_key(case, "settings") != key


def test_a_slicer_segmentation_given_as_the_scan_is_refused(tmp_path, capsys):
    """`predict oar-ct --input ct=segmentation.seg.nrrd` ran the model on the label values (a
    CT of 0 to 5 HU), exit 0, with a quality note; refused now, as a DICOM SEG is."""
    from oncoseg.cli import main

    grid = _grid()
    a, b = _masks(sitk.GetArrayViewFromImage(grid).shape)
    path = write_seg_nrrd(Segmentation.from_masks(grid, [a, b], [
        Segment("a", "Bladder", (0.9, 0.9, 0.2)), Segment("b", "Bowel bag", (0.5, 0.5, 0.2))]),
        tmp_path / "segmentation.seg.nrrd")
    assert main(["predict", "oar-ct", "--input", f"ct={path}", "--output",
                 str(tmp_path / "out"), "--progress", "none"]) == 2
    assert "is a Slicer segmentation (2 segments: Bladder, Bowel bag), which holds no image: " \
        "give the scan it was drawn on" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
