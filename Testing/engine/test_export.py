"""Export against things no one here wrote: dciodvfy (David Clunie's DICOM validator) judges the
DICOM SEG and RTSTRUCT, highdicom reads the SEG back, and the phantom's own RTSTRUCT is the
truth the exported contours are compared with. Series as archives hold them (a missing slice, a
gantry tilt, blank UIDs) must get every frame and contour on the image it references."""

import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_ct import (
    AXIAL,
    DCIODVFY,
    DCIODVFY_MISSING,
    SHAPE,
    SPACING_XY,
    bone_mask,
    dciodvfy_errors,
    grid_points,
    phantom_ct_case,
    plane_points,
    set_attributes,
    stack_positions,
    uniform_series,
    write_analytic_series,
)

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.export import (
    export_file,
    export_measurements,
    export_segmentation,
    interpreted_type,
    load_segmentation,
)
from oncoseg.geometry import same_grid
from oncoseg.io import dicom as dicom_io
from oncoseg.io.dicom import CTSlice, Patient, write_ct_slices
from oncoseg.io.dicomseg import cielab
from oncoseg.io.rtstruct import read_rtstruct
from oncoseg.io.segnrrd import Segment, Segmentation, write_seg_nrrd
from oncoseg.io.volumes import choose_dicom_series, read_volume
from oncoseg.metrics import dice


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory):
    case, image, segmentation = phantom_ct_case(tmp_path_factory.mktemp("ct"))
    assert len(segmentation.segments) >= 3
    return case, image, segmentation


needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)


@needs_dciodvfy
@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_dicom_exports_pass_dciodvfy(ct_case, tmp_path, fmt):
    case, _, segmentation = ct_case
    result = export_segmentation(segmentation, tmp_path / "out.dcm", fmt,
                                 choose_dicom_series(case))
    assert dciodvfy_errors(result.path) == []
    broken = pydicom.dcmread(result.path)  # the validator is awake: a required attribute gone
    del broken.SeriesInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm")


CHARSET_FILES = Path(pydicom.__file__).parent / "data" / "charset_files"


def test_exports_keep_the_patients_name_in_every_character_set(ct_case, tmp_path):
    """The patients of pydicom's real character-set files (Latin-1, Cyrillic, Greek, Arabic,
    Hebrew, Japanese and Korean in ISO 2022, Chinese in UTF-8 and GB18030) given to the
    phantom series: the DICOM SEG and RTSTRUCT carry each name as the source decodes it.
    Written in Latin-1, every name beyond it came out as '?' (until 2026-12-06)."""
    case, _, segmentation = ct_case
    series_folder = tmp_path / "ct"
    shutil.copytree(case, series_folder, ignore=shutil.ignore_patterns("RS_*"))
    files = sorted(series_folder.glob("*.dcm"))
    names = ["chrGerm", "chrRuss", "chrGreek", "chrArab", "chrHbrw", "chrH31", "chrI2", "chrX1",
             "chrX2"]
    for name in names:
        source = pydicom.dcmread(CHARSET_FILES / f"{name}.dcm")
        patient = str(source.PatientName)
        set_attributes(files, SpecificCharacterSet=source.SpecificCharacterSet,
                       PatientName=patient)
        assert str(pydicom.dcmread(files[0]).PatientName) == patient
        formats = ("dicom-seg", "rtstruct") if name in ("chrH31", "chrX2") else ("dicom-seg",)
        for fmt in formats:
            out = export_segmentation(segmentation, tmp_path / f"{name}_{fmt}.dcm", fmt,
                                      choose_dicom_series(series_folder)).path
            written = pydicom.dcmread(out)
            assert str(written.PatientName) == patient, (name, fmt)
            assert written.SpecificCharacterSet == "ISO_IR 192"
    if DCIODVFY is not None:
        assert dciodvfy_errors(tmp_path / "chrH31_rtstruct.dcm") == []


def test_dicom_seg_read_back_by_highdicom_gives_the_same_voxels_slice_by_slice(ct_case, tmp_path):
    case, _, segmentation = ct_case
    series = choose_dicom_series(case)
    export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg", series)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    numbers = list(range(1, len(segmentation.segments) + 1))
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=numbers,
                                               ignore_spatial_locations=False)
    for n, segment in enumerate(segmentation.segments):
        truth = segmentation.mask(segment.id)
        assert truth.any()
        for k in range(truth.shape[0]):  # slice k refers to series file k: orientation kept
            np.testing.assert_array_equal(frames[k, :, :, n] > 0, truth[k])
    described = {d.segment_label: d for d in seg.SegmentSequence}
    bladder = described["Bladder"]
    assert bladder.SegmentedPropertyTypeCodeSequence[0].CodeValue == "89837001"
    left = described["Femur_Head_L"]  # AAPM TG-263 by default, OncoSeg's name beside it
    assert left.SegmentDescription == "Femoral head L"
    modifier = left.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert modifier[0].CodeMeaning == "Left"


