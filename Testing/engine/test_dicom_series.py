"""DICOM series as archives hold them: slice positions from ImagePositionPatient, gaps, uneven
steps, gantry tilt, duplicated and undecodable files, blank UIDs, enhanced multi-frame files,
study folders, DICOMDIR trees.

The series are an analytic CT sampled on each slice's plane (so the truth is known at every
point), and the real files shipped in pydicom's wheel. Where GDCM alone (what OncoSeg read
before) gets a case wrong, the test shows that too, so it can fail.
"""

import json
import re
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_ct import (
    BONE_CENTRE_MM,
    FIRST,
    OBLIQUE_ROWS,
    analytic_hu,
    grid_points,
    set_attributes,
    stack_positions,
    uniform_series,
    write_analytic_series,
)

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.io.dicom_series import (
    SeriesChoiceError,
    choose_dicom_series,
    find_dicom_series,
    reference_planes,
)
from oncoseg.io.header import declared_image
from oncoseg.io.volumes import read_volume

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TREE = PYDICOM_FILES / "dicomdirtests"


def _array(image):
    return sitk.GetArrayFromImage(image).astype(float)


def _truth(image):
    return analytic_hu(grid_points(image))


def _bone_centroid(image):
    points = grid_points(image)[_array(image) >= 400]
    return points.mean(axis=0)


def test_uniform_series_is_read_as_stored_without_notes(tmp_path):
    uniform_series(tmp_path / "ct", orientation=OBLIQUE_ROWS)
    result = read_volume(tmp_path / "ct")
    image = result.image
    assert result.notes == []
    assert result.series is not None and len(result.series.files) == 25
    assert image.GetSize() == (48, 40, 25)
    np.testing.assert_allclose(image.GetSpacing(), (2, 2, 2.5), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), FIRST, atol=1e-4)
    row, column = OBLIQUE_ROWS
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)),
                               np.stack([row, column, np.cross(row, column)], axis=1), atol=1e-6)
    np.testing.assert_array_equal(_array(image), _truth(image))


