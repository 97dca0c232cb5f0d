"""Issue 25, point 4: probability maps written small and fast (uint8 with scl_slope = 1/255 by
default, float32 on request) and read back as floats by the readers users have; maps of a CT
resampled one at a time, axis by axis, with ITK's values.

How 3D Slicer reads the uint8 maps was read in its source, not run (no Slicer here): its volume
reader (Libs/MRML/Core/vtkMRMLVolumeArchetypeStorageNode.cxx, ``SetOutputScalarTypeToNative``)
takes the scalar type ITK's ImageIO reports (Libs/vtkITK/vtkITKArchetypeImageSeriesReader.cxx,
``UseNativeScalarType``), at v5.10.0 and v5.12.3 alike; ITK's NiftiImageIO reports an integer
file with scl_slope != 1 as FLOAT and multiplies by the slope as it reads. SimpleITK runs the
same ImageIO, which is what these tests read with, besides nibabel.
"""

import json
import struct

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk
from imaging import FLIPS, OBLIQUE, make_image

from oncoseg import verbs
from oncoseg.errors import InputError
from oncoseg.geometry import resample_to_reference
from oncoseg.io.nifti import PROBABILITY_SCALE, write_scaled_uint8
from oncoseg.io.volumes import read_image
from oncoseg.orientation import canonical_grid
from oncoseg.prediction import (
    PROBABILITY_FORMATS,
    Prediction,
    ResampledMaps,
    overview_prediction,
    write_prediction,
)
from oncoseg.tasks import SegmentSpec
from oncoseg.tiling import Geometry, linear_slabs, most_likely_onto, resample_linear

HALF_STEP = 0.5 / PROBABILITY_SCALE
# what reading adds to half a step: the float32 slope (1/255 rounded) and float32 voxels
READ_ROUNDING = 1e-6


def probability_map(shape_zyx=(7, 12, 10), direction=None, seed=0) -> sitk.Image:
    """Values in [0, 1], with the exact ends and the half steps (ties) among them."""
    rng = np.random.default_rng(seed)
    array = rng.random(shape_zyx).astype(np.float32)
    flat = array.reshape(-1)
    flat[:4] = [0.0, 1.0, 0.5 / 255, 254.5 / 255]
    image = make_image(shape_zyx=shape_zyx, direction=direction, dtype=np.float32)
    values = sitk.GetImageFromArray(array)
    values.CopyInformation(image)
    return values


def nibabel_zyx(path) -> np.ndarray:
    """nibabel's floats (x, y, z order) as SimpleITK's (z, y, x) array."""
    return np.asarray(nibabel.load(str(path)).get_fdata()).transpose(2, 1, 0)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
@pytest.mark.parametrize("direction", [None, OBLIQUE, FLIPS[5]])
def test_uint8_maps_read_back_as_floats_within_half_a_step(tmp_path, ending, direction):
    image = probability_map(direction=direction)
    path = tmp_path / f"map{ending}"
    write_scaled_uint8(image, path)
    expected = sitk.GetArrayFromImage(image)
    # SimpleITK (ITK's NiftiImageIO, as Slicer reads it): float32, the same grid
    read = sitk.ReadImage(str(path))
    assert read.GetPixelID() == sitk.sitkFloat32
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    values = sitk.GetArrayFromImage(read)
    assert np.abs(values - expected).max() <= HALF_STEP + READ_ROUNDING
    assert values.reshape(-1)[0] == 0.0 and abs(values.reshape(-1)[1] - 1.0) < READ_ROUNDING
    # the project's reader, and nibabel's floats
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), values)
    assert np.abs(nibabel_zyx(path) - expected).max() <= HALF_STEP + READ_ROUNDING
    # the stored codes are round(p * 255) (ties up), with the slope in the header
    raw = nibabel.load(str(path))
    assert raw.get_data_dtype() == np.uint8
    slope, inter = raw.dataobj.slope, raw.dataobj.inter
    assert slope == pytest.approx(1 / 255, rel=1e-7) and inter == 0.0
    codes = np.asarray(raw.dataobj.get_unscaled()).transpose(2, 1, 0)
    np.testing.assert_array_equal(codes, np.floor(expected.astype(np.float64) * 255 + 0.5))