def test_rtstruct_read_back_matches_every_structure(ct_case, tmp_path):
    case, image, segmentation = ct_case
    export_segmentation(segmentation, tmp_path / "rs.dcm", "rtstruct", choose_dicom_series(case))
    back = read_rtstruct(tmp_path / "rs.dcm")
    assert back.frame_of_reference_uid == pydicom.dcmread(
        next(case.glob("CT_*.dcm")), stop_before_pixels=True).FrameOfReferenceUID
    tg263 = {"Femoral head L": "Femur_Head_L", "Femoral head R": "Femur_Head_R",
             "Bladder": "Bladder", "Bowel bag": "Bag_Bowel", "Nodal CTV": "CTVn"}
    assert [s.name for s in back.structures] == [tg263[s.name] for s in segmentation.segments]
    for segment in segmentation.segments:
        structure = back.structure(tg263[segment.name])
        assert structure.color == tuple(round(255 * c) for c in segment.color)
        assert dice(back.mask(structure.name, image), segmentation.mask(segment.id)) >= 0.95
    assert back.structure("CTVn").interpreted_type == "CTV"
    assert back.structure("Bladder").interpreted_type == "ORGAN"
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert {r.ROIName: r.get("ROIDescription") for r in ds.StructureSetROISequence} == {
        **{v: k for k, v in tg263.items()}, "Bladder": None}  # described where renamed
    codes = [o.RTROIIdentificationCodeSequence[0].CodeValue for o in
             ds.RTROIObservationsSequence]
    assert codes[2] == "89837001"  # the bladder's SNOMED code beside its name
    export_segmentation(segmentation, tmp_path / "own.dcm", "rtstruct", choose_dicom_series(case),
                        naming="oncoseg")
    assert [s.name for s in read_rtstruct(tmp_path / "own.dcm").structures] == [
        s.name for s in segmentation.segments]


def test_segmentation_on_another_grid_is_resampled_and_one_elsewhere_refused(ct_case, tmp_path):
    case, image, segmentation = ct_case
    coarse = sitk.Image([s // 2 for s in image.GetSize()], sitk.sitkUInt8)
    coarse.SetSpacing([2 * s for s in image.GetSpacing()])
    coarse.SetOrigin(image.GetOrigin())
    moved = Segmentation([sitk.Resample(layer, coarse, sitk.Transform(),
                                        sitk.sitkNearestNeighbor)
                          for layer in segmentation.layers], segmentation.segments)
    result = export_segmentation(moved, tmp_path / "rs.dcm", "rtstruct",
                                 choose_dicom_series(case))
    assert "resampled" in result.messages[0]
    bladder = segmentation.segment("Bladder").id
    back = read_rtstruct(tmp_path / "rs.dcm").mask("Bladder", image)
    assert dice(back, segmentation.mask(bladder)) > 0.8
    far = Segmentation([sitk.Image(layer) for layer in moved.layers], moved.segments)
    for layer in far.layers:
        layer.SetOrigin([o + 5000 for o in image.GetOrigin()])
    with pytest.raises(InputError, match="does not overlap"):
        export_segmentation(far, tmp_path / "far.dcm", "rtstruct", choose_dicom_series(case))
    assert not (tmp_path / "far.dcm").exists()


def test_cli_exports_a_seg_nrrd_and_never_overwrites_unasked(ct_case, tmp_path, capsys):
    case, _, segmentation = ct_case
    write_seg_nrrd(segmentation, tmp_path / "in.seg.nrrd")
    out = tmp_path / "seg.dcm"
    args = ["export", str(tmp_path / "in.seg.nrrd"), "--format", "dicom-seg",
            "--reference", str(case), "--output", str(out)]
    assert main(args) == 0
    assert "dicom-seg with" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes() != before  # a new SOP instance
    assert main(["export", str(tmp_path / "in.seg.nrrd"), "--format", "rtstruct",
                 "--output", str(tmp_path / "rs.dcm")]) == 2
    assert "needs the DICOM series" in capsys.readouterr().err
    assert list(tmp_path.glob(".*")) == []  # no temporary files left behind


def test_a_brats_2021_label_map_names_its_label_4_as_the_enhancing_tumour(tmp_path, capsys):
    """BraTS 2017-2021 store the enhancing tumour as 4 and have no 3 (BraTS 2024 use 4 for
    another structure, the resection cavity, beside 3): exported with the brain task's names,
    4 is the enhancing tumour where the file has no 3, and a generic label with a note where
    it does."""
    from oncoseg.io.segnrrd import read_seg_nrrd

    array = np.zeros((12, 20, 20), np.uint8)
    array[2:10, 4:16, 4:16] = 2
    array[4:8, 6:14, 6:14] = 4
    array[5:7, 9:11, 9:11] = 1
    for name, extra in (("BraTS2021_00000_seg.nii.gz", None),
                        ("BraTS-GLI-00000-100-seg.nii.gz", 3)):
        stored = array.copy()
        if extra is not None:  # the 2024 convention: 3 enhancing, 4 a resection cavity
            stored[stored == 4] = 3
            stored[0:2, 0:3, 0:3] = 4
        image = sitk.GetImageFromArray(stored)
        sitk.WriteImage(image, str(tmp_path / name))
        out = tmp_path / name.replace(".nii.gz", ".seg.nrrd")
        assert main(["export", str(tmp_path / name), "--task", "brain", "--format",
                     "seg.nrrd", "--output", str(out)]) == 0
        printed = capsys.readouterr().out
        segments = {s.label_value: s for s in read_seg_nrrd(out).segments}
        if extra is None:
            assert segments[4].name == "Enhancing tumour"
            assert "Neoplasm" in segments[4].terminology
            assert "label 4 read as 'Enhancing tumour' (the file has no label 3" in printed
        else:
            assert segments[3].name == "Enhancing tumour"
            assert segments[4].name == "Label 4" and segments[4].terminology == ""
            assert "label 4 is none of the brain task's segments" in printed


def test_label_maps_export_as_nifti_nrrd_and_seg_nrrd_named_after_the_task(ct_case, tmp_path):
    _, image, segmentation = ct_case
    labels = sitk.Image(segmentation.geometry)
    array = np.zeros(sitk.GetArrayViewFromImage(labels).shape, np.uint8)
    array[segmentation.mask(segmentation.segment("Bladder").id)] = 3
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    loaded, notes = load_segmentation(tmp_path / "labels.nii.gz", task="oar-ct")
    assert notes == []
    assert [s.name for s in loaded.segments] == ["Bladder"]
    assert interpreted_type(loaded.segments[0]) == "ORGAN"
    for fmt, name in (("seg.nrrd", "x.seg.nrrd"), ("nrrd", "x.nrrd"), ("nifti", "x.nii.gz")):
        result = export_file(tmp_path / "labels.nii.gz", tmp_path / name, fmt, task="oar-ct")
        assert result.path.exists()
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.nii.gz")))
    np.testing.assert_array_equal(back == 1, array == 3)  # one segment: label 1
    with pytest.raises(InputError, match="ends in"):
        export_file(tmp_path / "labels.nii.gz", tmp_path / "x.dcm", "nifti")


# ---------------------------------------------------------------------------------------------
# series as archives hold them: every frame and contour on its own instance's plane


def _instance_planes(files):
    """(SOP instance UID -> (IPP, normal)) of the series' files."""
    planes = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        row, column = np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))
        planes[ds.SOPInstanceUID] = (np.asarray(ds.ImagePositionPatient, float),
                                     np.cross(row, column))
    return planes