def test_a_missing_slice_is_resampled_onto_the_uniform_grid_with_a_note(tmp_path, capsys):
    files = uniform_series(tmp_path / "ct")
    files[12].unlink()  # z = 0 mm
    left = [str(f) for f in files if f.exists()]
    gdcm = sitk.ReadImage(left)  # GDCM alone: 24 slices stretched over the 25 positions
    assert gdcm.GetSize()[2] == 24 and gdcm.GetSpacing()[2] == pytest.approx(60 / 23, abs=1e-3)

    result = read_volume(tmp_path / "ct")
    image, array = result.image, _array(result.image)
    assert image.GetSize() == (48, 40, 25)
    assert image.GetSpacing()[2] == pytest.approx(2.5, abs=1e-5)
    assert "1 slice(s) missing at 0 mm along the slice normal" in result.notes[0]
    assert "resampled onto a uniform" in result.notes[-1]
    truth = _truth(image)
    real = [k for k in range(25) if k != 12]
    np.testing.assert_array_equal(array[real], truth[real])  # the real slices are untouched
    np.testing.assert_array_equal(array[12], np.rint((truth[11] + truth[13]) / 2))
    body = (truth[12] > -1000) & (truth[11] < 400) & (truth[13] < 400)  # soft tissue around
    np.testing.assert_array_equal(array[12][body], truth[12][body])  # linear in z: exact
    # `oncoseg info` says how it read the series, as predict does
    assert main(["info", str(tmp_path / "ct"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == result.notes


def test_gaps_of_more_than_two_slices_are_refused_naming_the_folder_and_positions(tmp_path):
    files = uniform_series(tmp_path / "ct")
    for f in files[10:12]:
        f.unlink()
    two = read_volume(tmp_path / "ct")
    assert "2 slice(s) missing at -5, -2.5 mm" in two.notes[0]
    files[12].unlink()
    with pytest.raises(InputError) as error:
        read_volume(tmp_path / "ct")
    message = str(error.value)
    assert message.startswith(str(tmp_path / "ct"))
    assert "missing between -7.5 mm (CT_0010.dcm (instance 10)) and 2.5 mm (CT_0014.dcm " \
        "(instance 14))" in message
    assert "10 mm gap is 4.0 x the 2.5 mm slice step" in message


def test_an_uneven_slice_step_is_resampled_covering_first_to_last_position(tmp_path):
    steps = [2.5] * 8 + [3.0] * 5 + [2.5] * 8
    distances = np.concatenate([[0.0], np.cumsum(steps)])
    write_analytic_series(tmp_path / "ct", stack_positions(distances))
    result = read_volume(tmp_path / "ct")
    image = result.image
    assert any("step varies from 2.5 to 3 mm (median 2.5 mm)" in n for n in result.notes)
    spacing = image.GetSpacing()[2]
    assert spacing == pytest.approx(2.5, abs=0.1)
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    assert last[2] == pytest.approx(FIRST[2] + distances[-1], abs=1e-3)
    points = grid_points(image)
    near_bone = np.abs(np.linalg.norm(points - np.asarray(BONE_CENTRE_MM), axis=-1) - 9) < 4
    body = (_truth(image) > -1000) & ~near_bone
    assert np.abs(_array(image) - _truth(image))[body].max() <= 1  # linear in z: exact


def test_a_tilted_gantry_series_is_resampled_onto_an_orthogonal_grid(tmp_path):
    positions = stack_positions([2.5 * k for k in range(25)], tilt_degrees=15)
    files = write_analytic_series(tmp_path / "ct", positions, tilt_degrees=15)
    result = read_volume(tmp_path / "ct")
    image = result.image
    assert any("gantry tilt 15.0 degrees" in n for n in result.notes)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    # the bone sphere lies where it is in the patient ...
    np.testing.assert_allclose(_bone_centroid(image), BONE_CENTRE_MM, atol=0.5)
    # ... where GDCM alone stacks the slices as if untilted: 10.7 mm off at z = 10 mm
    gdcm = sitk.ReadImage([str(f) for f in files])
    assert abs(_bone_centroid(gdcm)[1] - BONE_CENTRE_MM[1]) > 5


def test_duplicated_instances_with_the_same_pixels_are_skipped_different_ones_refused(tmp_path):
    files = uniform_series(tmp_path / "ct")
    shutil.copy(files[5], tmp_path / "ct" / "copy_of_6.dcm")  # sent twice by a PACS
    result = read_volume(tmp_path / "ct")
    assert result.image.GetSize()[2] == 25
    assert "1 duplicated instance(s) with the same pixels at -17.5 mm" in result.notes[0]
    np.testing.assert_array_equal(_array(result.image), _truth(result.image))

    other = pydicom.dcmread(files[5])
    pixels = other.pixel_array.copy()
    pixels[10:20, 10:20] += 300
    other.PixelData = pixels.tobytes()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "ct" / "other_6.dcm")
    with pytest.raises(InputError, match=r"CT_0006.dcm \(instance 6\) and other_6.dcm "
                       r"\(instance 6\) lie at the same position \(-17.5 mm along the slice "
                       r"normal\) with different pixels"):
        read_volume(tmp_path / "ct")


def test_a_localizer_in_the_series_is_left_out_as_slicer_does(tmp_path):
    files = uniform_series(tmp_path / "ct")
    sagittal = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
    scout = write_analytic_series(tmp_path / "scout", [(0.0, -39.0, 30.0)], sagittal)[0]
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    set_attributes([scout], SeriesInstanceUID=uid, InstanceNumber="99")
    shutil.move(scout, tmp_path / "ct" / "scout.dcm")
    result = read_volume(tmp_path / "ct")
    assert "scout.dcm (instance 99) has another orientation than the other images (a " \
        "localizer) and was left out" in result.notes[0]
    np.testing.assert_array_equal(_array(result.image), _truth(result.image))
    second = write_analytic_series(tmp_path / "scout2", [(5.0, -39.0, 30.0)], sagittal)[0]
    set_attributes([second], SeriesInstanceUID=uid)
    shutil.move(second, tmp_path / "ct" / "scout2.dcm")
    with pytest.raises(InputError, match="its slices have different orientations"):
        read_volume(tmp_path / "ct")  # two odd images: not a localizer, a second stack


def test_an_undecodable_slice_is_left_out_like_a_missing_one(tmp_path):
    files = uniform_series(tmp_path / "ct")
    data = files[7].read_bytes()
    files[7].write_bytes(data[: len(data) - 1500])  # pixel data cut short: header intact
    result = read_volume(tmp_path / "ct")
    assert "1 file(s) could not be decoded and were left out (CT_0008.dcm" in result.notes[0]
    assert any("1 slice(s) missing at -12.5 mm" in n for n in result.notes)
    assert result.image.GetSize()[2] == 25


def test_a_file_that_does_not_say_where_it_lies_is_left_out_not_guessed(tmp_path):
    """A screen capture or a damaged header among the slices: GDCM's guess for the whole
    series (what OncoSeg read until 2026-12-06) stretched its slices to 9.7 mm."""
    intact = read_volume(_series(tmp_path / "intact", count=8)).image
    files = uniform_series(tmp_path / "ct", count=8)
    set_attributes(files[5:6], ImagePositionPatient=None)
    result = read_volume(tmp_path / "ct")
    assert "1 file(s) do not say where they lie" in result.notes[0]
    assert "CT_0006.dcm" in result.notes[0]
    assert any("1 slice(s) missing at -17.5 mm" in n for n in result.notes)
    image = result.image
    assert image.GetSize() == intact.GetSize() and image.GetSpacing() == intact.GetSpacing()
    assert image.GetOrigin() == intact.GetOrigin()
    kept = [k for k in range(8) if k != 5]
    np.testing.assert_array_equal(_array(image)[kept], _array(intact)[kept])
    reader = sitk.ImageSeriesReader()  # GDCM's own reading of the series
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    assert abs(reader.Execute().GetSpacing()[2] - 2.5) > 1
    # exports reference the images the reading took
    planes = reference_planes(choose_dicom_series(tmp_path / "ct"))
    assert [Path(p.file).name for p in planes] == [f.name for f in files if f != files[5]]


@pytest.mark.parametrize(("attributes", "names"), [
    ({"PixelSpacing": None}, "PixelSpacing"),
    ({"ImagePositionPatient": None, "ImageOrientationPatient": None},
     "ImagePositionPatient, ImageOrientationPatient"),
    ({"PixelSpacing": "0.7"}, "PixelSpacing '0.7' (needs 2 numbers above 0)"),
    ({"PixelSpacing": ["0", "0"]}, "PixelSpacing '0\\0' (needs 2 numbers above 0)"),
    ({"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]},
     "ImageOrientationPatient '1\\0\\0\\1\\0\\0' (needs 6 numbers: two unit vectors at "
     "right angles)")])
def test_a_series_that_does_not_say_how_large_its_voxels_are_is_described_not_segmented(
        tmp_path, attributes, names, capsys):
    """Without a usable PixelSpacing GDCM, and so 3D Slicer, reads 1 mm between pixels (a
    single value: that value both ways): a CT of 0.7 mm pixels read at 1.4 times its size,
    which a method would segment without a word; a spacing of 0 ended in ITK's own words
    ("Refusing to change spacing from [1, 1, 3] to [0, 0, 3]"). ``info`` names what is
    missing or unusable (it said "none of the files carries ImagePositionPatient,
    ImageOrientationPatient and PixelSpacing" whatever was missing) and a method refuses it."""
    from oncoseg.validation import volume_problems

    files = uniform_series(tmp_path / "ct", count=8)
    set_attributes(files, **attributes)
    result = read_volume(tmp_path / "ct")
    assert result.notes == [f"none of the files has a usable {names}: where the voxels lie and "
                            "how large they are are GDCM's guesses (3D Slicer reads it the same "
                            "way), so no method runs on it"]
    if attributes == {"PixelSpacing": None}:
        assert result.image.GetSpacing()[:2] == (1.0, 1.0)  # GDCM's 1 mm
    [problem] = volume_problems(result.image, "ct")
    assert problem.startswith(f"comes from DICOM files without a usable {names}: where its "
                              "voxels lie")
    assert main(["info", str(tmp_path / "ct")]) == 0
    assert f"a method would refuse it: it comes from DICOM files without a usable {names}" in \
        capsys.readouterr().out
    assert main(["predict", "oar-ct", "--input", f"ct={tmp_path / 'ct'}", "--output",
                 str(tmp_path / "out"), "--progress", "none"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("blank", ["", None])  # empty, absent
def test_a_series_without_uids_is_listed_and_read(tmp_path, blank):
    intact = read_volume(_series(tmp_path / "intact")).image
    files = uniform_series(tmp_path / "anonymised")
    set_attributes(files, StudyInstanceUID=blank, SeriesInstanceUID=blank,
                   SOPInstanceUID=blank, FrameOfReferenceUID=blank)
    found = find_dicom_series(tmp_path / "anonymised")
    assert len(found) == 1 and found[0].uid == "" and len(found[0].files) == 25
    assert "(no series UID)" in found[0].summary()
    image = read_volume(tmp_path / "anonymised").image
    np.testing.assert_array_equal(_array(image), _array(intact))
    assert image.GetOrigin() == intact.GetOrigin()
    assert image.GetSpacing() == intact.GetSpacing()


def _series(folder, **kwargs):
    uniform_series(folder, **kwargs)
    return folder


def test_a_study_folder_lists_its_series_and_chooses_by_uid_number_or_description(tmp_path):
    study = tmp_path / "study"
    uniform_series(study / "1 arterial", description="CT Arterial 2.5mm")
    uniform_series(study / "2 venous", description="CT Venous 2.5mm", count=20)
    set_attributes(sorted((study / "2 venous").glob("*.dcm")), SeriesNumber="7")
    with pytest.raises(SeriesChoiceError) as error:
        choose_dicom_series(study)
    table = str(error.value)
    assert "contains 2 DICOM series in its sub-folders" in table
    assert "'CT Venous 2.5mm'" in table and "2 venous" in table and " 20 " in table
    venous = choose_dicom_series(study, "*venous*")
    assert venous.description == "CT Venous 2.5mm" and len(venous.files) == 20
    assert choose_dicom_series(study, "7") == venous
    assert choose_dicom_series(study, venous.uid) == venous
    with pytest.raises(SeriesChoiceError, match="no DICOM image series whose UID, number or "
                       "description matches 'T2'"):
        choose_dicom_series(study, "T2")
    with pytest.raises(SeriesChoiceError, match=r"has 2 DICOM image series matching '\*2\.5mm'"):
        choose_dicom_series(study, "*2.5mm")
    # two series mixed in one folder: the same table
    for f in (study / "2 venous").glob("*.dcm"):
        shutil.copy(f, study / "1 arterial" / f"v_{f.name}")
    with pytest.raises(SeriesChoiceError, match="contains 2 DICOM series;"):
        read_volume(study / "1 arterial")


@pytest.mark.parametrize(("tag", "values", "pattern"), [
    ("ImageType", (["DERIVED", "PRIMARY", "W"], ["DERIVED", "PRIMARY", "F"]), "*\\F)"),
    ("EchoNumbers", ("1", "2"), "*(echonumbers 2)"),
    ("AcquisitionNumber", ("3", "4"), "*acquisitionnumber 4*")])
def test_a_series_of_several_acquisitions_lists_each_to_choose(tmp_path, tag, values, pattern):
    """A Dixon series' water and fat images (ImageType), a multi-echo series' echoes, pre- and
    post-contrast runs: one series UID, two images at every position. Slicer's DICOM module
    offers each as a volume of its own; OncoSeg lists each as a series to choose."""
    first = uniform_series(tmp_path / "mr", count=10)
    second = uniform_series(tmp_path / "second", count=10)
    uid = str(pydicom.dcmread(first[0]).SeriesInstanceUID)
    set_attributes(first, **{tag: values[0]})
    set_attributes(second, SeriesInstanceUID=uid, **{tag: values[1]})
    for path in second:  # the second acquisition: other pixels at the same positions
        ds = pydicom.dcmread(path)
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(path)
    expected = [_array(read_volume(tmp_path / f).image) for f in ("mr", "second")]
    for path in second:
        shutil.move(path, tmp_path / "mr" / f"second_{path.name}")
    with pytest.raises(SeriesChoiceError) as error:
        read_volume(tmp_path / "mr")
    table = str(error.value)
    assert "contains 2 DICOM series" in table and f"({tag} " in table
    np.testing.assert_array_equal(_array(read_volume(tmp_path / "mr", pattern).image),
                                  expected[1])
    with pytest.raises(SeriesChoiceError, match="a description pattern naming its acquisition"):
        read_volume(tmp_path / "mr", uid)
    # the description as written, brackets and all, names it too (fnmatch reads '[...]' as a
    # set of letters)
    set_attributes(sorted((tmp_path / "mr").glob("*.dcm")), SeriesDescription="T1 [FS]")
    second_part = f"{tag} " + ("\\".join(values[1]) if isinstance(values[1], list)
                                else values[1])
    label = next(s.label for s in find_dicom_series(tmp_path / "mr") if s.part == second_part)
    assert label == f"T1 [FS] ({second_part})"
    np.testing.assert_array_equal(_array(read_volume(tmp_path / "mr", label).image),
                                  expected[1])
    # read whole where its images must stay together (a diffusion series' volumes)
    whole = find_dicom_series(tmp_path / "mr", split=False)
    assert len(whole) == 1 and len(whole[0].files) == 20
    # the CLI names the choice too
    assert main(["info", str(tmp_path / "mr")]) == 2


def _as_mr(path: Path, series_uid: str, **values) -> pydicom.Dataset:
    """A CT slice rewritten as the MR image highdicom's legacy conversion takes."""
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality, ds.SeriesInstanceUID = "MR", series_uid
    for keyword in ("RescaleType", "KVP"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "NONE", ""
    ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTrainLength = "3D", 5.0, 1
    ds.MagneticFieldStrength, ds.EchoTime = 1.5, 2.3
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(("first", "second", "pattern"), [
    ({"ImageType": ["DERIVED", "PRIMARY", "W", "W"]},
     {"ImageType": ["DERIVED", "PRIMARY", "F", "F"]}, "*(FrameType *\\F\\*"),
    ({"EchoTime": 2.3}, {"EchoTime": 4.6}, "*(echotime 4.6)"),
    ({"EchoTime": 2.3}, {"EchoTime": 4.6}, "*(effectiveechotime 4.6)")])
def test_an_enhanced_image_of_several_acquisitions_lists_each_by_its_frames(tmp_path, first,
                                                                            second, pattern):
    """Philips stores a Dixon series' water and fat images, or a series' echoes, as frames of
    one enhanced file at the same positions (its frames' FrameType, EffectiveEchoTime tell them
    apart). Refused before ("put each in a folder of its own", impossible for one file); now
    each acquisition is listed and read alone, equal to its single-frame series, and a DICOM
    SEG on it references its own frames only."""
    uid = pydicom.uid.generate_uid()
    stacks = [uniform_series(tmp_path / name, count=8) for name in ("one", "two")]
    source = pydicom.dcmread(stacks[0][0], stop_before_pixels=True)
    same = {k: source[k].value for k in ("StudyInstanceUID", "FrameOfReferenceUID")}
    datasets = [_as_mr(path, uid, **same, **values)
                for files, values in zip(stacks, (first, second), strict=True) for path in files]
    for ds in datasets[8:]:  # the second acquisition: other pixels at the same positions
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    expected = [_array(read_volume(tmp_path / "one").image) // k for k in (1, 2)]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=hd.UID(), series_number=3, sop_instance_uid=hd.UID(),
        instance_number=1)
    if "effective" in pattern:  # as scanners write echoes: each frame's MR Echo group
        for frame in enhanced.PerFrameFunctionalGroupsSequence:
            echo = pydicom.Dataset()
            echo.EffectiveEchoTime = frame.UnassignedPerFrameConvertedAttributesSequence[0] \
                .EchoTime
            frame.MREchoSequence = pydicom.Sequence([echo])
    (tmp_path / "mf").mkdir()
    enhanced.save_as(tmp_path / "mf" / "dixon.dcm")
    with pytest.raises(SeriesChoiceError, match="contains 2 DICOM series") as error:
        read_volume(tmp_path / "mf")
    tag = pattern.split("(")[-1].split()[0].lower()  # what tells the two apart, in the table
    assert f"({tag} " in str(error.value).lower()
    parts = find_dicom_series(tmp_path / "mf")
    assert len(parts) == 2 and all(len(p.frames) == 8 for p in parts)
    chosen = read_volume(tmp_path / "mf", pattern)
    np.testing.assert_array_equal(_array(chosen.image), expected[1])
    other = next(p for p in parts if p != chosen.series)
    np.testing.assert_array_equal(_array(read_volume(tmp_path / "mf", other.label).image),
                                  expected[0])
    labels = sitk.Cast(chosen.image > 0, sitk.sitkUInt8)
    from oncoseg.export import export_segmentation
    from oncoseg.io.segnrrd import Segment, Segmentation

    export_segmentation(Segmentation.from_label_image(labels, [Segment("a", "A", (1, 0, 0))]),
                        tmp_path / "seg.dcm", "dicom-seg", chosen.series)
    referenced = {int(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
                  for f in pydicom.dcmread(tmp_path / "seg.dcm").PerFrameFunctionalGroupsSequence}
    assert referenced == {k + 1 for k in chosen.series.frames}


def test_an_enhanced_image_whose_acquisitions_nothing_tells_apart_is_refused_in_words(
        tmp_path):
    """Two stacks of frames at the same positions in one file, no frame attribute differing:
    refused, naming the frame attributes looked at, without asking for folders of their own
    (one file cannot be split into folders)."""
    uid = pydicom.uid.generate_uid()
    stacks = [uniform_series(tmp_path / name, count=6) for name in ("one", "two")]
    source = pydicom.dcmread(stacks[0][0], stop_before_pixels=True)
    same = {k: source[k].value for k in ("StudyInstanceUID", "FrameOfReferenceUID")}
    datasets = [_as_mr(path, uid, **same) for files in stacks for path in files]
    for ds in datasets[6:]:
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=hd.UID(), series_number=3, sop_instance_uid=hd.UID(),
        instance_number=1).save_as(tmp_path / "mixed.dcm")
    with pytest.raises(InputError, match=r"FrameType \(MRImageFrameTypeSequence\).*export "
                       "its acquisitions as series of their own"):
        read_volume(tmp_path / "mixed.dcm")


def test_enhanced_multiframe_ct_is_read_with_the_geometry_of_its_single_frame_series(tmp_path):
    files = uniform_series(tmp_path / "ct", orientation=OBLIQUE_ROWS)
    single = read_volume(tmp_path / "ct").image
    datasets = [pydicom.dcmread(f) for f in files]
    # highdicom's legacy converter (not ours) stores the frames top to bottom
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets[::2] + datasets[1::2], series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "mf").mkdir()
    enhanced.save_as(tmp_path / "mf" / "enhanced.dcm")
    _shuffle_frames(tmp_path / "mf" / "enhanced.dcm", tmp_path / "shuffled" / "enhanced.dcm")
    for path in (tmp_path / "mf", tmp_path / "mf" / "enhanced.dcm", tmp_path / "shuffled"):
        result = read_volume(path)
        image = result.image
        assert result.notes == []
        assert image.GetSize() == single.GetSize()
        np.testing.assert_allclose(image.GetOrigin(), single.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), single.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), single.GetDirection(), atol=1e-6)
        np.testing.assert_array_equal(_array(image), _array(single))
    gdcm = sitk.ReadImage(str(tmp_path / "mf" / "enhanced.dcm"))  # frames in storage order
    assert not np.array_equal(_array(gdcm), _array(single))


def _shuffle_frames(source, target):
    """An enhanced CT of our own: the same frames in a scrambled order (a permutation of the
    per-frame functional groups and of the pixel frames alike)."""
    ds = pydicom.dcmread(source)
    order = [3, 0, 7, 1, 2, 9, 4, *range(10, ds.NumberOfFrames), 8, 6, 5]
    ds.PerFrameFunctionalGroupsSequence = [ds.PerFrameFunctionalGroupsSequence[i]
                                           for i in order]
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[order]).tobytes()
    ds.NumberOfFrames = len(order)
    target.parent.mkdir()
    ds.save_as(target)


def test_rounded_orientation_cosines_give_an_orthonormal_grid(tmp_path):
    """Headers round ImageOrientationPatient (here to 3 decimals, 0.01 % off unit length and
    0.06 degrees off a right angle): the grid takes the nearest orthonormal axes."""
    files = uniform_series(tmp_path / "ct", orientation=OBLIQUE_ROWS)
    exact = read_volume(tmp_path / "ct").image
    set_attributes(files, ImageOrientationPatient=["0.966", "0.259", "0", "-0.258", "0.966",
                                                   "0"])
    rounded = read_volume(tmp_path / "ct")
    direction = np.asarray(rounded.image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(direction, np.asarray(exact.GetDirection()).reshape(3, 3),
                               atol=1e-3)
    assert rounded.notes == []
    np.testing.assert_array_equal(_array(rounded.image), _array(exact))


def _modality_values(ds):
    """pydicom's own modality LUT (not ours) on a file's stored values."""
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom 2.4 (Slicer 5.8, 5.10)
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut(ds.pixel_array, ds).astype(float)


# (slope, intercept) per slice, in turn: Philips MR stores each slice (and each frame of an
# enhanced image) with its own; the first file's decides the pixel type ITK's series reader uses
RESCALES = ((1.0, 0.0), (0.25, -1024.0), (8.0, 0.0), (0.5, 0.0))


def _rescaled_series(folder):
    """The analytic series, each slice stored with its own slope and intercept (in turn from
    RESCALES); returns the files and the modality values pydicom reads from them."""
    files = uniform_series(folder, count=12)
    expected = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        slope, intercept = RESCALES[k % len(RESCALES)]
        # one stored unit more where the slope is below 1: modality values between integers
        stored = (np.rint((ds.pixel_array * float(ds.RescaleSlope)
                           + float(ds.RescaleIntercept) - intercept) / slope)
                  + (slope < 1)).astype(np.int16)
        ds.PixelData = stored.tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.save_as(path)
        expected.append(_modality_values(ds))
    return files, np.stack(expected)


def test_each_slice_and_each_frame_is_rescaled_by_its_own_slope_and_intercept(tmp_path):
    files, expected = _rescaled_series(tmp_path / "ct")
    assert (expected[1] != np.rint(expected[1])).all()  # values between integers
    image = read_volume(tmp_path / "ct").image
    np.testing.assert_array_equal(_array(image), expected)
    # ITK's series reader alone takes the first file's 16-bit integers for every slice
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    assert np.abs(_array(reader.Execute()) - expected).max() >= 0.25
    # an enhanced image whose frames carry them: highdicom's legacy converter (not ours)
    # writes one Pixel Value Transformation per frame, and GDCM applies one to every frame
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    frames = pydicom.dcmread(tmp_path / "enhanced.dcm").PerFrameFunctionalGroupsSequence
    assert {float(f.PixelValueTransformationSequence[0].RescaleSlope) for f in frames} == \
        {s for s, _ in RESCALES}
    multiframe = read_volume(tmp_path / "enhanced.dcm").image
    np.testing.assert_array_equal(_array(multiframe), expected)
    np.testing.assert_allclose(multiframe.GetOrigin(), image.GetOrigin(), atol=1e-4)
    gdcm = _array(sitk.ReadImage(str(tmp_path / "enhanced.dcm")))
    assert np.abs(gdcm - expected).max() > 100
    # the memory check before reading counts what comes back: GDCM's 64-bit floats for
    # slopes that are not whole numbers
    (tmp_path / "mf").mkdir()
    shutil.move(tmp_path / "enhanced.dcm", tmp_path / "mf")
    assert declared_image(tmp_path / "mf").bytes_per_voxel == 8
    assert declared_image(tmp_path / "ct").bytes_per_voxel == 4


def test_enhanced_multiframe_with_a_missing_frame_is_resampled(tmp_path):
    files = uniform_series(tmp_path / "ct")
    datasets = [pydicom.dcmread(f) for i, f in enumerate(files) if i != 12]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    result = read_volume(tmp_path / "enhanced.dcm")
    assert result.image.GetSize() == (48, 40, 25)
    assert "1 slice(s) missing at 0 mm" in result.notes[0]


def test_real_philips_enhanced_mr_has_the_geometry_nibabel_gives_it(tmp_path):
    """nibabel's wheel ships a real Philips enhanced MR header (176 sagittal frames, pixels
    zeroed); nibabel's MultiframeWrapper computes its affine independently of us."""
    import gzip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom import dicomwrappers

    source = Path(dicomwrappers.__file__).parent / "tests" / "data" / "philips_mprage.dcm.gz"
    path = tmp_path / "mprage.dcm"
    path.write_bytes(gzip.decompress(source.read_bytes()))
    image = read_volume(path).image
    assert image.GetSize() == (256, 256, 176)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        affine = dicomwrappers.wrapper_from_data(pydicom.dcmread(path)).affine
    last = image.GetSize()[2] - 1
    for i, j, k in [(0, 0, 0), (255, 0, 0), (0, 255, last), (100, 30, 60), (17, 201, 150)]:
        # nibabel indexes (row, column, slice) and stacks along the opposite normal
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((i, j, k)),
                                   (affine @ [j, i, last - k, 1])[:3], atol=0.01)
    frames = pydicom.dcmread(path, stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    positions = sorted((f.PlanePositionSequence[0].ImagePositionPatient for f in frames),
                       key=lambda p: -float(p[0]))  # the stack's normal points to -x
    for k in (0, 75, last):
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((0, 0, k)),
                                   [float(v) for v in positions[k]], atol=1e-4)


def test_real_single_files_match_pydicom_in_every_transfer_syntax():
    reference = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
                 "MR_small_implicit.dcm"):
        image = read_volume(PYDICOM_FILES / name).image
        np.testing.assert_array_equal(_array(image)[0], reference.pixel_array)
        np.testing.assert_allclose(image.GetOrigin(), reference.ImagePositionPatient)
        np.testing.assert_allclose(image.GetSpacing()[:2], reference.PixelSpacing)
    ct = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    image = read_volume(PYDICOM_FILES / "CT_small.dcm").image
    np.testing.assert_array_equal(
        _array(image)[0], ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept))
    assert image.GetSpacing()[2] == pytest.approx(float(ct.SliceThickness))