def test_the_header_is_itks_own_with_the_scaling_set(tmp_path):
    """Only dim depends on the size: the header comes from a one-voxel image, dims patched."""
    image = probability_map(direction=OBLIQUE)
    write_scaled_uint8(image, tmp_path / "ours.nii")
    codes = sitk.Cast(image * 255.0, sitk.sitkUInt8)
    sitk.WriteImage(codes, str(tmp_path / "itk.nii"), useCompression=False)
    ours = (tmp_path / "ours.nii").read_bytes()[:352]
    itk = (tmp_path / "itk.nii").read_bytes()[:352]
    assert ours[:112] == itk[:112] and ours[120:] == itk[120:]
    assert struct.unpack("<ff", ours[112:120]) == (np.float32(1 / 255), 0.0)


def test_slabs_are_written_as_the_whole_image(tmp_path):
    image = probability_map(shape_zyx=(9, 8, 6))
    array = sitk.GetArrayFromImage(image)
    write_scaled_uint8(image, tmp_path / "whole.nii.gz")
    write_scaled_uint8(image, tmp_path / "slabs.nii.gz", (array[a:a + 4] for a in range(0, 9, 4)))
    assert (tmp_path / "whole.nii.gz").read_bytes() == (tmp_path / "slabs.nii.gz").read_bytes()
    with pytest.raises(ValueError, match="voxels given"):
        write_scaled_uint8(image, tmp_path / "short.nii.gz", iter([array[:3]]))
    assert not (tmp_path / "short.nii.gz").exists()


def _random_grid(rng) -> sitk.Image:
    size = [int(s) for s in rng.integers(3, 22, 3)]
    image = sitk.Image(size, sitk.sitkInt16)
    image.SetSpacing(tuple(rng.uniform(0.4, 3.0, 3)))
    image.SetOrigin(tuple(rng.uniform(-60.0, 60.0, 3)))
    direction = np.zeros((3, 3))
    direction[rng.permutation(3), range(3)] = rng.choice([-1.0, 1.0], 3)
    image.SetDirection(tuple(direction.ravel()))
    return image


def _itk(source: sitk.Image, reference: sitk.Image, default: float = 0.0) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(source, reference, sitk.Transform(),
                                                sitk.sitkLinear, default, sitk.sitkFloat32))