def _slice_index(image, position):
    return round(image.TransformPhysicalPointToContinuousIndex(position.tolist())[2])


def _dice_2d(a, b):
    return 1.0 if not a.any() and not b.any() else dice(a, b)


@pytest.fixture(scope="module")
def damaged_case(ct_case, tmp_path_factory):
    """The phantom CT series with one slice through the organs missing, read onto the uniform
    grid, and its structures as a predict-like label on that grid."""
    case, image, segmentation = ct_case
    folder = tmp_path_factory.mktemp("damaged") / "ct"
    folder.mkdir()
    series = choose_dicom_series(case)
    for f in series.files:
        shutil.copy(f, folder)
    counts = [sum(segmentation.mask(s.id)[k].sum() for s in segmentation.segments)
              for k in range(image.GetSize()[2])]
    gone = int(np.argmax(counts))  # the slice with the most labelled voxels
    (folder / Path(series.files[gone]).name).unlink()
    read = read_volume(folder)
    assert any("1 slice(s) missing" in n for n in read.notes)
    assert same_grid(read.image, image, tolerance=1e-3)
    layers = []
    for layer in segmentation.layers:
        copy = sitk.Image(layer)
        copy.CopyInformation(read.image)
        layers.append(copy)
    return folder, read.image, Segmentation(layers, segmentation.segments), gone


def _exported_on_its_series(damaged_case, path, form):
    """The damaged case's segmentation exported as ``form`` against its own series, which
    dciodvfy finds no error in; with the plane of each of the series' files, by SOP UID."""
    folder, _, segmentation, _ = damaged_case
    series = choose_dicom_series(folder)
    result = export_segmentation(segmentation, path, form, series, naming="oncoseg")
    assert dciodvfy_errors(result.path) == []
    return result, _instance_planes(series.files)