def test_real_mr_copies_in_several_transfer_syntaxes_are_one_slice(tmp_path):
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    result = read_volume(tmp_path)
    assert result.image.GetSize() == (64, 64, 1)
    assert "2 duplicated instance(s) with the same pixels" in result.notes[0]


def test_real_rt_dose_frames_lie_at_their_grid_frame_offsets():
    dose = pydicom.dcmread(PYDICOM_FILES / "rtdose.dcm", stop_before_pixels=True)
    image = read_volume(PYDICOM_FILES / "rtdose.dcm").image
    offsets = [float(v) for v in dose.GridFrameOffsetVector]
    assert image.GetSize() == (10, 10, len(offsets))
    np.testing.assert_allclose(image.GetOrigin(), dose.ImagePositionPatient)
    assert image.GetSpacing()[2] == pytest.approx(abs(offsets[1] - offsets[0]))


def test_a_dicomdir_reference_out_of_its_folder_is_not_followed(tmp_path):
    """PS3.10 file IDs are plain names below the DICOMDIR's folder; a crafted or damaged one
    ('..', an absolute part) led the listing to read a file outside it (a server's data root
    included). pydicom's DICOMDIR with one IMAGE record pointing at ../<folder>/IM1, a CT slice
    that is there (the ID as long as the one it replaces, so that the records' offsets, which
    pydicom 2.4 follows, stay right): left out, the folder holds no series."""
    import shutil
    import warnings

    from oncoseg.io.dicom_series import _plain_name, dicomdir_files

    export = tmp_path / "export"
    export.mkdir()
    dicomdir = pydicom.dcmread(DICOMDIR_TREE / "DICOMDIR")
    records = [r for r in dicomdir.DirectoryRecordSequence if r.get("ReferencedFileID")]
    length = len("\\".join(records[0].ReferencedFileID))
    outside = ["..", "S" * (length - len("..\\") - len("\\IM1")), "IM1"]
    (tmp_path / outside[1]).mkdir()
    shutil.copyfile(PYDICOM_FILES / "CT_small.dcm", tmp_path / outside[1] / "IM1")
    with warnings.catch_warnings():  # '..' is no valid CS value
        warnings.simplefilter("ignore", UserWarning)
        records[0].ReferencedFileID = outside
    dicomdir.save_as(export / "DICOMDIR")
    assert (export / "/".join(outside)).is_file()
    listed = dicomdir_files(export)
    assert len(listed) == len(records) - 1 and not any(".." in f.parts for f in listed)
    with pytest.raises(InputError, match="contains no readable DICOM image series"):
        read_volume(export)
    assert not any(_plain_name(part) for part in ("..", ".", "", "/etc", "C:", "a\\b"))