def test_axis_by_axis_resampling_gives_itks_values():
    """Working grids (canonical, coarser, box edge rounded) onto CTs stored in any axis order
    and back (downsampling), with 0 or another value outside: sitk.Resample's values to float
    rounding, including the voxels beyond the source's last centre and outside its box."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        ct = _random_grid(rng)
        grid = canonical_grid(ct, tuple(rng.uniform(0.9, 5.0, 3)))
        source = sitk.GetImageFromArray(rng.random(grid.GetSize()[::-1]).astype(np.float32))
        source.CopyInformation(grid)
        default = float(rng.choice([0.0, 1.0]))
        np.testing.assert_allclose(sitk.GetArrayFromImage(resample_linear(source, ct, default)),
                                   _itk(source, ct, default), atol=1e-6, rtol=0)
        back = sitk.GetImageFromArray(rng.random(ct.GetSize()[::-1]).astype(np.float32))
        back.CopyInformation(ct)
        np.testing.assert_allclose(sitk.GetArrayFromImage(resample_linear(back, grid)),
                                   _itk(back, grid), atol=1e-6, rtol=0)
        # an int16 CT (the overview's display image) is converted a slab at a time
        hu = sitk.GetImageFromArray(rng.integers(-1024, 2000, ct.GetSize()[::-1], np.int16))
        hu.CopyInformation(ct)
        np.testing.assert_allclose(sitk.GetArrayFromImage(resample_linear(hu, grid)),
                                   _itk(hu, grid), atol=1e-3, rtol=0)


def test_slabs_cover_the_grid_in_order_and_oblique_grids_use_itk():
    rng = np.random.default_rng(3)
    ct = make_image(shape_zyx=(11, 9, 8), direction=OBLIQUE, dtype=np.float32)
    grid = canonical_grid(ct, (2.0, 2.0, 4.0))  # axis-aligned: not parallel to the CT's
    source = sitk.GetImageFromArray(rng.random(grid.GetSize()[::-1]).astype(np.float32))
    source.CopyInformation(grid)
    slabs = list(linear_slabs(source, Geometry.of(ct), slab_voxels=2 * 9 * 8))
    assert [s.shape for s in slabs] == [(2, 9, 8)] * 5 + [(1, 9, 8)]
    np.testing.assert_allclose(np.concatenate(slabs), _itk(source, ct), atol=1e-6, rtol=0)


def _maps_on(reference: sitk.Image, names=("A", "B")) -> ResampledMaps:
    grid = canonical_grid(reference, (2.5, 2.5, 2.5))
    rng = np.random.default_rng(1)
    sources = {}
    for name in names:
        source = sitk.GetImageFromArray(rng.random(grid.GetSize()[::-1]).astype(np.float32))
        source.CopyInformation(grid)
        sources[name] = source
    return ResampledMaps(sources, reference, "ct")


def test_resampled_maps_read_as_the_maps_resampled_up_front():
    reference = make_image(shape_zyx=(10, 14, 12), direction=FLIPS[3], dtype=np.int16)
    maps = _maps_on(reference)
    assert list(maps) == ["A", "B"] and len(maps) == 2 and "A" in maps
    for name, source in maps.sources.items():
        up_front = resample_to_reference(source, reference, "linear")
        np.testing.assert_allclose(sitk.GetArrayFromImage(maps[name]),
                                   sitk.GetArrayFromImage(up_front), atol=1e-6, rtol=0)
        assert maps[name].GetSize() == reference.GetSize()
        np.testing.assert_allclose(np.concatenate(list(maps.slabs(name))),
                                   sitk.GetArrayFromImage(up_front), atol=1e-6, rtol=0)
    other = make_image(shape_zyx=(5, 6, 7), origin=(900.0, 900.0, 900.0))
    with pytest.raises(InputError, match="does not overlap ct"):
        maps.retarget(other)["A"]


def _prediction(reference: sitk.Image, maps) -> Prediction:
    labels = sitk.Cast(sitk.GetImageFromArray(
        (sitk.GetArrayFromImage(maps["A"]) > 0.5).astype(np.uint8)), sitk.sitkUInt8)
    labels.CopyInformation(reference)
    return Prediction(task="t", model={"name": "m"}, images={"ct": reference},
                      display_role="ct", labels=labels,
                      segments=(SegmentSpec(1, "A", (1.0, 0.0, 0.0)),),
                      probabilities=maps)


@pytest.mark.parametrize("probability_format", list(PROBABILITY_FORMATS))
def test_every_format_is_read_back_and_named_in_result_json(tmp_path, probability_format):
    reference = make_image(shape_zyx=(10, 14, 12), direction=FLIPS[6], dtype=np.int16)
    maps = _maps_on(reference)
    prediction = _prediction(reference, maps)
    out = write_prediction(prediction, tmp_path / "out", {"ct": "ct.nii.gz"},
                           probability_format=probability_format)
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    files = result["files"]["probabilities"]
    ending = PROBABILITY_FORMATS[probability_format]
    assert files == {"A": f"probabilities/A{ending}", "B": f"probabilities/B{ending}"}
    storage = result["probability_maps"]
    tolerance = HALF_STEP + READ_ROUNDING if probability_format == "uint8" else 1e-7
    if probability_format == "uint8":
        assert storage == {"format": "uint8", "scl_slope": 1 / 255, "scl_inter": 0.0,
                           "largest_error": 0.5 / 255}
    else:
        assert storage == {"format": "float32", "compressed": ending == ".nii.gz"}
    for name, relative in files.items():
        expected = sitk.GetArrayFromImage(maps[name])
        read = sitk.ReadImage(str(out / relative))
        assert read.GetPixelID() == sitk.sitkFloat32
        assert np.abs(sitk.GetArrayFromImage(read) - expected).max() <= tolerance
        assert np.abs(nibabel_zyx(out / relative) - expected).max() <= tolerance
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(out / "labels.nii.gz")),
                                  sitk.GetArrayFromImage(prediction.labels))


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path):
    reference = make_image(shape_zyx=(4, 5, 6))
    with pytest.raises(InputError, match="float16"):
        write_prediction(_prediction(reference, _maps_on(reference)), tmp_path / "out", {},
                         probability_format="float16")
    assert not (tmp_path / "out").exists()


def test_the_overview_reads_resampled_maps_straight_onto_its_coarse_grid(monkeypatch):
    monkeypatch.setattr("oncoseg.prediction.OVERVIEW_MAX_VOXELS", 500)
    reference = make_image(shape_zyx=(10, 14, 12), dtype=np.int16)
    maps = _maps_on(reference)
    shown = overview_prediction(_prediction(reference, maps))
    assert isinstance(shown.probabilities, ResampledMaps)
    coarse = shown.probabilities.grid
    assert np.prod(coarse.GetSize()) < np.prod(reference.GetSize()) / 2
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(shown.probabilities["B"]),
        sitk.GetArrayFromImage(resample_to_reference(maps.sources["B"], coarse, "linear")),
        atol=1e-6, rtol=0)


def test_the_most_likely_class_of_resampled_maps_is_argmax_over_itks_resampled_maps():
    """Class maps on a working grid, onto CTs stored in any axis order and onto an oblique one
    (ITK's path), a slab at a time: argmax of sitk.Resample's maps, ties to the first class,
    and the first class outside the maps' box (every map reads 0 there)."""
    rng = np.random.default_rng(11)
    oblique = make_image(shape_zyx=(11, 9, 8), direction=OBLIQUE, dtype=np.float32)
    for ct in [*(_random_grid(rng) for _ in range(12)), oblique]:
        grid = canonical_grid(ct, tuple(rng.uniform(0.9, 5.0, 3)))
        # coarse values, so that exact ties occur between the classes
        maps = rng.integers(0, 4, (4, *grid.GetSize()[::-1])).astype(np.float32) / 4
        images = [sitk.GetImageFromArray(m) for m in maps]
        for m in images:
            m.CopyInformation(grid)
        expected = np.argmax(np.stack([_itk(m, ct) for m in images]), axis=0)
        got = most_likely_onto(maps, Geometry.of(grid), Geometry.of(ct))
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="1 to 256"):
        most_likely_onto(np.zeros((0, 2, 2, 2), np.float32), Geometry.of(oblique),
                         Geometry.of(oblique))