@needs_dciodvfy
def test_dicom_seg_frames_on_a_series_with_a_missing_slice_match_each_instance(damaged_case,
                                                                             tmp_path):
    _, image, segmentation, gone = damaged_case
    result, planes = _exported_on_its_series(damaged_case, tmp_path / "seg.dcm", "dicom-seg")
    assert result.messages == []  # the label is on the series' own (uniform) grid
    seg = hd.seg.segread(result.path)
    uids = list(planes)
    numbers = list(range(1, len(segmentation.segments) + 1))
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=numbers)
    worst, naive_worst = 1.0, 1.0
    for j, uid in enumerate(uids):  # uids in slice order: j is the file's index
        k = _slice_index(image, planes[uid][0])
        assert k != gone
        for n, segment in enumerate(segmentation.segments):
            truth = segmentation.mask(segment.id)
            worst = min(worst, _dice_2d(frames[j, :, :, n] > 0, truth[k]))
            naive_worst = min(naive_worst, _dice_2d(frames[j, :, :, n] > 0, truth[j]))
    assert worst >= 0.99
    assert naive_worst < 0.9  # file j is not slice j past the gap: the test can tell


@needs_dciodvfy
def test_rtstruct_contours_on_a_series_with_a_missing_slice_lie_on_their_instance(damaged_case,
                                                                                 tmp_path):
    _, image, segmentation, gone = damaged_case
    result, planes = _exported_on_its_series(damaged_case, tmp_path / "rs.dcm", "rtstruct")
    ds = pydicom.dcmread(result.path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    referenced = set()
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            position, normal = planes[uid]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert np.abs((points - position) @ normal).max() < 0.01  # on its image's plane
            referenced.add((names[int(roi.ReferencedROINumber)], uid))
    back = read_rtstruct(result.path)
    for segment in segmentation.segments:
        mask = back.mask(segment.name, image)
        truth = segmentation.mask(segment.id)
        for position, _ in planes.values():
            k = _slice_index(image, position)
            assert _dice_2d(mask[k], truth[k]) >= 0.99, (segment.name, k)
        assert not mask[gone].any()  # no contour was put on the missing slice


def test_exports_on_a_tilted_series_follow_each_tilted_image(tmp_path):
    positions = stack_positions([2.5 * k for k in range(25)], tilt_degrees=15)
    files = write_analytic_series(tmp_path / "ct", positions, tilt_degrees=15)
    image = read_volume(tmp_path / "ct").image  # resampled onto an orthogonal grid
    bone = sitk.GetImageFromArray(bone_mask(grid_points(image)).astype(np.uint8))
    bone.CopyInformation(image)
    segmentation = Segmentation.from_label_image(bone, [Segment("bone", "Bone", (1, 1, 0.8))])
    series = choose_dicom_series(tmp_path / "ct")
    export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg", series)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=[1])[..., 0] > 0
    truth = np.stack([bone_mask(plane_points(p, *AXIAL, SPACING_XY, SHAPE)) for p in positions])
    assert truth.sum() > 200
    assert dice(frames, truth) >= 0.95  # nearest sampling of a 2 mm grid: 0.967
    untilted = np.stack([bone_mask(grid_points(image)[k]) for k in range(25)])
    assert dice(untilted, truth) < 0.5  # grid slice k is not image k (0.23): the test can tell
    export_segmentation(segmentation, tmp_path / "rs.dcm", "rtstruct", series)
    planes = _instance_planes(files)
    for roi in pydicom.dcmread(tmp_path / "rs.dcm").ROIContourSequence:
        for contour in roi.ContourSequence:
            position, normal = planes[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert np.abs((points - position) @ normal).max() < 0.01


@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_dicom_exports_refuse_a_series_without_uids_volume_formats_still_work(tmp_path, capsys,
                                                                           fmt):
    files = uniform_series(tmp_path / "ct")
    set_attributes(files, StudyInstanceUID="", SeriesInstanceUID="", SOPInstanceUID=None,
                   FrameOfReferenceUID="")
    image = read_volume(tmp_path / "ct").image  # still read: volume and geometry
    bone = sitk.GetImageFromArray(bone_mask(grid_points(image)).astype(np.uint8))
    bone.CopyInformation(image)
    sitk.WriteImage(bone, str(tmp_path / "labels.nii.gz"))
    out = tmp_path / "out.dcm"
    args = ["export", str(tmp_path / "labels.nii.gz"), "--format", fmt, "--reference",
            str(tmp_path / "ct"), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    for attribute in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                      "SOPInstanceUID (absent or empty in 25 of 25 files)"):
        assert attribute in err
    assert "Traceback" not in err and not out.exists()
    assert main(["export", str(tmp_path / "labels.nii.gz"), "--format", "nifti",
                 "--output", str(tmp_path / "labels_out.nii.gz")]) == 0


@pytest.fixture(scope="module")
def enhanced_case(ct_case, tmp_path_factory):
    """The phantom CT as one enhanced multi-frame image (highdicom's legacy conversion, as
    Siemens XA and Philips scanners store CT and MR), its frames in reverse order: (folder,
    its file, each frame's single-frame source file)."""
    case, _, _ = ct_case
    files = sorted(case.glob("CT_*.dcm"))[::-1]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1)
    folder = tmp_path_factory.mktemp("enhanced")
    enhanced.save_as(folder / "enhanced.dcm")
    return folder, folder / "enhanced.dcm", files


def _frame_positions(ds):
    return [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
            for f in ds.PerFrameFunctionalGroupsSequence]


def test_dicom_seg_of_an_enhanced_image_references_each_frame_and_reads_back_by_frame(
        ct_case, enhanced_case, tmp_path):
    """A frame of an enhanced image is referenced by its frame number: highdicom, reading the
    SEG by source frame, gives on every frame what the export on the single-frame series gives
    on the file at that position."""
    _, _, segmentation = ct_case
    folder, path, files = enhanced_case
    export_segmentation(segmentation, tmp_path / "mf.dcm", "dicom-seg",
                        choose_dicom_series(folder))
    export_segmentation(segmentation, tmp_path / "sf.dcm", "dicom-seg",
                        choose_dicom_series(ct_case[0]))
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    numbers = list(range(1, len(segmentation.segments) + 1))
    by_frame = hd.seg.segread(tmp_path / "mf.dcm").get_pixels_by_source_frame(
        source_sop_instance_uid=uid, source_frame_numbers=list(range(1, len(files) + 1)),
        segment_numbers=numbers, ignore_spatial_locations=False)
    by_file = hd.seg.segread(tmp_path / "sf.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=[pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                                  for f in files],
        segment_numbers=numbers, ignore_spatial_locations=False)
    assert by_frame.any()
    np.testing.assert_array_equal(by_frame, by_file)  # frame j was made from files[j]
    seg = pydicom.dcmread(tmp_path / "mf.dcm")
    assert [s.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence[0]
            .ReferencedInstanceSequence] == [uid]  # the instance once, not once per frame
    source = pydicom.dcmread(path, stop_before_pixels=True)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = _frame_positions(source)[int(reference.ReferencedFrameNumber) - 1]
        np.testing.assert_allclose(np.asarray(
            frame.PlanePositionSequence[0].ImagePositionPatient, float), position, atol=1e-4)


def test_rtstruct_of_an_enhanced_image_puts_each_contour_on_its_frame(
        ct_case, enhanced_case, tmp_path):
    _, image, segmentation = ct_case
    folder, path, _ = enhanced_case
    export_segmentation(segmentation, tmp_path / "rs.dcm", "rtstruct", choose_dicom_series(folder))
    positions = _frame_positions(pydicom.dcmread(path, stop_before_pixels=True))
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    contours = [c for roi in ds.ROIContourSequence for c in roi.ContourSequence]
    assert contours
    for contour in contours:
        reference = contour.ContourImageSequence[0]
        z = np.asarray(contour.ContourData, float).reshape(-1, 3)[:, 2]
        position = positions[int(reference.ReferencedFrameNumber) - 1]
        np.testing.assert_allclose(z, position[2], atol=1e-3)  # on its frame's plane
    back = read_rtstruct(tmp_path / "rs.dcm")
    for segment in segmentation.segments:
        name = back.structures[segmentation.segments.index(segment)].name
        assert dice(back.mask(name, image), segmentation.mask(segment.id)) >= 0.95


@needs_dciodvfy
@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_dicom_exports_of_an_enhanced_image_pass_dciodvfy(ct_case, enhanced_case, tmp_path,
                                                          fmt):
    result = export_segmentation(ct_case[2], tmp_path / "out.dcm", fmt,
                                 choose_dicom_series(enhanced_case[0]))
    assert dciodvfy_errors(result.path) == []


def test_a_series_too_gappy_to_read_still_gets_frames_on_its_images(tmp_path):
    """Slicer reads what OncoSeg refuses (a 4-slice gap, with its regularization transform):
    its segmentation still exports onto the images that exist."""
    intact = read_volume(_uniform(tmp_path / "intact")).image
    files = uniform_series(tmp_path / "ct")
    for f in files[10:14]:
        f.unlink()
    with pytest.raises(InputError, match="slices are missing"):
        read_volume(tmp_path / "ct")
    bone = sitk.GetImageFromArray(bone_mask(grid_points(intact)).astype(np.uint8))
    bone.CopyInformation(intact)
    segmentation = Segmentation.from_label_image(bone, [Segment("bone", "Bone", (1, 1, 0.8))])
    result = export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg",
                                 choose_dicom_series(tmp_path / "ct"))
    assert "resampled (nearest neighbour) onto the planes of the images" in result.messages[0]
    seg = hd.seg.segread(result.path)
    left = [f for f in files if f.exists()]
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in left]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=[1])[..., 0] > 0
    kept = [k for k in range(25) if not 10 <= k < 14]
    np.testing.assert_array_equal(frames, sitk.GetArrayViewFromImage(bone)[kept] > 0)


