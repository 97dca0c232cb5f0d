"""A DICOM SEG as a case's labels (what NCI's Imaging Data Commons and TCIA publish), written
by another tool: highdicom, from the pelvic CT phantom's DICOM series.

Until 2026-12-07 ITK read a SEG as a stack of its frames, 1 mm apart, and the case was refused
as "does not lie on the grid of any image". highdicom leaves out the frames where a segment has
no pixel, so the SEG's planes cover only part of the series, with gaps.
"""

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.sr.coding import CodedConcept

from oncoseg.cli import main
from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.io.dicomseg_reading import read_dicom_seg
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct

LABEL = {s.name: s.label for s in CT_SEGMENTS}
ANATOMY = CodedConcept("123037004", "SCT", "Anatomical Structure")


@pytest.fixture(scope="module")
def pelvis(tmp_path_factory):
    """The phantom's CT series, its organs as OncoSeg reads them from its structure set, and
    the series' files in the order of the label map's slices."""
    root = tmp_path_factory.mktemp("seg")
    assert main(["phantom", "oar-ct", "--cases", "1", "--seed", "9", "--output",
                 str(root / "native"), "--progress", "none"]) == 0
    (case,) = read_dataset(root / "native", "auto", ["ct"]).cases
    ct = read_case_ct(case)
    truth, _ = case_labels(case, ct)
    series = root / "ct"
    shutil.copytree(case.images["ct"], series,
                    ignore=shutil.ignore_patterns("RS_*", "case.json"))
    sources = [pydicom.dcmread(f) for f in sorted(series.glob("CT_*.dcm"))]
    sources.sort(key=lambda d: ct.TransformPhysicalPointToIndex(
        [float(v) for v in d.ImagePositionPatient])[2])
    return root, series, sources, truth


def _seg(sources, masks, descriptions, fractional=False) -> hd.seg.Segmentation:
    kind = hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else \
        hd.seg.SegmentationTypeValues.BINARY
    if not hasattr(np, "float_"):  # highdicom 0.22 (the one for Slicer 5.10's pydicom)
        version = tuple(int(p) for p in hd.__version__.split(".")[:2])
        if version < (0, 23):
            pytest.skip(f"highdicom {hd.__version__} cannot write a SEG on numpy "
                        f"{np.__version__} (np.float_); run in the main environment")
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=np.stack(masks, axis=-1), segmentation_type=kind,
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=ANATOMY,
            segmented_property_type=meaning,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
            for n, (label, meaning) in enumerate(descriptions, start=1)],
        series_instance_uid=hd.UID(), series_number=7, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")


def _case(root: Path, series: Path, seg: pydicom.Dataset, name: str):
    folder = root / name
    folder.mkdir()
    seg.save_as(folder / "label.dcm")
    (folder / "cases.csv").write_text(f"case_id,role,path\n{name},ct,{series}\n"
                                      f"{name},label,label.dcm\n", encoding="utf-8")
    (case,) = read_dataset(folder / "cases.csv", "auto", ["ct"]).cases
    return case


def test_a_dicom_seg_is_read_by_its_segments_names_and_codes(pelvis):
    """Bladder labelled 'Blase' (known by its SNOMED code), femoral heads and bowel bag by
    their TG-263 names, in another order than OncoSeg's, no nodal CTV: every organ on its
    label, the CTV not annotated. The SEG holds only the planes with an organ."""
    root, series, sources, truth = pelvis
    organs = ["Bladder", "Femoral head L", "Femoral head R", "Bowel bag"]
    seg = _seg(sources, [truth == LABEL[o] for o in organs], [
        ("Blase", CodedConcept("89837001", "SCT", "Urinary bladder")),
        ("Femur_Head_L", CodedConcept("68367000", "SCT", "Thigh")),
        ("Femur_Head_R", CodedConcept("68367000", "SCT", "Thigh")),
        ("Bag_Bowel", CodedConcept("113276009", "SCT", "Intestine"))])
    planes_with_an_organ = sum(len(np.unique(np.nonzero(truth == LABEL[o])[0])) for o in organs)
    assert int(seg.NumberOfFrames) == planes_with_an_organ < len(sources) * len(organs)
    case = _case(root, series, seg, "binary")
    ct = read_case_ct(case)
    labels, annotated = case_labels(case, ct)
    np.testing.assert_array_equal(labels, np.where(truth == LABEL["Nodal CTV"], 0, truth))
    assert annotated == ["Femoral head L", "Femoral head R", "Bladder", "Bowel bag"]


