"""Probability maps as a FRACTIONAL DICOM SEG, judged by things no one here wrote: dciodvfy
(David Clunie's validator), highdicom's reader and pydicom-seg-rb's (a second, independent DICOM
SEG reader), nibabel reading the stored maps. On pydicom's real CT_small.dcm and on analytic
series stored in three orientations, every frame must give back, for its source image, the map
as stored: exactly (to the 1/255 step) where the image is one of the map's slices, and within
1/255 of a linear field where the map lies on another grid (half a step from the stored uint8
map, half a step from the SEG's own; linear interpolation reproduces a linear field)."""

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
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
    dciodvfy_errors,
    plane_points,
    stack_positions,
    write_analytic_series,
)

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.export import export_file, export_probabilities, result_maps, result_segments
from oncoseg.io.nifti import write_scaled_uint8
from oncoseg.io.volumes import choose_dicom_series, read_image
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.prediction import Prediction, write_prediction

try:
    import pydicom_seg_rb
except ImportError:  # pragma: no cover - the test extra installs it
    pydicom_seg_rb = None

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
STEP = 1 / 255
MODEL = {"name": "a model", "file": "pelvis-7.safetensors", "sha256": "ab" * 32,
         "trained": "2026-11-30T10:00:00+00:00", "license": "CC-BY-4.0"}
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)
needs_second_reader = pytest.mark.skipif(
    pydicom_seg_rb is None, reason="pydicom-seg-rb (the test extra's second DICOM SEG reader) "
    "is not installed")


def _rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


OBLIQUE = _rotation(15, 20)
# series orientations (row, column cosines): as scanners store axial slices (LPS), slices
# stored right-to-left and anterior-to-posterior flipped (as a RAS volume written to DICOM
# slice by slice is), and a double oblique
ORIENTATIONS = {
    "LPS": AXIAL,
    "RAS": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "oblique": (tuple(OBLIQUE[:, 0]), tuple(OBLIQUE[:, 1])),
}
FIRSTS = {"LPS": (-47.0, -39.0, -30.0), "RAS": (47.0, 39.0, -30.0),
          "oblique": tuple(-OBLIQUE @ np.array([47.0, 39.0, 30.0]))}


def linear_field(points: np.ndarray) -> np.ndarray:
    """A probability that changes linearly along x, y and z, within [0.04, 0.96] wherever the
    series lie (|x|, |y|, |z| < 70 mm): linear interpolation reproduces it exactly."""
    return 0.5 + 0.003 * points[..., 0] - 0.002 * points[..., 1] + 0.0015 * points[..., 2]


def _grid(size, spacing, origin, direction) -> sitk.Image:
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(np.asarray(direction, float).ravel().tolist())
    return image


def _points_of(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return np.stack([i, j, k], axis=-1) @ matrix.T + np.asarray(image.GetOrigin())


def _filled(grid: sitk.Image, values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.CopyInformation(grid)
    return image


def _uids(files) -> list[str]:
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]


def _read_back(path: Path, files, count: int) -> np.ndarray:
    """highdicom's probabilities (n files, rows, columns, segments), file by file."""
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=_uids(files),
                                             segment_numbers=list(range(1, count + 1)),
                                             ignore_spatial_locations=False)


def _second_reader(path: Path, files, number: int) -> np.ndarray:
    """pydicom-seg-rb's segment ``number`` (its own volume, placed by the frames' positions),
    taken at each file's position: (n files, rows, columns)."""
    result = pydicom_seg_rb.SegmentReader().read(pydicom.dcmread(path))
    volume = result.segment_image(number)
    data = result.segment_data(number)
    out = []
    for f in files:
        position = [float(v) for v in pydicom.dcmread(f, stop_before_pixels=True)
                    .ImagePositionPatient]
        out.append(data[volume.TransformPhysicalPointToIndex(position)[2]])
    return np.stack(out)