def _uniform(folder):
    uniform_series(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# pydicom 2.4.4 (Slicer 5.8, 5.10) and 3.x (Slicer 5.12): the tiers run everything above under
# each (Testing/tiers/run_slicer_tier.py); here both of save_dicom's calls run under whichever
# pydicom is installed, where it accepts them


@pytest.mark.parametrize("pydicom_3_call", [True, False], ids=["enforce_file_format",
                                                              "write_like_original"])
def test_every_dicom_writer_writes_the_file_format_with_either_pydicom_call(
        tmp_path, monkeypatch, pydicom_3_call):
    if pydicom_3_call and not dicom_io.PYDICOM_3:
        pytest.skip("pydicom 2 has no enforce_file_format")
    natural = pydicom_3_call == dicom_io.PYDICOM_3
    monkeypatch.setattr(dicom_io, "PYDICOM_3", pydicom_3_call)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = uniform_series(tmp_path / "ct")
        image = read_volume(tmp_path / "ct").image
        bone = bone_mask(grid_points(image))
        label = sitk.GetImageFromArray(bone.astype(np.uint8))
        label.CopyInformation(image)
        segmentation = Segmentation.from_label_image(label, [Segment("b", "Bone", (1, 1, .8))])
        series = choose_dicom_series(tmp_path / "ct")
        written = [export_segmentation(segmentation, tmp_path / f"out.{fmt}.dcm", fmt,
                                       series).path for fmt in ("dicom-seg", "rtstruct")]
        written.append(export_measurements(tmp_path / "out.sr.dcm", series, segmentation).path)
    deprecated = [w for w in caught if "write_like_original" in str(w.message)]
    assert bool(deprecated) == (not natural)  # pydicom 3 deprecates pydicom 2's call
    for path in [*files, *written]:
        assert Path(path).read_bytes()[128:132] == b"DICM", path  # preamble, file meta
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    seg = pydicom.dcmread(written[0])
    assert seg.Modality == "SEG" and seg["PixelData"].VR == "OB"
    assert int(seg.NumberOfFrames) == sum(bool(plane.any()) for plane in bone) > 0
    report = pydicom.dcmread(written[2])
    assert report.Modality == "SR" and "FrameOfReferenceUID" not in report


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"],
                         ids=["implicit", "explicit"])