def test_a_fractional_dicom_seg_counts_where_its_probability_reaches_one_half(pelvis):
    root, series, sources, truth = pelvis
    bladder = truth == LABEL["Bladder"]
    probability = np.where(bladder, 0.8, 0.0).astype(np.float32)
    probability[bladder & (np.indices(truth.shape)[2] % 2 == 0)] = 0.45  # below one half
    seg = _seg(sources, [probability], [("Bladder",
                                         CodedConcept("89837001", "SCT", "Urinary bladder"))],
               fractional=True)
    case = _case(root, series, seg, "fractional")
    labels, _ = case_labels(case, read_case_ct(case))
    np.testing.assert_array_equal(labels == LABEL["Bladder"], probability >= 0.5)


def test_a_segment_the_task_does_not_have_is_refused_by_name(pelvis):
    root, series, sources, truth = pelvis
    seg = _seg(sources, [truth == LABEL["Bladder"], truth == LABEL["Bowel bag"]], [
        ("Bladder", CodedConcept("89837001", "SCT", "Urinary bladder")),
        ("Rectum", CodedConcept("34402009", "SCT", "Rectum"))])
    case = _case(root, series, seg, "unknown")
    with pytest.raises(InputError, match=r"label\.dcm: segment\(s\) 'Rectum' match none"):
        case_labels(case, read_case_ct(case))


def test_frames_off_a_regular_grid_are_refused(pelvis, tmp_path):
    """A plane moved by a third of the slice step lies between the grid's slices."""
    _, _, sources, truth = pelvis
    seg = _seg(sources, [truth == LABEL["Bladder"]],
               [("Bladder", CodedConcept("89837001", "SCT", "Urinary bladder"))])
    position = seg.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    position.ImagePositionPatient = [*position.ImagePositionPatient[:2],
                                     float(position.ImagePositionPatient[2]) + 1.0]
    seg.save_as(tmp_path / "moved.dcm")
    with pytest.raises(InputError, match="planes lie off a regular grid 3 mm apart"):
        read_dicom_seg(tmp_path / "moved.dcm")


def test_oncosegs_own_dicom_seg_reads_back_with_its_names_colours_and_voxels(pelvis, capsys):
    """`oncoseg export --format dicom-seg` and back: each organ's voxels, its TG-263 name, its
    colour through DICOM's CIELab (within a step of 1/255), and `oncoseg info` describing it
    (which refused a SEG as "holds no image")."""
    import SimpleITK as sitk

    from oncoseg.geometry import image_like

    root, series, _, truth = pelvis
    ct = read_case_ct(read_dataset(root / "native", "auto", ["ct"]).cases[0])
    sitk.WriteImage(image_like(truth, ct), str(root / "truth.nii.gz"))
    assert main(["export", str(root / "truth.nii.gz"), "--task", "oar-ct", "--format",
                 "dicom-seg", "--reference", str(series), "--output",
                 str(root / "export.dcm")]) == 0
    back = read_dicom_seg(root / "export.dcm")
    assert [s.name for s in back.segments] == [s.tg263 for s in CT_SEGMENTS]
    for spec, segment in zip(CT_SEGMENTS, back.segments, strict=True):
        np.testing.assert_allclose(segment.color, spec.color, atol=1 / 255)
        mask = sitk.GetArrayFromImage(sitk.Resample(
            image_like(back.mask(segment.id).astype(np.uint8), back.layers[segment.layer]),
            ct, sitk.Transform(), sitk.sitkNearestNeighbor))
        np.testing.assert_array_equal(mask == 1, truth == spec.label)
    capsys.readouterr()
    assert main(["info", str(root / "export.dcm")]) == 0
    assert "segment 'Bladder'" in capsys.readouterr().out


def test_dicom_cielab_colours_convert_back_to_the_srgb_they_came_from():
    from itertools import product

    from oncoseg.io.dicomseg import cielab, rgb_from_cielab

    for rgb in product(range(0, 256, 17), repeat=3):
        np.testing.assert_allclose(np.array(rgb_from_cielab(cielab(rgb))) * 255, rgb, atol=0.2)