def _small_ct(spacing=(1.5, 1.5, 2.0)) -> sitk.Image:
    """Air around a water cylinder with a bone rod, finer than the demo's 3 mm grid."""
    _, y, x = np.mgrid[0:24, 0:64, 0:72]
    array = np.full((24, 64, 72), -1000, np.int16)
    array[(y - 32) ** 2 + (x - 36) ** 2 < 24 ** 2] = 30
    array[(y - 32) ** 2 + (x - 20) ** 2 < 5 ** 2] = 900
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(tuple(FLIPS[2].ravel()))  # stored R-A-I along its axes
    return image


def test_oar_ct_maps_are_written_from_the_working_grid_one_at_a_time(tmp_path):
    """The demo model's maps stay on its 3 mm grid until written; what is written is those
    maps resampled onto the CT (as before, with sitk.Resample) to half a uint8 step."""
    ct = _small_ct()
    prediction = verbs.predict("oar-ct", {"ct": ct})
    maps = prediction.probabilities
    assert isinstance(maps, ResampledMaps) and maps.grid is ct
    assert all(s.GetSpacing() == (3.0, 3.0, 3.0) for s in maps.sources.values())
    assert prediction.details["probability_grid"] == "ct"
    out = write_prediction(prediction, tmp_path / "out", {"ct": "ct.nii.gz"})
    for name, source in maps.sources.items():
        before = sitk.GetArrayFromImage(resample_to_reference(source, ct, "linear"))
        written = tmp_path / "out" / "probabilities" / f"{name.replace(' ', '_')}.nii.gz"
        read = sitk.ReadImage(str(written))
        assert read.GetSize() == ct.GetSize()
        np.testing.assert_allclose(read.GetDirection(), ct.GetDirection(), atol=1e-6)
        assert np.abs(sitk.GetArrayFromImage(read) - before).max() <= HALF_STEP + READ_ROUNDING
    labels = sitk.ReadImage(str(out / "labels.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels),
                                  sitk.GetArrayFromImage(prediction.labels))


def test_oar_ct_labels_on_the_ct_are_the_most_likely_class_of_the_maps_written(tmp_path):
    """The label map and the maps beside it agree: each CT voxel's label is the most likely
    class of the maps on the CT (background: what the organs leave), with clean-up (largest
    component, holes) written into the maps it decides from, not into the maps written."""
    from oncoseg.oar.ct.predict import with_decisions
    from oncoseg.postprocess import most_likely

    rng = np.random.default_rng(5)
    maps = rng.dirichlet(np.ones(6), (5, 7, 8)).transpose(3, 0, 1, 2).astype(np.float32)
    labels = most_likely(maps)
    labels[2, 3, 4] = 0 if labels[2, 3, 4] else 3  # removed from an organ / a hole filled
    labels[4, 6, 7] = (labels[4, 6, 7] + 1) % 6
    kept = maps.copy()
    decided = with_decisions(maps, labels)
    np.testing.assert_array_equal(maps, kept)  # the network's maps are left alone
    np.testing.assert_array_equal(most_likely(decided), labels)
    changed = most_likely(maps) != labels
    np.testing.assert_array_equal(decided[:, ~changed], maps[:, ~changed])

    verbs.phantom("oar-ct", tmp_path, cases=1, seed=4242)
    prediction = verbs.predict("oar-ct", {"ct": read_image(tmp_path / "oarct_000")}, "demo",
                               {"keep_largest": False})
    organs = np.stack([sitk.GetArrayFromImage(prediction.probabilities[s.name])
                       for s in prediction.segments])
    best = most_likely(np.concatenate([1.0 - organs.sum(axis=0, keepdims=True), organs]))
    labels = sitk.GetArrayFromImage(prediction.labels)
    assert set(np.unique(labels)) == set(range(6))
    assert np.count_nonzero(best != labels) <= 1e-5 * labels.size  # near-ties rounded apart


def test_putting_a_prediction_back_on_the_users_grid_keeps_its_maps_lazy():
    """Prediction.onto_grid (a task that worked on the canonical form of the user's grid):
    ResampledMaps read onto the user's grid give what the exact permutation of the maps read
    onto the canonical grid gives."""
    from oncoseg.orientation import onto_grid, to_canonical

    stored = make_image(shape_zyx=(10, 14, 12), direction=FLIPS[5], dtype=np.int16)
    canonical = to_canonical(stored)
    maps = _maps_on(canonical)
    back = _prediction(canonical, maps).onto_grid(stored)
    assert isinstance(back.probabilities, ResampledMaps) and back.probabilities.grid is stored
    for name in maps:
        np.testing.assert_allclose(sitk.GetArrayFromImage(back.probabilities[name]),
                                   sitk.GetArrayFromImage(onto_grid(maps[name], stored)),
                                   atol=1e-6, rtol=0)
