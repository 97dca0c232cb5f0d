"""Multi-b diffusion input: b-values from every vendor's DICOM tags, .bval sidecars and DWMRI
NRRD keys; b0 / high-b choice; trace-weighted averaging. Real files from nibabel's and dipy's
wheels (Siemens mosaics with CSA headers; 4D NIfTI + .bval/.bvec) and synthetic series written
in each vendor's convention from the rectal phantom."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dwi_series import (
    VENDORS,
    at_b_value,
    directional,
    write_4d_nifti,
    write_dwi_series,
    write_dwmri_nrrd,
    write_enhanced_dwi,
    write_siemens_mosaic,
)

from oncoseg.errors import InputError
from oncoseg.io.diffusion import (
    DiffusionImage,
    DiffusionSeries,
    check_dwi_roles,
    choose_b_values,
    geometric_mean,
    read_bvals,
    read_diffusion,
    siemens_csa,
    split_dwi_input,
)
from oncoseg.io.volumes import read_image
from oncoseg.verbs import phantom


def _package_data(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (it is in the test extra)")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


NIBABEL_DICOM = ("nibabel", "nicom", "tests", "data")
DIPY_FILES = ("dipy", "data", "files")


@pytest.fixture(scope="module")
def siemens_mosaics(tmp_path_factory) -> Path:
    """nibabel's real Siemens DTI mosaics (b0 and one b1000 direction) in one folder."""
    folder = tmp_path_factory.mktemp("siemens")
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        data = gzip.decompress(_package_data(*NIBABEL_DICOM, name).read_bytes())
        (folder / name.replace(".gz", "")).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def phantom_dwi(tmp_path_factory):
    """A rectal phantom's DWI b0 and b1000 (the demo model's inputs)."""
    [case] = phantom("rectal", tmp_path_factory.mktemp("rectal"), cases=1, seed=9100)
    return read_image(case / "dwi_b0.nii.gz"), read_image(case / "dwi_b1000.nii.gz")


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(np.float64)


def _index_to_lps(image: sitk.Image, ijk) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))


# ---------------------------------------------------------------------------- real files


def test_real_siemens_mosaics_read_with_nibabels_geometry(siemens_mosaics):
    with warnings.catch_warnings():  # nibabel calls its DICOM readers experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

    series = read_diffusion(siemens_mosaics)
    assert [i.b_value for i in series.images] == [0.0, 1000.0]
    assert series.b_value_source == "Siemens B_value (0019,100C)"
    header = pydicom.dcmread(siemens_mosaics / "siemens_dwi_1000.dcm")
    expected = np.asarray(header[0x0019, 0x100E].value)
    np.testing.assert_allclose(series.images[1].direction, expected / np.linalg.norm(expected))
    image = series.images[0].image
    assert image.GetSize() == (128, 128, 48)  # 48 tiles of 128 x 128 in a 7 x 7 mosaic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # voxel (row, column, slice) -> DICOM patient coordinates (LPS, mm)
        affine = dicomwrappers.wrapper_from_data(header).affine
    for i, j, k in [(0, 0, 0), (127, 0, 0), (0, 127, 47), (127, 127, 47), (64, 10, 20)]:
        np.testing.assert_allclose(_index_to_lps(image, (j, i, k)),
                                   (affine @ [i, j, k, 1])[:3], atol=1e-3)
    choice = choose_b_values(series, 1000)
    assert (choice.b0_value, choice.high_b_value) == (0.0, 1000.0)
    assert choice.note.startswith("dwi: 2 b-values (0, 1000 s/mm^2); b0 = 0, high b = 1000 "
                                  "(the model's b-value)")


def test_csa_header_reads_as_nibabel_reads_it(siemens_mosaics):
    from nibabel.nicom import csareader

    for path in sorted(siemens_mosaics.glob("*.dcm")):
        header = pydicom.dcmread(path)
        ours = siemens_csa(header)
        theirs = csareader.get_csa_header(header)["tags"]
        assert set(ours) == set(theirs)
        for name, tag in theirs.items():
            items = [str(v) for v in tag["items"]]
            if tag["vr"] in ("DS", "FD", "FL", "IS", "SL", "UL", "SS", "US"):
                np.testing.assert_allclose([float(v) for v in ours[name]],
                                           [float(v) for v in items], err_msg=name)
            else:
                assert ours[name] == items, name
        assert float(ours["B_value"][0]) == float(header[0x0019, 0x100C].value)