@pytest.fixture(scope="module", params=list(ORIENTATIONS))
def oriented(request, tmp_path_factory):
    """(orientation, series files, the series as read, a map on the series' own grid stored
    as uint8 NIfTI, a map of the linear field on a coarse grid of another orientation)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    orientation = ORIENTATIONS[name]
    positions = stack_positions([k * 2.5 for k in range(25)], orientation, FIRSTS[name])
    files = write_analytic_series(root / "ct", positions, orientation)
    image = read_image(root / "ct")
    codes = np.random.default_rng(7).integers(0, 256, sitk.GetArrayViewFromImage(image).shape)
    write_scaled_uint8(_filled(image, codes / 255.0), root / "on_grid.nii.gz")
    # the coarse map's axes: LPS for the flipped and oblique series, RAS for the LPS one
    direction = np.diag([-1.0, -1.0, 1.0]) if name == "LPS" else np.eye(3)
    coarse = _grid([30, 30, 30], [5.0, 5.0, 5.0], direction @ np.array([-72.0] * 3), direction)
    write_scaled_uint8(_filled(coarse, linear_field(_points_of(coarse))),
                       root / "coarse.nii.gz")
    return name, files, image, root / "on_grid.nii.gz", root / "coarse.nii.gz"


@needs_dciodvfy
def test_maps_on_the_grid_and_off_it_read_back_in_every_orientation(oriented, tmp_path):
    name, files, image, on_grid, coarse = oriented
    maps = {"Bladder": read_image(on_grid), "Bowel bag": read_image(coarse)}
    segments = result_segments({"task": "oar-ct"}, list(maps))
    result = export_probabilities(maps, segments, tmp_path / "p.dcm",
                                  choose_dicom_series(files[0].parent), naming="oncoseg")
    assert result.messages == [
        f"the probability maps were resampled (linear interpolation) onto the planes of the "
        f"images of DICOM series {pydicom.dcmread(files[0]).SeriesInstanceUID}"]
    assert dciodvfy_errors(result.path) == []
    frames = _read_back(result.path, files, 2)
    # on the series' grid: each frame is the slice of its image, to the 1/255 step; nibabel
    # reads the stored codes (its own NIfTI reader, applying scl_slope)
    stored = np.asarray(nib.load(on_grid).dataobj, dtype=np.float64)  # (x, y, z)
    stored = np.transpose(stored, (2, 1, 0))  # (z, y, x) as SimpleITK's grid
    positions = [pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient for f in files]
    slices = [image.TransformPhysicalPointToIndex([float(v) for v in p])[2] for p in positions]
    np.testing.assert_array_equal(np.rint(frames[..., 0] * 255), np.rint(stored[slices] * 255))
    # off it: the linear field at each source pixel, within the two half steps
    row, column = ORIENTATIONS[name]
    truth = np.stack([linear_field(plane_points(p, row, column, SPACING_XY, SHAPE))
                      for p in positions])
    assert np.abs(frames[..., 1] - truth).max() <= STEP + 1e-6
    ds = pydicom.dcmread(result.path, stop_before_pixels=True)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.MaximumFractionalValue) == \
        (8, 8, 7, 255)
    assert ds.SegmentsOverlap == "YES"
    if pydicom_seg_rb is not None:
        np.testing.assert_allclose(_second_reader(result.path, files, 1), frames[..., 0],
                                   atol=1e-6)
        np.testing.assert_allclose(_second_reader(result.path, files, 2), frames[..., 1],
                                   atol=1e-6)


@pytest.fixture(scope="module")
def real_ct_result(tmp_path_factory):
    """pydicom's real CT_small.dcm (one 128 x 128 slice) and a predict output folder written
    by OncoSeg's own writer on it: two maps as uint8 NIfTI, a segmentation, result.json."""
    root = tmp_path_factory.mktemp("real")
    (root / "ct").mkdir()
    shutil.copy(CT_SMALL, root / "ct" / "CT_small.dcm")
    image = read_image(root / "ct")
    rng = np.random.default_rng(3)
    shape = sitk.GetArrayViewFromImage(image).shape
    smooth = np.clip(np.cumsum(rng.normal(0, 0.05, shape), axis=2) + 0.5, 0, 1)
    specs = CT_SEGMENTS[2:4]  # Bladder, Bowel bag
    maps = {specs[0].name: _filled(image, smooth),
            specs[1].name: _filled(image, np.where(smooth > 0.6, 0.0, 1 - smooth))}
    labels = sitk.Cast(_filled(image, 1 + (smooth <= 0.6)), sitk.sitkUInt8)
    prediction = Prediction(task="oar-ct", model=MODEL, images={"ct": image},
                            display_role="ct", segments=specs, labels=labels,
                            probabilities=maps)
    write_prediction(prediction, root / "out", {"ct": str(root / "ct")})
    return root / "ct", root / "out", list(maps)


