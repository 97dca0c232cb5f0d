"""Volume files that do not say where the patient lies, or say it twice: NIfTI files whose
two placements (qform, sform) disagree or that hold none, and NRRD headers naming no space.
They are read as ITK and 3D Slicer read them, with a note saying what other tools show. The
NIfTI files start from real ones shipped in nibabel's wheel (its ``anatomical.nii``: qform and
sform equal, both ALIGNED_ANAT; its ``standard.nii.gz``: sform only), and nibabel, which takes
the sform whenever its code is set, is the independent reader compared against."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nifti_placements import mirrored_in_x

nib = pytest.importorskip("nibabel")

from oncoseg.cli import main, read_inputs  # noqa: E402
from oncoseg.errors import InputError  # noqa: E402
from oncoseg.geometry import axis_code, index_to_physical_matrix  # noqa: E402
from oncoseg.io.volumes import read_volume  # noqa: E402

DATA = Path(nib.__file__).parent / "tests" / "data"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _itk_affine_ras(image) -> np.ndarray:
    """The placement ITK read, as a nibabel (RAS) affine."""
    return RAS_TO_LPS @ index_to_physical_matrix(image)


def _rewrite(source: Path, target: Path, qform=None, qcode=None, sform=None, scode=None):
    image = nib.load(source)
    data = np.asanyarray(image.dataobj)
    out = nib.Nifti1Image(data, None, header=image.header.copy())
    q, q_code = image.header.get_qform(coded=True)
    s, s_code = image.header.get_sform(coded=True)
    out.set_qform(q if qform is None else qform, code=int(q_code if qcode is None else qcode))
    out.set_sform(s if sform is None else sform, code=int(s_code if scode is None else scode))
    nib.save(out, target)
    return target


def test_a_real_file_whose_placements_agree_reads_without_a_note(tmp_path):
    for name in ("anatomical.nii", "standard.nii.gz"):  # qform = sform; sform only
        volume = read_volume(shutil.copy(DATA / name, tmp_path / name))
        assert volume.notes == []
        # what ITK read is what nibabel reads (the sform, or both)
        np.testing.assert_allclose(_itk_affine_ras(volume.image), nib.load(DATA / name).affine,
                                   atol=1e-4)


def test_a_sform_mirroring_the_qform_is_read_with_the_qform_and_named(tmp_path, capsys):
    source = nib.load(DATA / "anatomical.nii")
    qform = source.header.get_qform()
    mirrored = mirrored_in_x(qform, source.shape[0])
    path = _rewrite(DATA / "anatomical.nii", tmp_path / "mirrored.nii.gz", sform=mirrored,
                    scode=2)
    volume = read_volume(path)
    # ITK took the qform (its sform code is ALIGNED_ANAT); nibabel takes the sform
    np.testing.assert_allclose(_itk_affine_ras(volume.image), qform, atol=1e-4)
    np.testing.assert_allclose(nib.load(path).affine, mirrored, atol=1e-4)
    [note] = volume.notes
    assert "mirrored.nii.gz" in note and "left and right swapped" in note
    # orientation letters as nibabel names the axes
    assert "ITK and 3D Slicer (and so OncoSeg) read it with orientation LAS from its qform " \
        "(ALIGNED_ANAT)" in note
    assert "use its sform (ALIGNED_ANAT, orientation RAS): the mirror image of that" in note
    # the prediction's terminal and result.json get it with the input's role
    _, notes, _ = read_inputs({"t2w": str(path)}, {})
    assert notes == [f"input t2w: {note}"]
    # and `oncoseg info` says it
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == [note]


def test_a_sform_moved_but_not_mirrored_says_how_far(tmp_path):
    source = nib.load(DATA / "anatomical.nii")
    moved = source.header.get_qform().copy()
    moved[:3, 3] += [0.0, 40.0, 0.0]
    [note] = read_volume(_rewrite(DATA / "anatomical.nii", tmp_path / "moved.nii",
                                  sform=moved, scode=4)).notes
    assert "(MNI_152, orientation LAS): up to 40 mm from there" in note and "swap" not in note


def test_a_scanner_sform_is_what_itk_and_nibabel_both_read(tmp_path):
    source = nib.load(DATA / "anatomical.nii")
    mirrored = mirrored_in_x(source.header.get_qform(), source.shape[0])
    path = _rewrite(DATA / "anatomical.nii", tmp_path / "scanner.nii", sform=mirrored,
                    scode=1)
    volume = read_volume(path)
    np.testing.assert_allclose(_itk_affine_ras(volume.image), mirrored, atol=1e-4)
    np.testing.assert_allclose(nib.load(path).affine, mirrored, atol=1e-4)
    assert volume.notes == []  # the readers agree, whatever the qform says


def test_a_file_with_no_placement_says_laterality_is_unknown(tmp_path):
    path = _rewrite(DATA / "anatomical.nii", tmp_path / "analyze.nii", qcode=0, scode=0)
    [note] = read_volume(path).notes
    assert "holds no orientation" in note and "laterality" in note
    assert "nibabel reads it as L, A, S" in note


@pytest.mark.parametrize("name", ["scan.hdr", "scan.img"])
def test_an_analyze_pair_says_laterality_is_unknown_and_how_nibabel_mirrors_it(tmp_path, name):
    """An ANALYZE 7.5 pair (.hdr / .img) has no placement: ITK (so 3D Slicer) takes L, P, S axes
    from origin 0, nibabel L, A, S centred: mirror images, silently in both. It was read
    without a word (the NIfTI checks looked at .nii files only)."""
    data = np.asanyarray(nib.load(DATA / "anatomical.nii").dataobj)
    nib.save(nib.AnalyzeImage(data, np.diag([-2.0, 2.0, 2.2, 1.0])), tmp_path / "scan.hdr")
    volume = read_volume(tmp_path / name)
    [note] = volume.notes
    assert note.startswith(f"{name} holds no orientation (an ANALYZE 7.5 header")
    itk, nibabel = _itk_affine_ras(volume.image), nib.load(tmp_path / "scan.hdr").affine
    assert nib.aff2axcodes(itk) == ("L", "P", "S") and nib.aff2axcodes(nibabel) == ("L", "A", "S")
    assert np.linalg.det(itk[:3, :3]) * np.linalg.det(nibabel[:3, :3]) < 0  # mirror images
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image).transpose(2, 1, 0),
                                  data)


def test_a_sheared_placement_is_refused_in_words(tmp_path, capsys):
    source = nib.load(DATA / "anatomical.nii")
    sheared = source.header.get_qform().copy()
    sheared[0, 1] = 0.4 * sheared[1, 1]
    path = _rewrite(DATA / "anatomical.nii", tmp_path / "sheared.nii", sform=sheared, scode=2,
                    qcode=0)
    with pytest.raises(InputError, match=r"sheared\.nii.*not at right angles"):
        read_volume(path)
    assert main(["info", str(path)]) == 2
    assert "resample it onto one first" in capsys.readouterr().err


@pytest.mark.parametrize("ending", [".nrrd", ".mha"])
def test_a_sheared_nrrd_or_metaimage_is_refused_like_a_sheared_nifti(tmp_path, ending):
    """ITK reads these with the shear kept in the direction matrix (a 73-degree angle between
    the voxel axes here), which OncoSeg read without a word until 2026-12-06."""
    import nrrd

    array = np.zeros((8, 10, 12), np.int16)
    path = tmp_path / f"sheared{ending}"
    if ending == ".nrrd":
        nrrd.write(str(path), array, {"space": "left-posterior-superior", "space origin":
                                      np.zeros(3), "space directions": np.array(
                                          [[1.0, 0, 0], [0.3, 1.0, 0], [0, 0, 3.0]])})
    else:
        path.write_text("ObjectType = Image\nNDims = 3\nTransformMatrix = 1 0 0 0.287 0.958 0 "
                        "0 0 1\nOffset = 0 0 0\nElementSpacing = 1 1 3\nDimSize = 12 10 8\n"
                        "ElementType = MET_SHORT\nElementDataFile = sheared.raw\n")
        (tmp_path / "sheared.raw").write_bytes(array.tobytes())
    assert abs(np.dot(*np.asarray(sitk.ReadImage(str(path)).GetDirection()).reshape(3, 3).T[:2])
               ) > 0.2  # ITK keeps it
    with pytest.raises(InputError, match=rf"sheared\{ending}: its voxel axes are not at right"):
        read_volume(path)


def test_a_diffusion_series_in_one_4d_file_carries_the_note(tmp_path):
    from oncoseg.io.diffusion import read_nifti_diffusion

    source = nib.load(DATA / "anatomical.nii")
    data = np.stack([np.asanyarray(source.dataobj)] * 2, axis=-1).astype(np.float32)
    qform = source.header.get_qform()
    image = nib.Nifti1Image(data, None)
    image.set_qform(qform, code=1)
    image.set_sform(mirrored_in_x(qform, source.shape[0]), code=2)
    nib.save(image, tmp_path / "dwi.nii.gz")
    (tmp_path / "dwi.bval").write_text("0 1000\n")
    series = read_nifti_diffusion(tmp_path / "dwi.nii.gz")
    [note] = series.notes
    assert "dwi.nii.gz" in note and "left and right swapped" in note


def test_a_nrrd_header_naming_no_space_says_laterality_is_unknown(tmp_path):
    """NRRD's ``space`` field names the patient axes; without it ITK (and Slicer's scalar
    volume reader, which reads through ITK) take the axes as L, P, S from origin 0."""
    import SimpleITK as sitk

    data = np.arange(4 * 5 * 6, dtype="<i2")
    (tmp_path / "plain.raw").write_bytes(data.tobytes())
    (tmp_path / "plain.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nspacings: 2 2 3\n"
        "endian: little\nencoding: raw\ndata file: plain.raw\n")
    volume = read_volume(tmp_path / "plain.nhdr")
    assert volume.image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    [note] = volume.notes
    assert note.startswith("plain.nhdr holds no orientation (its header names no 'space')")
    sitk.WriteImage(volume.image, str(tmp_path / "placed.nrrd"))  # ITK writes a space
    assert read_volume(tmp_path / "placed.nrrd").notes == []


def _negative_width(source: Path, target: Path, axis: int, qcode: int, scode: int) -> Path:
    """nibabel's file with the given codes and ``pixdim[axis + 1]`` negated in the header
    (nibabel itself would refuse to write it)."""
    import struct

    _rewrite(source, target, qcode=qcode, scode=scode)
    data = bytearray(target.read_bytes())
    order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"  # nibabel's is big-endian
    offset = 76 + 4 * (axis + 1)
    struct.pack_into(order + "f", data, offset, -struct.unpack_from(order + "f", data, offset)[0])
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(("axis", "swapped"), [(0, "left and right"), (1, "front and back"),
                                               (2, "head and feet")])
def test_a_negative_voxel_width_is_read_as_itk_reads_it_and_named(tmp_path, axis, swapped):
    """The standard's voxel widths are positive. ITK (so 3D Slicer) takes a negative pixdim as
    a flip of its axis, in the qform and in a SCANNER_ANAT sform (divided by it); nibabel takes
    its absolute value: mirror images, where OncoSeg said nothing."""
    source = DATA / "anatomical.nii"
    qform_only = _negative_width(source, tmp_path / "q.nii", axis, qcode=1, scode=0)
    itk = read_volume(qform_only)
    reference = nib.load(qform_only)
    flipped = reference.affine.copy()
    flipped[:3, axis] *= -1
    read = _itk_affine_ras(itk.image)
    np.testing.assert_allclose(read[:3, :3], flipped[:3, :3], atol=1e-4)  # ITK: the flip
    [note] = itk.notes
    assert f"its pixdim[{axis + 1}] (voxel width) is negative" in note
    assert f"the mirror image of that ({swapped} swapped)" in note
    scanner = _negative_width(source, tmp_path / "s.nii", axis, qcode=0, scode=1)
    [note] = read_volume(scanner).notes
    assert f"its negative pixdim[{axis + 1}] (voxel width) taken as a flip" in note
    unplaced = _negative_width(source, tmp_path / "u.nii", axis, qcode=0, scode=0)
    image = read_volume(unplaced)
    axes = ", ".join(axis_code(np.asarray(image.image.GetDirection()).reshape(3, 3)))
    assert f"with its axes taken as {axes} (nibabel" in image.notes[0]
    assert axes != "L, P, S"


@pytest.mark.parametrize("width", [0.0, float("nan")])
def test_a_voxel_width_of_zero_is_refused_by_methods(tmp_path, width):
    """nifti1_io replaces a pixdim of 0 or NaN by 1 mm (ITK's metadata then shows 1, so only
    the header says it): a scan read at a made-up size. ``info`` describes it with the reason
    a method refuses it."""
    import struct

    from oncoseg.validation import volume_problems

    path = _rewrite(DATA / "anatomical.nii", tmp_path / "flat.nii", qcode=1, scode=0)
    data = bytearray(path.read_bytes())
    order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"
    struct.pack_into(order + "f", data, 84, width)  # pixdim[2]
    path.write_bytes(bytes(data))
    image = read_volume(path).image
    assert image.GetSpacing()[1] == 1.0  # ITK's 1 mm
    [problem] = [p for p in volume_problems(image, "t1") if "voxel width" in p]
    assert problem.startswith(f"has a voxel width of {width:g} in its NIfTI header (pixdim[2])")
    assert all("voxel width" not in p
               for p in volume_problems(read_volume(DATA / "anatomical.nii").image, "t1"))


def test_a_broken_qform_quaternion_is_named(tmp_path):
    """(b, c, d) longer than 1: nibabel refuses the file, ITK reads a rotation by 180 degrees
    about (b, c, d) without a word."""
    import struct

    path = _rewrite(DATA / "anatomical.nii", tmp_path / "broken.nii", qcode=1, scode=0)
    data = bytearray(path.read_bytes())
    order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"
    for offset in (256, 260, 264):  # quatern_b, quatern_c, quatern_d
        struct.pack_into(order + "f", data, offset, 0.7)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        nib.load(path).header.get_qform()
    [note] = read_volume(path).notes
    assert note.startswith("broken.nii's qform quaternion is broken (its b, c, d have length "
                           "1.21, more than 1")
    assert read_volume(DATA / "anatomical.nii").notes == []


@pytest.mark.parametrize("space", ["scanner-xyz", "3D-right-handed", "3D-left-handed"])
def test_a_nrrd_in_a_space_that_is_not_the_patients_says_laterality_is_unknown(tmp_path,
                                                                                 space):
    """NRRD's non-anatomical spaces (scanner coordinates, a bare right- or left-handed frame)
    do not say where the patient's left lies; ITK (so Slicer) takes their axes as L, P, S all
    the same. The anatomical spaces, RAS included (ITK converts it), read without a note."""
    nrrd = pytest.importorskip("nrrd")
    header = {"space origin": np.array([10.0, 20.0, 30.0]),
              "space directions": np.diag([1.0, 2.0, 3.0])}
    nrrd.write(str(tmp_path / "scan.nrrd"), np.zeros((6, 5, 4), np.int16),
               {**header, "space": space})
    volume = read_volume(tmp_path / "scan.nrrd")
    assert volume.image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    [note] = volume.notes
    assert note.startswith(f"scan.nrrd holds no orientation (its space is '{space}'")
    for anatomical in ("right-anterior-superior", "left-anterior-superior",
                       "left-posterior-superior"):
        nrrd.write(str(tmp_path / "placed.nrrd"), np.zeros((6, 5, 4), np.int16),
                   {**header, "space": anatomical})
        assert read_volume(tmp_path / "placed.nrrd").notes == []


@pytest.mark.parametrize(("unit", "factor", "words"), [
    ("meter", 1000.0, "metres"), ("micron", 0.001, "micrometres")])
def test_lengths_in_metres_or_micrometres_are_named_and_a_method_refuses_them(
        tmp_path, capsys, unit, factor, words):
    """ITK scales a NIfTI file's lengths to mm by its xyzt_units, nibabel does not: the same
    file is a 33 m or a 33 micrometre 'brain' in ITK and Slicer, a 33 mm one in nibabel."""
    source = nib.load(DATA / "anatomical.nii")  # 33 x 41 x 25 voxels of 3 mm, both forms equal
    image = nib.Nifti1Image(np.asanyarray(source.dataobj), source.affine,
                            header=source.header.copy())
    image.header.set_xyzt_units(xyz=unit)
    path = tmp_path / f"in_{unit}.nii.gz"
    nib.save(image, path)
    volume = read_volume(path)
    assert volume.image.GetSpacing() == pytest.approx(
        [z * factor for z in source.header.get_zooms()[:3]])
    np.testing.assert_allclose(nib.load(path).header.get_zooms()[:3],
                               source.header.get_zooms()[:3])  # nibabel: as stored
    [note] = volume.notes  # only the unit: both placements are scaled alike
    assert f"gives its lengths in {words}" in note
    assert main(["info", str(path)]) == 0  # described, with what a method would say
    assert "a method would refuse it: it " in capsys.readouterr().out
    assert main(["predict", "brain", "--input", f"t1={path}", "--output",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "t1: " in (err := capsys.readouterr().err) and "its lengths are not in mm" in err
    assert not (tmp_path / "out").exists()


def test_a_patient_sized_scan_in_mm_has_no_scale_problem():
    from oncoseg.validation import volume_problems

    image = read_volume(DATA / "anatomical.nii").image
    assert volume_problems(image, "anatomical.nii") == []


def test_a_scanner_sform_scaled_unlike_its_pixdim_is_named_without_claiming_the_qform(tmp_path):
    """ITK takes a SCANNER_ANAT sform's axes but its spacing from pixdim ('unexpected scales in
    sform'); nibabel takes the sform whole: the same file twice the size in one of them."""
    source = nib.load(DATA / "anatomical.nii")
    qform = source.header.get_qform()
    doubled = qform.copy()
    doubled[:3, :3] *= 2
    for qcode in (1, 0):
        path = _rewrite(DATA / "anatomical.nii", tmp_path / f"doubled{qcode}.nii", sform=doubled,
                        scode=1, qcode=qcode)
        volume = read_volume(path)
        np.testing.assert_allclose(volume.image.GetSpacing(), source.header.get_zooms()[:3])
        [note] = volume.notes
        assert "read it with orientation LAS;" in note and "from its qform" not in note
        assert "use its sform (SCANNER_ANAT, orientation LAS): up to" in note


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_an_intercept_without_a_slope_is_not_added_as_itk_adds_it(tmp_path, slope):
    """nifti1.h scales voxels only 'if the scl_slope field is nonzero'; nibabel follows it,
    ITK (so 3D Slicer) adds scl_inter anyway: a CT 1024 HU too bright. Read as the standard and
    nibabel read it, in its stored integers, with a note naming what Slicer shows."""
    data = np.asanyarray(nib.load(DATA / "anatomical.nii").dataobj).astype(np.int16)
    path = tmp_path / "scan.nii"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.2, 1.0])), path)
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([slope, 1024.0], "<f4").tobytes()  # scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    assert float(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).min()) == \
        data.min() + 1024  # ITK alone
    volume = read_volume(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image).transpose(2, 1, 0),
                                  nib.load(path).get_fdata())
    assert volume.image.GetPixelID() == sitk.sitkInt16
    [note] = volume.notes
    assert "scl_inter 1024" in note and "3D Slicer add 1024" in note
