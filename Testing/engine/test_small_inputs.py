"""Issue 17, point 6: NaN/Inf in every format, single slices, one voxel, impossible model
settings, SIGTERM while writing."""

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from imaging import make_image

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_directory
from oncoseg.io.nifti import nonfinite_voxels
from oncoseg.io.volumes import read_image
from oncoseg.modelfile import load_tensors, read_header, save_model
from oncoseg.validation import check_volume

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
OAR_CT_DEMO = Path(__file__).resolve().parents[2] / "oncoseg/data/models/oar-ct-demo.safetensors"


def oncoseg(*args, env=None):
    return subprocess.run([sys.executable, "-m", "oncoseg", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


def nan_array():
    array = sitk.GetArrayFromImage(make_image(dtype=np.float32))
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    array[2, 2, 2] = -np.inf
    return array


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".hdr", ".img.gz", ".nrrd", ".mha"])
def test_nan_and_inf_are_read_and_named_in_every_format(tmp_path, ending):
    array = nan_array()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.3, 3.5))
    path = tmp_path / f"b0{ending}"
    sitk.WriteImage(image, str(path))
    read = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(read), array)  # NaN == NaN here
    assert read.GetSpacing() == pytest.approx((0.8, 1.3, 3.5))
    with pytest.raises(InputError, match=r"b0.*: contains 3 NaN and 2 infinite voxels"):
        check_volume(read, f"b0{ending}")


def test_simpleitk_alone_hides_nifti_nan(tmp_path):
    """Why the NIfTI scan exists: ITK's NIfTI reader turns NaN into 0 (an image of NaN and one
    value read as 'constant' before)."""
    array = np.full((5, 6, 7), np.nan, np.float32)
    array[0, 0, 0] = 3.0
    path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert not np.isnan(plain).any() and plain.max() == 3.0
    indices, values = nonfinite_voxels(path)
    assert indices.size == 209 and np.isnan(values).all()
    with pytest.raises(InputError, match="contains 209 NaN and 0 infinite voxels"):
        check_volume(read_image(path), "mask")


def test_nifti_scaling_and_integer_files(tmp_path):
    """Integer NIfTI files hold no NaN; a float file's slope and intercept carry over to its
    infinities."""
    sitk.WriteImage(make_image(), str(tmp_path / "ct.nii.gz"))
    assert nonfinite_voxels(tmp_path / "ct.nii.gz")[0].size == 0
    sitk.WriteImage(sitk.GetImageFromArray(nan_array()), str(tmp_path / "f.nii"))
    raw = bytearray((tmp_path / "f.nii").read_bytes())
    raw[112:120] = np.array([-2.0, 5.0], "<f4").tobytes()  # scl_slope, scl_inter
    (tmp_path / "scaled.nii").write_bytes(bytes(raw))
    read = sitk.GetArrayFromImage(read_image(tmp_path / "scaled.nii"))
    expected = nan_array() * -2.0 + 5.0
    np.testing.assert_allclose(read, expected, rtol=1e-6)
    assert np.isneginf(read[1, 1, 1]) and np.isposinf(read[2, 2, 2])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".hdr", ".img.gz"])
def test_a_nifti_file_cut_short_is_refused_not_read_as_zeros(tmp_path, ending, dtype):
    """An interrupted copy or download: ITK (so SimpleITK and 3D Slicer) reads what there is
    and leaves the rest zero without a word; nibabel refuses the file, and so does OncoSeg.
    A NIfTI pair (.hdr and .img, gzipped or not) is its voxel file cut short."""
    array = (np.random.default_rng(0).normal(size=(12, 30, 40)) * 100).astype(dtype)
    whole, cut = tmp_path / f"ct{ending}", tmp_path / f"cut{ending}"
    for path in (whole, cut):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    voxels = tmp_path / ("cut" + ending.replace("hdr", "img"))
    data = voxels.read_bytes()
    voxels.write_bytes(data[: len(data) * 2 // 3])
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(cut)))
    assert plain.shape == array.shape and not np.array_equal(plain, array)
    with pytest.raises(InputError, match=rf"cut\{ending}: is cut short"):
        read_image(cut)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(whole)), array)
    assert main(["info", str(cut)]) == 2