def test_a_slice_cut_short_is_found_from_its_header_whatever_simpleitk_does(tmp_path, syntax):
    """SimpleITK 2.5.2 (Slicer 5.10) reads a file whose pixel data is cut short, 2.5.7
    refuses it: the reader finds it itself, in either VR encoding, and leaves it out."""
    from oncoseg.io import dicom_series

    files = uniform_series(tmp_path / "ct")
    ds = pydicom.dcmread(files[7])
    ds.file_meta.TransferSyntaxUID = syntax
    dicom_io.save_dicom(ds, files[7])
    series = choose_dicom_series(tmp_path / "ct")
    found: set[str] = set()
    dicom_series._full_headers(series, found)
    assert found == set()
    data = files[7].read_bytes()
    files[7].write_bytes(data[: len(data) - 1500])
    dicom_series._full_headers(series, found)
    assert found == {str(files[7])}
    result = read_volume(tmp_path / "ct")
    assert "1 file(s) could not be decoded and were left out (CT_0008.dcm" in result.notes[0]


def test_segment_colours_are_cielab_as_scikit_image_computes_them():
    from skimage.color import rgb2lab

    for rgb in [(255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 151, 206), (128, 174, 128),
                (241, 214, 145), (216, 101, 79)]:
        lab = rgb2lab(np.asarray(rgb, float)[None, None] / 255)[0, 0]
        expected = [lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255,
                    (lab[2] + 128) * 65535 / 255]  # PS3.3 C.10.7.1.1
        # sRGB matrices rounded to 4 digits (pixelmed, highdicom) vs exact: < 0.05 L*a*b*
        np.testing.assert_allclose(cielab(rgb), expected, atol=0.05 * 65535 / 100)


@needs_dciodvfy
def test_dicom_seg_bits_run_on_across_frames_of_an_odd_size(tmp_path):
    """7 x 9 pixels: 63 bits a frame, so frames start mid-byte (PS3.5 8.1.1: no padding
    between frames). Two overlapping segments, a frame for each image a segment is on."""
    rng = np.random.default_rng(7)
    slices = [CTSlice(np.zeros((7, 9)), (0.0, 0.0, 2.0 * k)) for k in range(6)]
    files = write_ct_slices(slices, *AXIAL, (1.0, 1.0), tmp_path / "ct",
                            Patient("ODD", "Odd^Size"), thickness=2.0)
    image = read_volume(tmp_path / "ct").image
    masks = [rng.random((6, 7, 9)) > 0.6, rng.random((6, 7, 9)) > 0.6]
    masks[1][2] = False  # no voxel of segment 2 on image 3: no frame there
    segmentation = Segmentation.from_masks(image, masks, [Segment("a", "A", (1, 0, 0)),
                                                          Segment("b", "B", (0, 1, 0))])
    result = export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg",
                                 choose_dicom_series(tmp_path / "ct"))
    assert dciodvfy_errors(result.path) == []
    ds = pydicom.dcmread(result.path)
    assert int(ds.NumberOfFrames) == 11 and ds.SegmentsOverlap == "YES"
    assert len(ds.PixelData) == 11 * 63 // 8 + 1 + 1  # 87 bytes, padded to an even length
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = hd.seg.segread(result.path).get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2])
    for n, mask in enumerate(masks):
        np.testing.assert_array_equal(frames[..., n] > 0, mask)