@needs_dciodvfy
def test_the_real_ct_gets_its_stored_maps_back_through_the_command_line(real_ct_result,
                                                                        tmp_path, capsys):
    ct, out, names = real_ct_result
    output = tmp_path / "p.dcm"
    assert main(["export", str(out), "--format", "dicom-seg-fractional", "--reference",
                 str(ct), "--output", str(output)]) == 0
    said = capsys.readouterr().out
    tg263 = {"Bladder": "Bladder", "Bowel bag": "Bag_Bowel"}  # AAPM TG-263, the default
    assert f"dicom-seg-fractional with 2 segments ({', '.join(tg263[n] for n in names)})" in said
    assert "structures named by AAPM TG-263 (Bowel bag -> Bag_Bowel)" in said
    assert [s.SegmentLabel for s in pydicom.dcmread(output).SegmentSequence] == [
        tg263[n] for n in names]
    assert dciodvfy_errors(output) == []
    files = [ct / "CT_small.dcm"]
    frames = _read_back(output, files, 2)
    document = json.loads((out / "result.json").read_text())
    for n, name in enumerate(names):
        stored = np.asarray(nib.load(out / document["files"]["probabilities"][name]).dataobj)
        stored = np.transpose(stored, (2, 1, 0))  # (z, y, x): the one slice
        np.testing.assert_array_equal(np.rint(frames[..., n] * 255), np.rint(stored * 255))
        if pydicom_seg_rb is not None:
            np.testing.assert_allclose(_second_reader(output, files, n + 1), frames[..., n],
                                       atol=1e-6)
    ds = pydicom.dcmread(output, stop_before_pixels=True)
    source = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    [series] = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence] == \
        [source.SOPInstanceUID]


def test_the_fractional_seg_describes_segments_and_model_as_the_binary_one(real_ct_result,
                                                                           tmp_path):
    """Same segment labels, SNOMED codes, colours and algorithm identification, same
    Contributing Equipment, same referenced series, whichever file of the folder is named."""
    ct, out, _ = real_ct_result
    binary = export_file(out / "segmentation.seg.nrrd", tmp_path / "b.dcm", "dicom-seg", ct)
    fractional = [export_file(source, tmp_path / f"f{n}.dcm", "dicom-seg-fractional", ct)
                  for n, source in enumerate([out, out / "result.json",
                                              out / "segmentation.seg.nrrd"])]
    b = pydicom.dcmread(binary.path, stop_before_pixels=True)
    del b.ContributingEquipmentSequence[0].ContributionDateTime
    for result in fractional:
        f = pydicom.dcmread(result.path, stop_before_pixels=True)
        assert (b.SegmentationType, f.SegmentationType) == ("BINARY", "FRACTIONAL")
        assert f.SegmentSequence == b.SegmentSequence
        assert f.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0] \
            .AlgorithmName == "pelvis-7.safetensors"
        del f.ContributingEquipmentSequence[0].ContributionDateTime  # written seconds apart
        assert f.ContributingEquipmentSequence == b.ContributingEquipmentSequence
        assert f.ReferencedSeriesSequence[0].SeriesInstanceUID == \
            b.ReferencedSeriesSequence[0].SeriesInstanceUID
    # the folder and result.json name the segmentation for the other formats too
    again = export_file(out, tmp_path / "b2.dcm", "dicom-seg", ct)
    assert pydicom.dcmread(again.path).SegmentSequence == b.SegmentSequence