def test_a_metaimage_cut_short_is_named_so(tmp_path):
    """MetaImage refuses the file but ITK's message blames a missing file (a stale errno)."""
    whole = tmp_path / "ct.mha"
    sitk.WriteImage(make_image(), str(whole))
    data = whole.read_bytes()
    (tmp_path / "cut.mha").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="voxel data could not be read in full: the file is "
                       "cut short"):
        read_image(tmp_path / "cut.mha")


def test_a_nrrd_whose_voxels_cannot_be_read_says_why(tmp_path):
    """A detached header (.nhdr) without its data file, and bzip2-encoded voxels (which
    pynrrd writes and ITK's NrrdIO, so 3D Slicer, cannot read): NrrdIO's own words were passed
    on ("nrrdIoStateDataFileIterNext: couldn't open ...")."""
    nrrd = pytest.importorskip("nrrd")
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    header = {"space": "left-posterior-superior", "space origin": np.zeros(3),
              "space directions": np.eye(3)}
    nrrd.write(str(tmp_path / "scan.nhdr"), array, {**header, "encoding": "raw"},
               detached_header=True)
    data_file = next(tmp_path.glob("scan.raw*"))
    data_file.unlink()
    with pytest.raises(InputError, match=rf"scan\.nhdr: its voxel data file {data_file.name} "
                       r"\(named by its 'data file' field\) is missing"):
        read_image(tmp_path / "scan.nhdr")
    nrrd.write(str(tmp_path / "packed.nrrd"), array, {**header, "encoding": "bzip2"})
    with pytest.raises(InputError, match=r"packed\.nrrd: holds bzip2-compressed voxels"):
        read_image(tmp_path / "packed.nrrd")