@pytest.fixture(scope="module")
def predicted(ct_case, tmp_path_factory):
    """The demo oar-ct model's prediction on the phantom CT, as predict writes it."""
    case, _, _ = ct_case
    out = tmp_path_factory.mktemp("predicted") / "p"
    assert main(["predict", "oar-ct", "--input", f"ct={case}", "--output", str(out),
                 "--progress", "none", "--device", "cpu"]) == 0
    return out


def test_an_export_refuses_a_reference_of_another_patient_or_frame_of_reference(
        ct_case, predicted, tmp_path, capsys):
    """A --reference folder of another patient with the same protocol (the same grid) was
    taken: its frames placed by resampling, the export carrying that patient's name. The
    result now names the series it was computed on, and an export checks its reference."""
    import json

    case, _, _ = ct_case
    recorded = json.loads((predicted / "result.json").read_text())["input_series"]["ct"]
    first = pydicom.dcmread(next(case.glob("CT_*.dcm")), stop_before_pixels=True)
    assert recorded == {"series_uid": first.SeriesInstanceUID,
                        "study_uid": first.StudyInstanceUID,
                        "frame_of_reference_uid": first.FrameOfReferenceUID,
                        "patient_id": first.PatientID}
    segmentation = str(predicted / "segmentation.seg.nrrd")
    # another series of the same session (the same frame of reference): allowed
    same_frame = tmp_path / "same_frame"
    shutil.copytree(case, same_frame, ignore=shutil.ignore_patterns("RS_*"))
    set_attributes(sorted(same_frame.glob("*.dcm")), SeriesInstanceUID=pydicom.uid.generate_uid())
    assert main(["export", segmentation, "--format", "dicom-seg", "--reference", str(same_frame),
                 "--output", str(tmp_path / "same.dcm")]) == 0
    # another patient scanned the same way: refused, naming both
    other = tmp_path / "other"
    shutil.copytree(case, other, ignore=shutil.ignore_patterns("RS_*"))
    set_attributes(sorted(other.glob("*.dcm")), PatientID="OTHER-42",
                   FrameOfReferenceUID=pydicom.uid.generate_uid(),
                   SeriesInstanceUID=pydicom.uid.generate_uid())
    capsys.readouterr()
    for fmt in ("dicom-seg", "rtstruct", "dicom-sr"):
        assert main(["export", segmentation, "--format", fmt, "--reference", str(other),
                     "--output", str(tmp_path / f"other-{fmt}.dcm")]) == 2
        error = capsys.readouterr().err
        assert "of patient 'OTHER-42'" in error and "another patient" in error, error
        assert f"of patient '{first.PatientID}'" in error
    assert not list(tmp_path.glob("other-*"))
    # the same frame of reference, but another patient's name on it: refused too
    set_attributes(sorted(same_frame.glob("*.dcm")), PatientID="OTHER-43")
    assert main(["export", segmentation, "--format", "rtstruct", "--reference",
                 str(same_frame), "--output", str(tmp_path / "renamed.dcm")]) == 2


@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct", "dicom-sr"])
def test_exports_name_the_model_file_that_made_them(ct_case, predicted, tmp_path, fmt):
    """IHE AI Results: the algorithm's identity in the object. result.json names the model
    file by its SHA-256; the DICOM objects exported from that folder carry it in Contributing
    Equipment and (SEG) the Segmentation Algorithm Identification."""
    import hashlib
    import json

    from oncoseg.method import demo_model_file

    case, _, _ = ct_case
    model = json.loads((predicted / "result.json").read_text())["model"]
    sha256 = hashlib.sha256(demo_model_file("oar-ct").read_bytes()).hexdigest()
    assert model["sha256"] == sha256 and model["file"] == "oar-ct-demo.safetensors"
    assert model["trained"][:4] == "2026"
    out = tmp_path / "out.dcm"
    assert main(["export", str(predicted / "segmentation.seg.nrrd"), "--format", fmt,
                 "--reference", str(case), "--output", str(out)]) == 0
    ds = pydicom.dcmread(out)
    [equipment] = ds.ContributingEquipmentSequence
    assert equipment.Manufacturer == "OncoSeg"
    assert equipment.ManufacturerModelName == "oar-ct-demo.safetensors"
    assert sha256 in equipment.ContributionDescription
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    if fmt == "dicom-seg":
        for segment in ds.SegmentSequence:
            [identity] = segment.SegmentationAlgorithmIdentificationSequence
            assert identity.AlgorithmName == "oar-ct-demo.safetensors"
            assert sha256[:16] in identity.AlgorithmVersion
            assert sha256 in identity.AlgorithmParameters
    elif fmt == "rtstruct":
        assert {r.ROIGenerationDescription for r in ds.StructureSetROISequence} == {
            "oar-ct-demo.safetensors"}
    if DCIODVFY is not None:
        assert dciodvfy_errors(out) == []