def test_a_lossy_12_bit_jpeg_file_reads_as_an_independent_decoder_reads_it():
    """pydicom's JPGExtended.dcm (JPEG Extended, process 2 & 4: 12 bits, lossy DCT), which
    GDCM decodes after printing "Unsupported JPEG data precision 12" for its 8-bit IJG build:
    against libjpeg (pylibjpeg, through pydicom), every pixel within 1 (the IDCT rounding
    the JPEG standard leaves to each decoder: 1.4 % of the pixels, 2026-12-07)."""
    pytest.importorskip("pylibjpeg")
    path = PYDICOM_FILES / "JPGExtended.dcm"
    header = pydicom.dcmread(path)
    assert header.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    assert header.BitsStored == 12
    libjpeg = header.pixel_array.astype(np.int32)
    ours = sitk.GetArrayFromImage(read_volume(path).image)[0].astype(np.int32)
    difference = np.abs(ours - libjpeg)
    assert difference.max() <= 1 and np.count_nonzero(difference) < 0.02 * difference.size
    assert libjpeg.max() > 255  # the 12-bit range is used


def test_real_dicomdir_tree_lists_its_series_and_refuses_what_is_unsafe(capsys):
    with pytest.raises(SeriesChoiceError) as error:
        read_volume(DICOMDIR_TREE)
    assert len(error.value.series) == 13
    assert "'SmartScore - Gated 0.5 sec'" in str(error.value)
    assert "98892001/CT5N" in str(error.value)
    chosen = read_volume(DICOMDIR_TREE / "DICOMDIR", "*smartscore*")  # the DICOMDIR file
    assert chosen.image.GetSize() == (16, 16, 5) and chosen.notes == []
    assert chosen.series.description == "SmartScore - Gated 0.5 sec"
    # real series that are not one uniform stack
    with pytest.raises(InputError, match=r"slices are missing between -99\.48 mm .* 202\.5 mm gap"):
        read_volume(DICOMDIR_TREE / "77654033" / "CT2")  # instances 18, 180, 181, 182
    with pytest.raises(InputError, match="its slices have different orientations"):
        read_volume(DICOMDIR_TREE / "98892003" / "MR700")  # 7 angio projections
    with pytest.raises(InputError, match="its DICOMDIR lists 50 files, 50 of them present, "
                       "none an image"):
        read_volume(DICOMDIR_TREE / "TINY_ALPHA")