def test_csa_header_gives_the_b_value_when_the_private_tag_is_gone(siemens_mosaics, tmp_path):
    for path in siemens_mosaics.glob("*.dcm"):
        header = pydicom.dcmread(path)
        del header[0x0019, 0x100C]
        header.save_as(str(tmp_path / path.name))
    series = read_diffusion(tmp_path)
    assert sorted(i.b_value for i in series.images) == [0.0, 1000.0]
    assert series.b_value_source == "Siemens CSA header B_value (0029,1010)"


def test_dipy_4d_nifti_with_bval_and_bvec(tmp_path):
    import nibabel

    source = _package_data(*DIPY_FILES, "small_64D.nii")
    series = read_diffusion(source)
    bvals = np.loadtxt(source.with_name("small_64D.bval"))
    assert [i.b_value for i in series.images] == list(bvals)
    shells = series.shells()
    assert [len(s.images) for s in shells] == [1, 64]  # b0, then 988-1001 s/mm^2: one shell
    assert shells[1].directions() == 64
    data = np.asarray(nibabel.load(str(source)).dataobj, dtype=np.float64)  # (x, y, z, volume)
    choice = choose_b_values(series, 1000)
    assert 980 < choice.high_b_value < 1010 and choice.b0_value == 0
    np.testing.assert_allclose(_array(choice.b0), data[..., 0].T)
    with np.errstate(divide="ignore"):
        expected = np.exp(np.log(data[..., 1:]).mean(axis=-1))
    expected[(data[..., 1:] <= 0).any(axis=-1)] = 0
    np.testing.assert_allclose(_array(choice.high_b), expected.T, rtol=1e-5, atol=1e-3)
    assert "64 directions averaged" in choice.note and "geometric mean" in choice.note
    # geometry: nibabel's RAS affine, flipped to LPS
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nibabel.load(str(source)).affine
    for ijk in [(0, 0, 0), (9, 0, 0), (0, 9, 9), (3, 7, 5)]:
        np.testing.assert_allclose(_index_to_lps(choice.b0, ijk), (affine @ [*ijk, 1])[:3],
                                   atol=1e-4)


def test_dipy_multi_shell_without_the_models_b_value_takes_the_highest():
    series = read_diffusion(_package_data(*DIPY_FILES, "small_101D.nii.gz"))
    choice = choose_b_values(series, 1000)
    assert choice.b0_value == 15  # the lowest b-value, <= 50
    assert choice.high_b_value == pytest.approx(4000, abs=70)
    assert "the model was trained at b = 1000, which this series lacks" in choice.note
    assert choice.details["high_b_rule"] == "highest"


def test_dipy_bval_files_parse():
    values = read_bvals(_package_data(*DIPY_FILES, "55dir_grad.bval"))
    assert len(values) == 56 and values[0] == 0 and set(values[1:]) == {2000.0}


# ------------------------------------------------------------------- vendors' conventions


def _multi_b(b0: sitk.Image, b1000: sitk.Image):
    """b 0, 50, 800 (one image each) and 1000 (three orthogonal directions)."""
    return ([(0.0, None, b0), (50.0, None, at_b_value(b0, b1000, 50)),
             (800.0, None, at_b_value(b0, b1000, 800))]
            + [(1000.0, d, image) for d, image in directional(b1000, 1000)])


@pytest.mark.parametrize(("vendor", "creators"), [(v, True) for v in VENDORS] + [
    (v, False) for v in VENDORS if v != "standard"])
