"""Volume formats research tools write besides NIfTI, NRRD and DICOM: FreeSurfer MGH/MGZ (which
3D Slicer reads through ITK's MGHIO and SimpleITK's wheels cannot), MINC 2 (which ITK 5.4 reads
turned round), and formats OncoSeg does not read (named, with the way to convert them). nibabel,
which reads all of them, is the independent reader compared against; its wheel's own test
files are used where they exist."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

nib = pytest.importorskip("nibabel")

from oncoseg.cli import main  # noqa: E402
from oncoseg.errors import InputError  # noqa: E402
from oncoseg.geometry import index_to_physical_matrix  # noqa: E402
from oncoseg.io.diffusion import read_diffusion  # noqa: E402
from oncoseg.io.volumes import read_volume, volume_information  # noqa: E402

DATA = Path(nib.__file__).parent / "tests" / "data"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_affine() -> np.ndarray:
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    rotation = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    affine[:3, :3] = rotation @ np.diag([0.8, 1.1, 3.0])
    affine[:3, 3] = [10.0, -20.0, 33.0]
    return affine


def _corners(shape):
    return [tuple(int(v) for v in np.where(c, np.array(shape) - 1, 0))
            for c in np.ndindex(2, 2, 2)]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.uint16])
@pytest.mark.parametrize("ending", [".mgz", ".mgh"])
def test_a_freesurfer_volume_is_read_where_freesurfer_and_nibabel_place_it(tmp_path, dtype,
                                                                            ending):
    """An oblique MGH/MGZ of odd sizes (FreeSurfer's centre lies between voxels there): every
    voxel as nibabel reads it, every corner where nibabel's vox2ras puts it, the same image as
    the scan stored as NIfTI. SimpleITK alone cannot read the file."""
    data = (np.random.default_rng(1).random((7, 6, 5)) * 100).astype(dtype)
    path = tmp_path / f"t1{ending}"
    nib.save(nib.MGHImage(data, _oblique_affine()), path)
    reference = nib.load(path)
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))

    result = read_volume(path)
    image = result.image
    assert result.notes == []
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  np.asarray(reference.dataobj).transpose(2, 1, 0))
    for ijk in _corners(data.shape):
        ras = reference.affine @ [*ijk, 1.0]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk),
                                   (RAS_TO_LPS @ ras)[:3], atol=1e-4)
    nifti = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, reference.affine), nifti)
    same = read_volume(nifti).image
    np.testing.assert_allclose(index_to_physical_matrix(same), index_to_physical_matrix(image),
                               atol=1e-4)
    header = volume_information(path)
    assert header.GetSize() == image.GetSize() and header.GetPixelID() == image.GetPixelID()
    np.testing.assert_allclose(header.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(header.GetDirection(), image.GetDirection())
    assert main(["info", str(path)]) == 0


def test_a_freesurfer_file_of_several_frames_reads_as_a_4d_image(tmp_path):
    """Frames are the slowest axis of an MGH file (nibabel's fourth): each frame of the 4D
    image is nibabel's frame, on nibabel's grid."""
    data = np.random.default_rng(2).random((5, 4, 3, 2)).astype(np.float32)
    nib.save(nib.MGHImage(data, _oblique_affine()), tmp_path / "frames.mgz")
    reference = nib.load(tmp_path / "frames.mgz")
    image = read_volume(tmp_path / "frames.mgz").image
    assert image.GetDimension() == 4 and image.GetSize() == (5, 4, 3, 2)
    for frame in range(2):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image[:, :, :, frame]),
                                      np.asarray(reference.dataobj)[..., frame].transpose(2, 1, 0))
    np.testing.assert_allclose(_itk_matrix(image), RAS_TO_LPS @ reference.affine, atol=1e-4)


def _mgh_header(dims, code=3, good=1, spacing=(1.0, 1.0, 1.0),
                mdc=(-1, 0, 0, 0, 0, -1, 0, 1, 0), centre=(0.0, 0.0, 0.0)) -> bytes:
    raw = struct.pack(">7ih3f9f3f", 1, *dims, code, 0, good, *spacing, *mdc, *centre)
    return raw + b"\0" * (284 - len(raw))


def test_a_freesurfer_file_cut_short_or_too_large_is_refused(tmp_path):
    """An interrupted copy is refused, not read with zeros; a header declaring more voxels than
    memory holds is refused before anything is allocated."""
    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    nib.save(nib.MGHImage(data, np.eye(4)), tmp_path / "whole.mgh")
    whole = (tmp_path / "whole.mgh").read_bytes()
    (tmp_path / "cut.mgh").write_bytes(whole[:284 + 200])
    with pytest.raises(InputError, match=r"cut\.mgh: is cut short: its header declares 480 "
                       "bytes of voxels after its 284-byte header, and it holds 200"):
        read_volume(tmp_path / "cut.mgh")
    packed = gzip.compress(whole)
    (tmp_path / "cut.mgz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match=r"cut\.mgz: is cut short"):
        read_volume(tmp_path / "cut.mgz")
    (tmp_path / "huge.mgz").write_bytes(gzip.compress(_mgh_header((4000, 4000, 4000, 1))))
    with pytest.raises(InputError, match=r"huge\.mgz: needs about .* of memory"):
        read_volume(tmp_path / "huge.mgz")
    assert main(["info", str(tmp_path / "cut.mgh")]) == 2


def test_a_freesurfer_file_without_placement_is_read_as_freesurfer_reads_it(tmp_path):
    """goodRASFlag unset: FreeSurfer reads a 1 mm coronal grid (L, I, A) centred on the origin;
    nibabel 5 reads L, S, P. Read as FreeSurfer does, with a note saying laterality is not
    known from the file."""
    data = np.ones((4, 6, 8), np.float32)
    path = tmp_path / "old.mgh"
    path.write_bytes(_mgh_header((4, 6, 8, 1), good=0, spacing=(0, 0, 0), mdc=(0,) * 9)
                     + data.astype(">f4").tobytes(order="F"))
    assert "".join(nib.aff2axcodes(nib.load(path).affine)) == "LSP"
    result = read_volume(path)
    lps = np.asarray(result.image.GetDirection()).reshape(3, 3)
    ras = RAS_TO_LPS[:3, :3] @ lps
    assert "".join(nib.aff2axcodes(np.block([[ras, np.zeros((3, 1))], [0, 0, 0, 1]]))) == "LIA"
    np.testing.assert_allclose(result.image.TransformContinuousIndexToPhysicalPoint((2, 3, 4)),
                               0, atol=1e-9)
    (note,) = result.notes
    assert "goodRASFlag is not set" in note and "L, I, A" in note and "L, S, P" in note


def test_nibabels_sheared_mgz_is_refused_in_words():
    """nibabel's own test.mgz has direction cosines that are neither unit nor orthogonal:
    nibabel reads a sheared affine; OncoSeg refuses it as it refuses a sheared NIfTI."""
    with pytest.raises(InputError, match=r"test\.mgz: its voxel axes are not at right angles"):
        read_volume(DATA / "test.mgz")


@pytest.mark.parametrize("name", ["small.mnc", "minc2_1_scale.mnc"])
def test_a_minc_file_is_placed_as_minc_and_nibabel_place_it(name):
    """MINC's world coordinates are RAS. ITK 5.4 (SimpleITK here, 3D Slicer 5.10 and 5.12)
    takes them as LPS, so the scan lies turned by 180 degrees about the head-feet axis; read
    here where nibabel places it, with a note."""
    path = DATA / name
    reference = nib.load(path)
    plain = sitk.ReadImage(str(path))
    result = read_volume(path)
    image = result.image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(plain))
    for ijk in _corners(image.GetSize()):
        ras = reference.affine @ [*reversed(ijk), 1.0]  # nibabel's axes: MINC's file order
        expected = (RAS_TO_LPS @ ras)[:3]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), expected, atol=1e-4)
        turned = np.array(plain.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(turned, expected * [-1, -1, 1], atol=1e-4)  # ITK alone
    header = volume_information(path)
    np.testing.assert_allclose(header.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(header.GetDirection(), image.GetDirection())
    (note,) = result.notes
    assert "MINC file" in note and "turned by 180 degrees" in note


def test_a_scan_stored_as_minc_keeps_its_left_on_the_left(tmp_path):
    """A scan with a marker on the patient's left written as a MINC file in MINC's own
    convention (checked with nibabel): read back on its grid, the marker on the left. Read as
    ITK 5.4 reads it, the marker lies on the right."""
    array = np.zeros((10, 12, 14), np.int16)  # z, y, x
    array[5, 6, 11] = 1000  # x index 11 of 14: patient's left where x runs to the left (LPS)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.2, 3.0))
    image.SetOrigin((-9.0, -7.0, 20.0))
    path = tmp_path / "scan.mnc"
    written = sitk.Image(image)  # ITK writes its coordinates as MINC's: give it MINC's (RAS)
    written.SetOrigin((9.0, 7.0, 20.0))
    written.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(written, str(path))
    marker = image.TransformIndexToPhysicalPoint((11, 6, 5))
    assert marker[0] > 0  # LPS: x > 0 is the patient's left
    minc = nib.load(path)
    index = np.argwhere(np.asarray(minc.dataobj) > 500)[0]
    ras = minc.affine @ [*index, 1.0]
    np.testing.assert_allclose((RAS_TO_LPS @ ras)[:3], marker, atol=1e-4)  # nibabel agrees

    back = read_volume(path).image
    found = back.TransformIndexToPhysicalPoint(
        tuple(int(v) for v in np.argwhere(sitk.GetArrayFromImage(back) > 500)[0][::-1]))
    np.testing.assert_allclose(found, marker, atol=1e-4)
    plain = sitk.ReadImage(str(path))
    on_the_right = plain.TransformIndexToPhysicalPoint(
        tuple(int(v) for v in np.argwhere(sitk.GetArrayFromImage(plain) > 500)[0][::-1]))
    assert on_the_right[0] < 0


@pytest.mark.parametrize("name, what", [
    ("phantom_EPI_asc_CLEAR_2_1.PAR", "a Philips PAR/REC header"),
    ("phantom_EPI_asc_CLEAR_2_1.REC", "a Philips PAR/REC voxel file"),
    ("example4d+orig.HEAD", "an AFNI HEAD/BRIK dataset"),
    ("scaled+tlrc.BRIK", "an AFNI HEAD/BRIK dataset"),
    ("example4d+orig.BRIK.gz", "an AFNI HEAD/BRIK dataset"),
    ("tiny.mnc", "a MINC 1 \\(netCDF\\) file"),
    ("tinypet.v", "an ECAT 7 PET file"),
])
def test_formats_oncoseg_does_not_read_are_named_with_the_way_to_convert_them(name, what,
                                                                              capsys):
    """Each came back as "no reader recognises its pixel data: truncated, or an unknown
    encoding" (MINC 1 with libminc's own errors printed twice)."""
    with pytest.raises(InputError, match=rf"{name.replace('+', '.')}: is {what}, which "
                       "OncoSeg does not read .*: .*(dcm2niix|nibabel|AFNI|mincconvert)"):
        read_volume(DATA / name)
    with pytest.raises(InputError, match=f"is {what}"):
        read_diffusion(DATA / name)
    capsys.readouterr()
    assert main(["info", str(DATA / name)]) == 2
    assert "MINC" not in capsys.readouterr().err.split("error:")[0]


def test_an_archive_of_a_pacs_export_is_named_and_its_unpacked_file_reads(tmp_path):
    """A ZIP of a DICOM export, a gzipped DICOM file: named with the way out, and the same
    DICOM file unpacked reads. A DICOM file whose preamble happens to hold a ZIP signature is
    still DICOM."""
    import zipfile

    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("CT_small.dcm"))
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as archive:
        archive.write(source, "DICOM/IM0001")
    (tmp_path / "CT_small.dcm.gz").write_bytes(gzip.compress(source.read_bytes()))
    with pytest.raises(InputError, match=r"export\.zip: is a ZIP archive, .*: unpack it"):
        read_volume(tmp_path / "export.zip")
    with pytest.raises(InputError, match=r"CT_small\.dcm\.gz: is a gzip-compressed file"):
        read_volume(tmp_path / "CT_small.dcm.gz")
    data = bytearray(source.read_bytes())
    assert data[128:132] == b"DICM"
    data[:4] = b"PK\x03\x04"
    (tmp_path / "odd_preamble.dcm").write_bytes(bytes(data))
    assert read_volume(tmp_path / "odd_preamble.dcm").image.GetSize()[:2] == (128, 128)


def test_a_nifti2_file_is_named_and_nibabels_conversion_reads(tmp_path):
    """ITK 5.4 reads NIfTI-1 only: SimpleITK (and 3D Slicer 5.10 and 5.12) cannot read
    nibabel's NIfTI-2 files. Named, and the conversion the message gives reads as nibabel
    places it."""
    for name in ("example_nifti2.nii.gz", "nifti2.hdr"):
        with pytest.raises(InputError, match=r"is a NIfTI-2 file, which ITK 5\.4"):
            read_volume(DATA / name)
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(DATA / "example_nifti2.nii.gz"))
    source = nib.load(DATA / "example_nifti2.nii.gz")
    nib.save(nib.Nifti1Image.from_image(source), tmp_path / "converted.nii.gz")
    image = read_volume(tmp_path / "converted.nii.gz").image
    assert image.GetSize() == source.shape
    np.testing.assert_allclose(RAS_TO_LPS @ source.affine,
                               _itk_matrix(image), atol=1e-4)


def _itk_matrix(image):
    """A 4D image's first three axes' index-to-LPS matrix."""
    dimension = image.GetDimension()
    matrix = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)[:3, :3]
    matrix[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])
    matrix[:3, 3] = image.GetOrigin()[:3]
    return matrix


@pytest.mark.parametrize("name", ["analyze.hdr", "nifti1.hdr"])
def test_a_pair_whose_voxel_file_is_missing_says_so(name):
    """nibabel ships these headers without their .img: ITK's words were "nifti_image_load
    failed"."""
    with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}: its voxel file "
                       rf"{name[:-4]}\.img is missing"):
        read_volume(DATA / name)