@pytest.mark.parametrize("where", ["", "DICOMDIR", "77654033/CT2", "TINY_ALPHA"])
def test_info_on_dicomdir_trees_ends_with_exit_2_and_a_clear_message(where, capsys):
    assert main(["info", str(DICOMDIR_TREE / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oncoseg: error: ")
    assert "GDCM" not in err and "sitk::ERROR" not in err and "Traceback" not in err


def test_a_real_truncated_file_ends_with_exit_2_and_words_not_gdcm_internals(tmp_path, capsys):
    shutil.copy(PYDICOM_FILES / "MR_truncated.dcm", tmp_path)
    for path in (tmp_path, tmp_path / "MR_truncated.dcm"):
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert "none of its 1 DICOM images could be decoded (MR_truncated.dcm: no reader " \
            "recognises its pixel data" in err
        assert "sitk::ERROR" not in err


def test_predict_chooses_a_series_in_a_study_folder_and_reports_the_resampling(tmp_path,
                                                                             capsys):
    study = tmp_path / "study"
    uniform_series(study / "a", description="scout", count=3)
    files = uniform_series(study / "b", description="CT abdomen")
    files[12].unlink()
    args = ["predict", "oar-ct", "--input", f"ct={study}", "--output", str(tmp_path / "out"),
            "--progress", "none", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "contains 2 DICOM series in its sub-folders" in err
    assert "'CT abdomen'" in err and "'scout'" in err
    assert "Choose one with --series ct=UID|NUMBER|PATTERN" in err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--series", "dwi=*abdomen*"]) == 2  # not an input of this task
    assert main(["predict", "oar-ct", "--input", f"ct={DICOMDIR_TREE / 'DICOMDIR'}",
                 "--output", str(tmp_path / "out")]) == 2
    assert "contains 13 DICOM series in its sub-folders" in capsys.readouterr().err
    assert main([*args, "--series", "*ABDOMEN*"]) == 0
    err = capsys.readouterr().err
    assert "note: input ct: 1 slice(s) missing at 0 mm" in err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any("1 slice(s) missing at 0 mm" in m for m in result["messages"])
    assert result["reference_grid"]["size"] == [48, 40, 25]


def test_series_options_say_which_input_they_choose_for(tmp_path):
    from oncoseg.cli import parse_series

    study = str(tmp_path)
    assert parse_series(["*t2*"], {"t2w": study}) == {"t2w": "*t2*"}
    both = {"t2w": study, "dwi_b0": study}
    assert parse_series(["t2w=*T2*", "dwi_b0=4"], both) == {"t2w": "*T2*", "dwi_b0": "4"}
    with pytest.raises(InputError, match="say which input it is for: --series ROLE=\\*t2\\*"):
        parse_series(["*t2*"], both)
    with pytest.raises(InputError, match="is given twice"):
        parse_series(["t2w=1", "t2w=2"], both)
    (tmp_path / "t2.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="not a DICOM folder to choose a series in"):
        parse_series(["t2w=1"], {"t2w": str(tmp_path / "t2.nii.gz")})


@pytest.mark.parametrize(("name", "kind"), [
    ("rtstruct.dcm", "RT Structure Set Storage (RTSTRUCT)"),
    ("rtplan.dcm", "RT Plan Storage (RTPLAN)"),
    ("test-SR.dcm", "Comprehensive SR Storage"),
    ("waveform_ecg.dcm", "12-lead ECG Waveform Storage")])
def test_a_dicom_object_without_an_image_is_named(name, kind):
    """pydicom's own RT structure set, plan, report and waveform given as an input: they were
    "not a readable image (no reader recognises its pixel data: truncated, or an unknown
    encoding)", which sends a user looking for damage."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    with pytest.raises(InputError, match=rf"is a DICOM {re.escape(kind)} object, which holds no "
                       "image: give the image series"):
        read_volume(path)
    assert main(["info", path]) == 2


def test_a_pacs_export_tree_is_searched_as_deep_as_dcm2niix_searches(tmp_path):
    """A PACS or CD export lays a series out as DICOM/patient/study/series/files, four folder
    levels below the export: it was "contains no readable DICOM image series" (3 levels were
    searched). Searched 5 levels deep now, as dcm2niix does; deeper, the refusal says that
    the search stopped above the files."""
    export = tmp_path / "export"
    uniform_series(export / "DICOM" / "PAT00001" / "STU00001" / "SER00001", count=6)
    assert read_volume(export).image.GetSize()[2] == 6
    deep = tmp_path / "deep"
    uniform_series(deep / "a" / "b" / "c" / "d" / "e" / "f", count=6)
    with pytest.raises(InputError, match="contains no readable DICOM image series within 5 "
                       "folder levels; it has deeper folders"):
        read_volume(deep)


def test_a_folder_of_volume_files_says_to_give_the_file(tmp_path):
    """A folder is read as a DICOM series; one holding NIfTI files was refused with "contains
    no readable DICOM image series" alone."""
    folder = tmp_path / "case"
    folder.mkdir()
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkInt16), str(folder / "ct.nii.gz"))
    with pytest.raises(InputError, match=r"case: contains no readable DICOM image series; it "
                       r"holds volume files \(ct\.nii\.gz\): give the file itself"):
        read_volume(folder)


def test_a_study_whose_series_are_linked_folders_is_read_and_a_link_loop_ends(tmp_path):
    """A DataLad or BIDS-style tree links series folders to where the data lies: os.walk does
    not enter them, and the study was "contains no readable DICOM image series". Linked folders
    are followed now, each real folder once (a link back up the tree ends the walk there)."""
    data = tmp_path / "archive" / "CT 2.5mm"
    uniform_series(data, count=6)
    study = tmp_path / "study"
    study.mkdir()
    (study / "series1").symlink_to(data, target_is_directory=True)
    (study / "again").symlink_to(data, target_is_directory=True)
    (study / "loop").symlink_to(study, target_is_directory=True)
    [series] = find_dicom_series(study)
    assert len(series.files) == 6
    assert read_volume(study).image.GetSize()[2] == 6


def test_an_empty_file_among_the_slices_is_named_with_the_missing_slice(tmp_path):
    """An interrupted copy leaves a slice's file empty: the slice was reported missing and
    resampled, without the file that explains it."""
    files = uniform_series(tmp_path / "ct", count=8)
    files[4].write_bytes(b"")
    result = read_volume(tmp_path / "ct")
    assert result.notes[0] == ("1 file(s) in the series' folder are too short to be DICOM "
                               f"({files[4].name}, 0 bytes): an interrupted copy? A missing "
                               "slice may be one of them")
    assert any("1 slice(s) missing" in note for note in result.notes)
    assert read_volume(_series(tmp_path / "intact", count=8)).notes == []


def test_a_folder_search_stops_before_reading_a_whole_disk(tmp_path, monkeypatch):
    """Linked folders are followed and 5 levels searched: a home folder given by mistake, or
    a link to a whole disk, is refused by its file count before any header is read."""
    import oncoseg.io.dicom_series as dicom_series

    uniform_series(tmp_path / "big" / "a", count=6)
    uniform_series(tmp_path / "big" / "b", count=6)
    monkeypatch.setattr(dicom_series, "MAX_FILES", 10)
    read = []
    monkeypatch.setattr(dicom_series, "read_dicom_header",
                        lambda *args, **kwargs: read.append(args) or None)
    with pytest.raises(InputError, match=r"big: holds more than 10 files within 5 folder "
                       "levels: give the study's or the series' own folder"):
        find_dicom_series(tmp_path / "big")
    assert read == []