def test_a_results_volumes_go_out_as_a_dicom_sr_beside_the_seg_they_reference(
        ct_case, predicted, tmp_path, capsys):
    """`oncoseg export FOLDER --format dicom-sr`: result.json's volumes in a TID 1500 report,
    each referencing its segment (TG-263 named, as in the SEG) in a DICOM SEG written beside
    it, or in the SEG the user names with --seg; nothing is left behind when it fails."""
    import json

    case, _, _ = ct_case
    document = json.loads((predicted / "result.json").read_text())
    volumes = {s["name"]: s["volume_ml"] for s in document["segments"]}
    out = tmp_path / "oars-sr.dcm"
    capsys.readouterr()
    assert main(["export", str(predicted), "--format", "dicom-sr", "--reference", str(case),
                 "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert "oars-sr.seg.dcm, written beside the report" in said
    seg = pydicom.dcmread(tmp_path / "oars-sr.seg.dcm", stop_before_pixels=True)
    labels = {int(s.SegmentNumber): (s.SegmentLabel, s.SegmentDescription)
              for s in seg.SegmentSequence if "SegmentDescription" in s}
    groups = hd.sr.srread(out).content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        "Femur_Head_L", "Femur_Head_R", "Bladder", "Bag_Bowel", "CTVn"]
    for group in groups:
        [measurement] = group.get_measurements()
        [number] = group.referenced_segment.referenced_segment_numbers
        name = labels.get(number, (group.tracking_identifier, group.tracking_identifier))[1]
        assert measurement.value == pytest.approx(volumes[name], abs=1e-3)
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    if DCIODVFY is not None:
        assert dciodvfy_errors(out) == []
    # an existing SEG named with --seg is referenced, not written again
    again = tmp_path / "again.dcm"
    assert main(["export", str(predicted), "--format", "dicom-sr", "--reference", str(case),
                 "--output", str(again), "--seg", str(tmp_path / "oars-sr.seg.dcm")]) == 0
    assert not (tmp_path / "again.seg.dcm").exists()
    [first] = hd.sr.srread(again).content.get_volumetric_roi_measurement_groups()[:1]
    assert first.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    # a SEG named otherwise (OncoSeg's names) is refused, and no report is left behind
    assert main(["export", str(predicted), "--format", "dicom-sr", "--reference", str(case),
                 "--output", str(tmp_path / "own.dcm"), "--names", "oncoseg",
                 "--seg", str(tmp_path / "oars-sr.seg.dcm")]) == 2
    assert not (tmp_path / "own.dcm").exists()
    # a segmentation that is no result's has no measurements to report
    write_seg_nrrd(load_segmentation(predicted / "segmentation.seg.nrrd")[0],
                   tmp_path / "loose.seg.nrrd")
    assert main(["export", str(tmp_path / "loose.seg.nrrd"), "--format", "dicom-sr",
                 "--reference", str(case), "--output", str(tmp_path / "x.dcm")]) == 2
    assert "reports the measurements of a predict output folder" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()


def test_an_empty_label_map_is_refused_by_the_dicom_formats_and_written_by_the_others(
        ct_case, tmp_path, capsys):
    """A label map without a label has no segment: a DICOM SEG needs one (before: exit 1,
    'unexpected error: ValueError'), an RTSTRUCT one ROI (before: written, and dciodvfy found
    its empty StructureSetROISequence, ROIContourSequence and RTROIObservationsSequence)."""
    case, image, _ = ct_case
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    for fmt in ("dicom-seg", "rtstruct"):
        assert main(["export", str(tmp_path / "empty.nii.gz"), "--format", fmt, "--output",
                     str(tmp_path / f"{fmt}.dcm"), "--reference", str(case)]) == 2
        assert f"empty.nii.gz: holds no segment (every voxel is 0): a {fmt} needs at least " \
            "one; nothing was written" in capsys.readouterr().err
        assert not (tmp_path / f"{fmt}.dcm").exists()
    assert main(["export", str(tmp_path / "empty.nii.gz"), "--format", "nifti", "--output",
                 str(tmp_path / "labels.nii.gz")]) == 0