def test_vendor_series_give_b_values_and_the_trace_image(phantom_dwi, tmp_path, vendor,
                                                          creators):
    """One series, every slice position holding 6 images; with creators=False the private
    creator elements are gone (some anonymisers) and the Manufacturer says where to look."""
    b0, b1000 = phantom_dwi
    write_dwi_series(_multi_b(b0, b1000), tmp_path, vendor, creators=creators)
    series = read_diffusion(tmp_path)
    assert sorted(i.b_value for i in series.images) == [0, 50, 800, 1000, 1000, 1000]
    choice = choose_b_values(series, 1000)
    assert choice.note.startswith("dwi: 4 b-values (0, 50, 800, 1000 s/mm^2); b0 = 0, high b "
                                  "= 1000 (3 directions averaged) (the model's b-value)")
    assert {"siemens-csa": "CSA", "ge": "GE", "philips": "Philips", "siemens": "(0019,100C)",
            "standard": "(0018,9087)"}[vendor] in choice.note
    step = float(_array(b1000).max()) / 60000 * 1.5  # the series' 16-bit quantisation
    for picked, truth in ((choice.b0, b0), (choice.high_b, b1000)):
        assert picked.GetSize() == truth.GetSize()
        np.testing.assert_allclose(picked.GetOrigin(), truth.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(picked.GetSpacing(), truth.GetSpacing(), atol=1e-3)
        np.testing.assert_allclose(picked.GetDirection(), truth.GetDirection(), atol=1e-5)
        # the geometric mean of the 3 directions gives b1000 back; an arithmetic one would not
        assert np.abs(_array(picked) - _array(truth)).max() <= 3 * step


def test_arithmetic_mean_of_directions_would_not_be_the_trace(phantom_dwi):
    _, b1000 = phantom_dwi
    images = [image for _, image in directional(b1000, 1000)]
    arithmetic = np.mean([_array(i) for i in images], axis=0)
    assert np.abs(arithmetic - _array(b1000)).max() > 1.0  # the test above can tell them apart
    np.testing.assert_allclose(_array(geometric_mean(images)), _array(b1000), rtol=1e-5)


def test_philips_isotropic_image_in_the_series_is_used_as_it_is(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    darker = sitk.Cast(b1000, sitk.sitkFloat32) * 0.5  # directions that would average wrongly
    volumes = [(0.0, None, b0), (1000.0, None, b1000)] + [
        (1000.0, d, darker) for d in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))]
    write_dwi_series(volumes, tmp_path, "philips")
    choice = choose_b_values(read_diffusion(tmp_path), 1000)
    assert "scanner's trace-weighted image" in choice.note
    assert np.abs(_array(choice.high_b) - _array(b1000)).max() <= 0.05