@needs_dciodvfy
def test_a_chosen_maximum_fractional_value_sets_the_step(real_ct_result, tmp_path):
    ct, out, _ = real_ct_result
    result = export_file(out, tmp_path / "p.dcm", "dicom-seg-fractional", ct,
                         maximum_fractional_value=100)
    assert pydicom.dcmread(result.path, stop_before_pixels=True).MaximumFractionalValue == 100
    assert dciodvfy_errors(result.path) == []
    frames = _read_back(result.path, [ct / "CT_small.dcm"], 2)
    maps = result_maps(out, json.loads((out / "result.json").read_text())["files"]
                      ["probabilities"])
    for n, name in enumerate(maps):
        stored = sitk.GetArrayFromImage(maps[name])
        # half a step of 1/100 from the stored map, which is within half a 1/255 step of p
        assert np.abs(frames[..., n] - stored).max() <= 0.5 / 100 + 1e-6
        assert np.abs(frames[..., n] - stored).max() > 0.5 / 255  # coarser than the store
    for wrong in (0, 256):
        with pytest.raises(InputError, match="from 1 to 255"):
            export_file(out, tmp_path / f"w{wrong}.dcm", "dicom-seg-fractional", ct,
                        maximum_fractional_value=wrong)
        assert not (tmp_path / f"w{wrong}.dcm").exists()


def test_frames_where_a_map_is_0_are_left_out_and_read_back_as_0(tmp_path):
    positions = stack_positions([k * 2.5 for k in range(10)])
    files = write_analytic_series(tmp_path / "ct", positions)
    image = read_image(tmp_path / "ct")
    values = np.zeros(sitk.GetArrayViewFromImage(image).shape)
    values[3:6, 10:20, 5:30] = 0.7
    result = export_probabilities({"A": _filled(image, values)},
                                  result_segments({}, ["A"]), tmp_path / "p.dcm",
                                  choose_dicom_series(tmp_path / "ct"))
    ds = pydicom.dcmread(result.path)
    assert ds.NumberOfFrames == 3 and ds.SegmentsOverlap == "NO"
    frames = _read_back(result.path, files, 1)
    np.testing.assert_allclose(frames[..., 0], np.rint(values * 255) / 255, atol=1e-6)
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"


def test_inputs_without_maps_or_with_what_is_not_a_map_are_refused(real_ct_result, tmp_path):
    ct, out, _ = real_ct_result
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "result.json").write_text(json.dumps(
        {"task": "staging", "model": MODEL, "files": {"result": "result.json",
                                                      "overview": "overview.png"}}))
    for source in (staging, staging / "result.json", tmp_path / "nothing.seg.nrrd"):
        with pytest.raises(InputError, match="has no probability maps beside it") as error:
            export_file(source, tmp_path / "p.dcm", "dicom-seg-fractional", ct)
        assert str(error.value).startswith(str(source))
    with pytest.raises(InputError, match="needs the DICOM series"):
        export_file(out, tmp_path / "p.dcm", "dicom-seg-fractional")
    shutil.copytree(out, tmp_path / "moved")
    missing = next((tmp_path / "moved" / "probabilities").iterdir())
    missing.unlink()
    with pytest.raises(InputError, match=r"is missing: result\.json lists it") as error:
        export_file(tmp_path / "moved", tmp_path / "p.dcm", "dicom-seg-fractional", ct)
    assert str(error.value).startswith(str(missing))
    image = read_image(ct)
    series = choose_dicom_series(ct)
    segments = result_segments({}, ["A"])
    for values, message in ((2.0, "values from 2 to 2"), (np.nan, "not numbers")):
        with pytest.raises(InputError, match=message):
            export_probabilities({"A": _filled(image, np.full((1, 128, 128), values))},
                                 segments, tmp_path / "p.dcm", series)
    far = _filled(image, np.full((1, 128, 128), 0.5))
    far.SetOrigin([o + 5000 for o in image.GetOrigin()])
    with pytest.raises(InputError, match="does not overlap"):
        export_probabilities({"A": far}, segments, tmp_path / "p.dcm", series)
    assert not (tmp_path / "p.dcm").exists()