def test_info_reports_nan_counts_and_still_describes(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(nan_array()), str(tmp_path / "b0.nii.gz"))
    result = oncoseg("info", tmp_path / "b0.nii.gz", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["intensity"]["nan_voxels"] == 3 and info["intensity"]["infinite_voxels"] == 2
    assert np.isfinite(info["intensity"]["max"])
    assert info["warnings"] == ["contains 3 NaN and 2 infinite voxels (a method needs a value "
                                "in every voxel)"]
    text = oncoseg("info", tmp_path / "b0.nii.gz").stdout
    assert "non-finite voxels: 3 NaN, 2 infinite" in text


def test_single_slice_dicom_is_described_but_not_predicted(tmp_path):
    """pydicom's real CT_small.dcm: one 128 x 128 slice."""
    result = oncoseg("info", CT_SMALL)
    assert result.returncode == 0, result.stderr
    assert "size: 128 x 128 x 1 voxels" in result.stdout
    assert "a single slice; a 3D series is needed" in result.stdout
    result = oncoseg("predict", "oar-ct", "--input", f"ct={CT_SMALL}", "--output",
                     tmp_path / "out", "--device", "cpu", "--progress", "none")
    assert result.returncode == 2, result.stderr
    assert "ct: is a single slice; a 3D series is needed" in result.stderr
    assert not (tmp_path / "out").exists()


def test_one_voxel_image_is_described_as_one_voxel(tmp_path):
    sitk.WriteImage(sitk.Image(1, 1, 1, sitk.sitkInt16), str(tmp_path / "dot.nrrd"))
    result = oncoseg("info", tmp_path / "dot.nrrd")
    assert result.returncode == 0, result.stderr
    assert "size: 1 x 1 x 1 voxels" in result.stdout and "2D" not in result.stdout
    assert "has 1 voxel; a 3D volume is needed" in result.stdout


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_complex_voxels_are_named_not_a_crash(tmp_path, ending):
    """MR raw or phase data saved with complex voxels (NIfTI datatype 32, ITK's complex
    pixels): `info` and `predict` ended in "unexpected error: RuntimeError" (exit 1) while
    the declared size was checked; now named, exit 2. Written by nibabel and SimpleITK. (A
    MetaImage stores them as two channels, read back as such: "2 components per voxel".)"""
    import nibabel as nib

    path = tmp_path / f"phase{ending}"
    values = sitk.GetArrayFromImage(make_image(dtype=np.float32))
    if ending == ".nii.gz":
        nib.save(nib.Nifti1Image(values.T.astype(np.complex64), np.eye(4)), path)
    else:
        sitk.WriteImage(sitk.RealAndImaginaryToComplex(sitk.GetImageFromArray(values),
                                                       sitk.GetImageFromArray(values)),
                        str(path))
    for command in (["info", path],
                    ["predict", "oar-ct", "--input", f"ct={path}", "--output", tmp_path / "out"]):
        result = oncoseg(*command)
        assert result.returncode == 2, result.stderr
        assert "holds complex voxels (complex of 32-bit float: real and imaginary parts" in \
            result.stderr


def _bad_model(tmp_path, part, key, value):
    metadata, tensors = load_tensors(OAR_CT_DEMO)
    metadata = copy.deepcopy(metadata)
    getattr(metadata, part)[key] = value
    return save_model(tmp_path / f"bad-{key}.safetensors", tensors, metadata)


@pytest.mark.parametrize(("part", "key", "value", "message"), [
    ("preprocessing", "patch_size", [200001, 64, 64], "whole number of voxels from 1 to 4096"),
    ("preprocessing", "spacing_mm", [-3.0, 3.0, 3.0], "must be greater than 0"),
    ("preprocessing", "spacing_mm", [0, 3, 3], "must be greater than 0"),
    ("architecture_args", "in_channels", 0, "whole number of at least 1"),
    ("architecture_args", "filters", [0, 16, 32, 64], "whole number of at least 1"),
    ("preprocessing", "hu_low", 900.0, "must be below hu_high"),
])
def test_impossible_model_settings_name_file_and_field(tmp_path, part, key, value, message):
    path = _bad_model(tmp_path, part, key, value)
    with pytest.raises(InputError) as error:
        read_header(path)
    assert str(error.value).startswith(f"{path}: field '{part}.{key}' is ")
    assert message in str(error.value)


def test_predict_with_an_impossible_model_is_exit_2(tmp_path):
    """Before: exit 1 after trying to allocate 52 GB for a 200001-voxel window."""
    path = _bad_model(tmp_path, "preprocessing", "patch_size", [200001, 64, 64])
    sitk.WriteImage(make_image(shape_zyx=(12, 20, 24)), str(tmp_path / "ct.nrrd"))
    result = oncoseg("predict", "oar-ct", "--input", f"ct={tmp_path / 'ct.nrrd'}", "--model",
                     path, "--output", tmp_path / "out", "--device", "cpu", "--progress", "none")
    assert result.returncode == 2, result.stderr
    assert f"{path}: field 'preprocessing.patch_size' is [200001, 64, 64]" in result.stderr
    assert not (tmp_path / "out").exists()


# A child process writing an output folder that stops, once its files are on disk, until the
# test has sent SIGTERM: deterministic, no sleep race.
ATOMIC_CHILD = """
import sys
from oncoseg.io.atomic import atomic_directory
with atomic_directory(sys.argv[1]) as folder:
    (folder / "labels.nii.gz").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    sys.stdin.readline()
"""
PREDICT_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import tinynet
tinynet.register()
import oncoseg.overview as overview
real = overview.save_overview
def save_and_wait(prediction, path):
    real(prediction, path)
    print(path.parent, flush=True)
    sys.stdin.readline()
overview.save_overview = save_and_wait
from oncoseg.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _terminate_while_writing(command, tmp_path):
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        part = Path(child.stdout.readline().strip())
        assert part.name.endswith(".part") and part.is_dir(), child.stderr.read()
        assert any(part.iterdir())
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated (SIGTERM)" in stderr
    return part


def test_sigterm_while_writing_leaves_no_part_folder(tmp_path):
    part = _terminate_while_writing([sys.executable, "-c", ATOMIC_CHILD, tmp_path / "out"],
                                    tmp_path)
    assert not part.exists() and not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == []


def test_sigterm_during_predict_output_leaves_nothing(tmp_path):
    sitk.WriteImage(make_image(shape_zyx=(8, 20, 24), dtype=np.float32), str(tmp_path / "in.nrrd"))
    command = [sys.executable, "-c", PREDICT_CHILD, HELPERS, "predict", "test-threshold",
               "--input", f"image={tmp_path / 'in.nrrd'}", "--output", tmp_path / "out",
               "--device", "cpu", "--progress", "none"]
    part = _terminate_while_writing(list(map(str, command)), tmp_path)
    assert part.parent == tmp_path
    assert sorted(os.listdir(tmp_path)) == ["in.nrrd"]


def test_signal_handler_is_restored_after_writing(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with atomic_directory(tmp_path / "a") as folder:
        assert signal.getsignal(signal.SIGTERM) is not before
        with atomic_directory(tmp_path / "b"):  # nested writers share the handler
            pass
        assert signal.getsignal(signal.SIGTERM) is not before
        (folder / "f").write_text("x")
    assert signal.getsignal(signal.SIGTERM) is before
    assert (tmp_path / "a" / "f").read_text() == "x"


def _ct_phantom(tmp_path) -> sitk.Image:
    from oncoseg.verbs import phantom

    phantom("oar-ct", tmp_path / "phantom", cases=1, seed=5107)
    return read_image(tmp_path / "phantom" / "oarct_000")


def test_a_volume_whose_header_names_the_wrong_byte_order_is_described_and_refused(
        tmp_path, capsys):
    """A raw file behind a hand-written header with the wrong byte order (MetaImage
    BinaryDataByteOrderMSB, NRRD endian) reads as noise: the OAR-CT demo segmented such a CT
    with exit 0 (femoral heads Dice 0.000 / 0.036 against the same CT read right, a note
    about its air level only). It is now described by ``info`` with the reason a method
    refuses it, and refused."""
    ct = _ct_phantom(tmp_path)
    sitk.WriteImage(ct, str(tmp_path / "right.mha"), useCompression=False)
    data = (tmp_path / "right.mha").read_bytes()
    (tmp_path / "swapped.mha").write_bytes(data.replace(b"BinaryDataByteOrderMSB = False",
                                                        b"BinaryDataByteOrderMSB = True "))
    swapped = read_image(tmp_path / "swapped.mha")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(swapped),
                                  sitk.GetArrayFromImage(ct).byteswap())
    with pytest.raises(InputError, match="ct: looks byte-swapped: read in the other byte order"):
        check_volume(swapped, "ct")
    check_volume(read_image(tmp_path / "right.mha"), "ct")
    assert main(["info", str(tmp_path / "swapped.mha")]) == 0
    assert "a method would refuse it: it looks byte-swapped" in capsys.readouterr().out
    assert main(["predict", "oar-ct", "--input", f"ct={tmp_path / 'swapped.mha'}", "--output",
                 str(tmp_path / "out"), "--progress", "none"]) == 2


def test_no_real_scan_looks_byte_swapped():
    """The test's other side: the real files in pydicom's and nibabel's wheels, and 8-bit data
    kept in the top byte (the same image either way round, but for a factor of 256), are
    not taken for byte-swapped."""
    from oncoseg.validation import BYTE_SWAP_RATIO, byte_swap_ratio

    nib = pytest.importorskip("nibabel")
    files = [CT_SMALL, CT_SMALL.parent / "MR_small.dcm",
             Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii",
             Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"]
    for path in files:
        image = read_image(path)
        if image.GetDimension() == 4:
            image = image[:, :, :, 0]
        ratio = byte_swap_ratio(image)
        assert ratio is not None and ratio > 10, path
        swapped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image).byteswap())
        assert byte_swap_ratio(swapped) < BYTE_SWAP_RATIO, path
    eight_bit = np.random.default_rng(0).integers(0, 256, (4, 20, 20)).astype(np.uint16) * 256
    assert byte_swap_ratio(sitk.GetImageFromArray(eight_bit)) is None


@pytest.mark.parametrize("size", [0, -4])
def test_a_nifti_header_declaring_no_slices_is_refused(tmp_path, size):
    """dim[3] of 0 or less: ITK (so 3D Slicer) read the first of the file's 4 slices as the
    whole volume, without a word."""
    import struct

    path = tmp_path / "flat.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16)
                                           .reshape(4, 5, 6)), str(path))
    data = bytearray(path.read_bytes())
    struct.pack_into("<h", data, 46, size)  # dim[3]
    path.write_bytes(bytes(data))
    assert sitk.ReadImage(str(path)).GetSize() == (6, 5, 1)
    with pytest.raises(InputError, match=rf"flat\.nii: its header declares {size} voxels along "
                       r"axis 3 \(dim\[3\]\): a damaged header"):
        read_image(path)