def test_siemens_mosaic_of_a_phantom_comes_back_as_the_volume(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    oblique = sitk.Image(b0)
    angle = np.radians(15)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                         [0, np.sin(angle), np.cos(angle)]])
    oblique.SetDirection(rotation.ravel().tolist())
    uid = pydicom.uid.generate_uid()
    write_siemens_mosaic(oblique, tmp_path / "b0.dcm", 0, 1, uid)
    high = sitk.Image(b1000)
    high.CopyInformation(oblique)
    write_siemens_mosaic(high, tmp_path / "b1000.dcm", 1000, 2, uid)
    choice = choose_b_values(read_diffusion(tmp_path), 1000)
    np.testing.assert_allclose(_array(choice.b0), np.clip(np.rint(_array(b0)), 0, None))
    np.testing.assert_allclose(choice.b0.GetOrigin(), oblique.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(choice.b0.GetDirection(), oblique.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(choice.b0.GetSpacing(), oblique.GetSpacing(), atol=1e-4)


def test_enhanced_multiframe_dwi_reads_each_frames_diffusion_group(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    volumes = [(0.0, None, b0)] + [(1000.0, d, image) for d, image in
                                   directional(b1000, 1000)]
    path = write_enhanced_dwi(volumes, tmp_path / "enhanced.dcm")
    for source in (path, tmp_path):  # the file, or its folder
        series = read_diffusion(source)
        assert series.b_value_source == ("DiffusionBValue (0018,9087) of the MR Diffusion "
                                         "functional group")
        choice = choose_b_values(series, 1000)
        assert "b0 = 0, high b = 1000 (3 directions averaged)" in choice.note
        np.testing.assert_array_equal(_array(choice.b0), _array(b0))
        assert np.abs(_array(choice.high_b) - _array(b1000)).max() <= 1.0  # 16-bit rounding
        np.testing.assert_allclose(choice.b0.GetOrigin(), b0.GetOrigin(), atol=1e-4)


def test_each_frame_of_an_enhanced_dwi_gets_its_own_rescale(phantom_dwi, tmp_path):
    """Philips stores each b-value of an enhanced DWI at its own scale (a RescaleSlope per
    frame); GDCM applies one to the whole file."""
    b0, b1000 = phantom_dwi
    path = write_enhanced_dwi([(0.0, None, b0), (1000.0, None, b1000)],
                              tmp_path / "enhanced.dcm", slopes=[4.0, 0.25])
    choice = choose_b_values(read_diffusion(path), 1000)
    assert np.abs(_array(choice.b0) - _array(b0)).max() <= 2.0  # half the slope of 4
    assert np.abs(_array(choice.high_b) - _array(b1000)).max() <= 0.125
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(float)
    frames = b0.GetSize()[2]
    assert np.abs(gdcm[:frames] - _array(b0)).max() > 100 or \
        np.abs(gdcm[frames:] - _array(b1000)).max() > 100


def test_4d_nifti_and_dwmri_nrrd_round_trip(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    volumes = _multi_b(b0, b1000)
    for path in (write_4d_nifti(volumes, tmp_path / "dwi.nii.gz"),
                 write_dwmri_nrrd(volumes, tmp_path / "dwi.nrrd")):
        series = read_diffusion(path)
        np.testing.assert_allclose([i.b_value for i in series.images],
                                   [0, 50, 800, 1000, 1000, 1000], atol=1e-3)
        choice = choose_b_values(series, 1000)
        np.testing.assert_allclose(_array(choice.high_b), _array(b1000), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(_array(choice.b0), _array(b0))
        np.testing.assert_allclose(choice.b0.GetOrigin(), b0.GetOrigin(), atol=1e-4)
        assert "3 directions averaged" in choice.note


def test_a_study_folder_needs_the_series_chosen(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path / "dwi", "siemens")
    write_dwi_series([(0.0, None, b0), (800.0, None, b1000)], tmp_path / "other", "siemens",
                     description="ep2d_diff_b800_tra")
    with pytest.raises(InputError, match=r"contains 2 DICOM (image )?series"):
        read_diffusion(tmp_path)
    series = read_diffusion(tmp_path, "*diff_tra")
    assert sorted(i.b_value for i in series.images) == [0.0, 1000.0]


def test_slices_missing_at_every_b_value_are_resampled_with_a_note(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    paths = write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path, "siemens")
    slices = b0.GetSize()[2]
    for volume in range(2):
        paths[volume * slices + 7].unlink()  # slice 7 of both volumes
    choice = choose_b_values(read_diffusion(tmp_path), 1000)
    assert choice.b0.GetSize() == b0.GetSize()
    assert any("1 slice(s) missing" in m for m in choice.messages), choice.messages
    assert any(m.startswith("dwi: ") and "resampled" in m for m in choice.messages)


# ---------------------------------------------------------------------------- refusals


def _series(*b_values: float) -> DiffusionSeries:
    image = sitk.Image(4, 4, 2, sitk.sitkFloat32) + 1.0
    return DiffusionSeries(tuple(DiffusionImage(image, b) for b in b_values), "test", "test")


def test_choice_rules_and_refusals():
    assert choose_b_values(_series(0, 1000, 1400), 1000).high_b_value == 1000
    assert choose_b_values(_series(0, 1000, 1400), None).high_b_value == 1400
    absent = choose_b_values(_series(0, 1000, 1400), 1100)
    assert absent.high_b_value == 1400 and "trained at b = 1100" in absent.note
    assert choose_b_values(_series(50, 800), None).b0_value == 50
    with pytest.raises(InputError, match=r"no b0 image: its lowest b-value is 100 s/mm\^2 "
                                         r"\(b-values found: 100, 1000\)"):
        choose_b_values(_series(100, 1000), 1000)
    with pytest.raises(InputError, match=r"no high-b image: b-values found: 0, 50, 500 "
                                         r"s/mm\^2; the model needs one at b >= 800"):
        choose_b_values(_series(0, 50, 500), 1000)


def test_roles_one_form_or_the_other():
    with pytest.raises(InputError, match="dwi: and dwi_b0 are two forms of the same images"):
        check_dwi_roles(["t2w", "dwi", "dwi_b0"])
    with pytest.raises(InputError, match=r"dwi_b0: is missing: give dwi_b0 and dwi_b1000 .*or "
                                         r"dwi \(one DICOM series"):
        check_dwi_roles(["t2w"])
    check_dwi_roles(["t2w", "dwi"])
    check_dwi_roles(["t2w", "dwi_b0", "dwi_b1000"])
    images = {"t2w": 1, "dwi_b0": 2, "dwi_b1000": 3}
    assert split_dwi_input(images) == (images, None)
    with pytest.raises(InputError, match="dwi: has no b-values"):
        split_dwi_input({"t2w": 1, "dwi": sitk.Image(4, 4, 4, sitk.sitkFloat32)})


def test_unreadable_diffusion_inputs_are_named(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    sitk.WriteImage(b0, str(tmp_path / "b0.nii.gz"))
    with pytest.raises(InputError, match="is a 3D image with one value per voxel"):
        read_diffusion(tmp_path / "b0.nii.gz")
    four_d = tmp_path / "four" / "dwi.nii.gz"
    four_d.parent.mkdir()
    sitk.WriteImage(sitk.JoinSeries([b0, b1000]), str(four_d))
    with pytest.raises(InputError, match=r"has no b-values: .*dwi\.bval beside it"):
        read_diffusion(four_d)
    (four_d.parent / "dwi.bval").write_text("0 500 1000\n")
    with pytest.raises(InputError, match="holds 3 b-values for the 2 volumes"):
        read_diffusion(four_d)
    sitk.WriteImage(sitk.Compose(b0, b1000), str(tmp_path / "plain.nrrd"))
    with pytest.raises(InputError, match="'DWMRI_b-value'"):
        read_diffusion(tmp_path / "plain.nrrd")


def test_dicom_without_b_values_or_with_maps_is_refused(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    paths = write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path / "a",
                             "standard")
    for path in paths:
        header = pydicom.dcmread(path)
        del header[0x0018, 0x9087]
        header.save_as(str(path))
    with pytest.raises(InputError, match=r"40 of its 40 images have no b-value .*Siemens "
                                         r"B_value \(0019,100C\)"):
        read_diffusion(tmp_path / "a")
    paths = write_dwi_series([(0.0, None, b0)], tmp_path / "adc", "siemens")
    for path in paths:
        header = pydicom.dcmread(path)
        header.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
        header.save_as(str(path))
    with pytest.raises(InputError, match="holds computed ADC maps"):
        read_diffusion(tmp_path / "adc")
    paths = write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path / "gap",
                             "siemens")
    paths[b0.GetSize()[2] + 3].unlink()  # one b1000 slice only
    with pytest.raises(InputError, match="19 slice positions at b = 1000 but 20"):
        read_diffusion(tmp_path / "gap")


def test_reading_leaves_the_files_and_images_unchanged(phantom_dwi, tmp_path):
    b0, b1000 = phantom_dwi
    before = _array(b0).copy()
    write_dwi_series([(0.0, None, b0), (1000.0, None, b1000)], tmp_path, "ge")
    listing = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    series = read_diffusion(tmp_path)
    choose_b_values(series, 1000)
    split_dwi_input({"t2w": b0, "dwi": series}, 1000)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == listing
    np.testing.assert_array_equal(_array(b0), before)
    shutil.rmtree(tmp_path)