def test_a_dicom_cohort_whose_patients_have_a_seg_instead_of_a_structure_set(tmp_path):
    """The rtstruct layout (a folder per patient: CT series + RT structure set) as NCI's
    Imaging Data Commons hands out data: CT series + DICOM SEG. A patient whose structure set
    was replaced by a SEG of the same organs (OncoSeg's export, TG-263 names; no bladder, as
    the phantom's third patient) reads the same organs, the same not-annotated bladder, and
    trains on them."""
    import SimpleITK as sitk

    from oncoseg.geometry import image_like

    assert main(["phantom", "oar-ct", "--cases", "3", "--seed", "9", "--output",
                 str(tmp_path / "cohort"), "--progress", "none"]) == 0
    before = {c.id: c for c in read_dataset(tmp_path / "cohort", "auto", ["ct"]).cases}
    expected = {}
    for case_id in ("oarct_001", "oarct_002"):  # the second and third patients get a SEG
        case = before[case_id]
        ct = read_case_ct(case)
        expected[case_id] = case_labels(case, ct)
        sitk.WriteImage(image_like(expected[case_id][0], ct), str(tmp_path / f"{case_id}.nii.gz"))
        structure_set = Path(case.info["rtstruct"])
        assert main(["export", str(tmp_path / f"{case_id}.nii.gz"), "--task", "oar-ct",
                     "--format", "dicom-seg", "--reference", str(case.images["ct"]),
                     "--output", str(structure_set.parent / "SEG.dcm")]) == 0
        structure_set.unlink()
    assert "Bladder" not in expected["oarct_002"][1]
    dataset = read_dataset(tmp_path / "cohort", "auto", ["ct"])
    assert dataset.layout == "rtstruct"
    after = {c.id: c for c in dataset.cases}
    assert "rtstruct" in after["oarct_000"].info and "seg" in after["oarct_001"].info
    for case_id, (labels, annotated) in expected.items():
        again, annotated_again = case_labels(after[case_id], read_case_ct(after[case_id]))
        np.testing.assert_array_equal(again, labels)
        assert annotated_again == annotated
    assert main(["train", "oar-ct", "--dataset", str(tmp_path / "cohort"), "--output",
                 str(tmp_path / "run"), "--progress", "none", "--set", "spacing_mm=[6,6,6]",
                 "--set", "patch_size=[8,16,16]", "--set", "filters=[4,8,8,8]",
                 "--set", "batch_size=2", "--set", "steps_per_epoch=1", "--set",
                 "max_epochs=1", "--set", "validation_patches_per_case=1",
                 "--set", "hard_negative_rounds=0"]) == 0


def test_a_seg_without_its_slice_spacing_keeps_the_slices_it_skips(pelvis):
    """A SEG that states no SpacingBetweenSlices and holds the bladder on every other slice:
    the step between its planes (6 mm) is not the grid's; read with its slice thickness (3 mm),
    the bladder stays on its own slices (with 6 mm, nearest-neighbour placement put it on the
    skipped ones too)."""
    import SimpleITK as sitk

    from oncoseg.geometry import image_like

    root, series, _, truth = pelvis
    ct = read_case_ct(read_dataset(root / "native", "auto", ["ct"]).cases[0])
    bladder = truth == LABEL["Bladder"]
    every_other = bladder & (np.arange(len(truth)) % 2 == 0)[:, None, None]
    sitk.WriteImage(image_like(every_other.astype(np.uint8) * LABEL["Bladder"], ct),
                    str(root / "every_other.nii.gz"))
    assert main(["export", str(root / "every_other.nii.gz"), "--task", "oar-ct", "--format",
                 "dicom-seg", "--reference", str(series), "--output",
                 str(root / "every_other.dcm")]) == 0
    seg = pydicom.dcmread(root / "every_other.dcm")
    del seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    seg.save_as(root / "every_other.dcm")
    back = read_dicom_seg(root / "every_other.dcm")
    assert back.geometry.GetSpacing()[2] == pytest.approx(3.0)
    case = _case(root, series, seg, "every_other")
    labels, _ = case_labels(case, read_case_ct(case))
    np.testing.assert_array_equal(labels == LABEL["Bladder"], every_other)


def test_a_cohort_seg_whose_frames_lie_between_the_ct_slices_is_refused(tmp_path):
    """Nearest-neighbour placement of frames half a slice off the CT's would put each plane's
    organ on a neighbouring slice without a word."""
    import SimpleITK as sitk

    from oncoseg.geometry import image_like

    assert main(["phantom", "oar-ct", "--cases", "1", "--seed", "9", "--output",
                 str(tmp_path / "cohort"), "--progress", "none"]) == 0
    (case,) = read_dataset(tmp_path / "cohort", "auto", ["ct"]).cases
    ct = read_case_ct(case)
    sitk.WriteImage(image_like(case_labels(case, ct)[0], ct), str(tmp_path / "labels.nii.gz"))
    structure_set = Path(case.info["rtstruct"])
    assert main(["export", str(tmp_path / "labels.nii.gz"), "--task", "oar-ct", "--format",
                 "dicom-seg", "--reference", str(case.images["ct"]), "--output",
                 str(structure_set.parent / "SEG.dcm")]) == 0
    structure_set.unlink()
    seg = pydicom.dcmread(structure_set.parent / "SEG.dcm")
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0]
        position.ImagePositionPatient = [*position.ImagePositionPatient[:2],
                                         float(position.ImagePositionPatient[2]) + 1.5]
    seg.save_as(structure_set.parent / "SEG.dcm")
    (moved,) = read_dataset(tmp_path / "cohort", "auto", ["ct"]).cases
    with pytest.raises(InputError, match="frames do not lie on the slices of the CT series"):
        case_labels(moved, read_case_ct(moved))
