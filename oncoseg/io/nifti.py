"""NIfTI details SimpleITK does not cover: NaN and infinite voxels, which its reader silently
turns into 0, maps in [0, 1] stored as scaled uint8, which its writer cannot produce, and
files whose two placements (qform, sform) disagree or whose lengths are not in mm, which it
reads without a word (:func:`orientation_notes`).

ITK reads NIfTI through nifti1_io, whose ``nifti_read_buffer`` replaces every non-finite float
by 0 (and counts them only in a debug message). A NaN-filled mask or a failed quantitative map
then looks like a valid image, or like a constant one. The raw voxels are scanned here, in
chunks (no full-size copy), and any NaN or infinity is put back where the file has it, so a
NIfTI image reads as NRRD and MHA images do: exactly what the file holds. nifti1_io also reads
a file cut short (an interrupted copy) without a word, the missing voxels zero, where teem and
MetaIO refuse theirs: such a file is refused here (:func:`nonfinite_voxels`).

:func:`write_scaled_uint8` writes a probability map as uint8 with ``scl_slope = 1/255``: a
quarter of float32's bytes before compression, and a tenth of its gzip time. Readers that honour
the NIfTI scaling fields read it back as float, ``stored / 255``, within half a step (1/510) of
the map: ITK's NiftiImageIO (``ReadImageInformation`` reports an integer type with a slope other
than 1 as FLOAT, and ``Read`` applies ``value * scl_slope + scl_inter``), hence SimpleITK and 3D
Slicer, whose volume reader (``vtkMRMLVolumeArchetypeStorageNode`` with
``SetOutputScalarTypeToNative``) takes the scalar type ITK reports (Slicer v5.10.0 and v5.12.3,
Libs/vtkITK/vtkITKArchetypeImageSeriesReader.cxx); and nibabel, whose ``get_fdata()`` applies
the same fields.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import axis_code, direction_matrix

# NIfTI datatype codes of real floating-point voxels, and of integer ones
_FLOAT_DATATYPES = {16: "f4", 64: "f8"}
_INTEGER_DATATYPES = {2: "u1", 4: "i2", 8: "i4", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                      1280: "u8"}
_CHUNK_BYTES = 1 << 24
# A probability map's uint8 code: stored v reads as v / PROBABILITY_SCALE (steps of 1/255).
PROBABILITY_SCALE = 255
# gzip level of scaled uint8 maps: level 1 takes a quarter of level 6's time for files about
# 1.5x as large (a 512 x 512 x 150 OAR-CT map: 0.07 s and 0.96 MB vs 0.27 s and 0.62 MB)
SCALED_GZIP_LEVEL = 1
# Voxels quantised at a time (a float64 buffer of this many is the only temporary)
_QUANTISE_VOXELS = 1 << 21


# A NIfTI file, or either file of a NIfTI-1 / ANALYZE 7.5 pair (header .hdr, voxels .img),
# each perhaps gzipped: what ITK's NiftiImageIO (so 3D Slicer) reads
_ENDINGS = (".nii", ".hdr", ".img")
_PARTNER = {".hdr": ".img", ".img": ".hdr"}


def _ending(path: str | os.PathLike[str]) -> str:
    """'.nii', '.hdr' or '.img' for a NIfTI-family file (gzipped or not), else ''."""
    name = str(path).lower()
    name = name[:-3] if name.endswith(".gz") else name
    return next((e for e in _ENDINGS if name.endswith(e)), "")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return bool(_ending(path))


def _pair_file(path: Path, ending: str) -> Path:
    """The partner of a pair's file with ``ending`` as nifti1_io looks for it: the same stem,
    the ending in the given file's case, uncompressed first."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem, given = name[:-4], name[-4:]
    ending = ending.upper() if given.isupper() else ending
    candidates = [path.with_name(stem + ending + gz) for gz in ("", ".gz")]
    return next((c for c in candidates if c.is_file()), candidates[0])


def nifti_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(header file, voxel file) of a NIfTI-family file: the same .nii(.gz) twice, or a pair's
    .hdr and .img whichever of the two was named."""
    path = Path(path)
    ending = _ending(path)
    if ending == ".nii":
        return path, path
    partner = _pair_file(path, _PARTNER[ending])
    return (path, partner) if ending == ".hdr" else (partner, path)


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else path.open("rb")


@dataclass(frozen=True)
class _VoxelData:
    """Where a NIfTI file's voxels lie and what its header declares of them."""

    file: Path  # the file holding the voxels (a pair's .img)
    offset: int  # vox_offset: bytes before the first voxel (in the decompressed stream)
    nbytes: int  # the voxels' bytes: every dimension's size times bitpix / 8
    dtype: str | None  # numpy dtype with byte order of a real float datatype; None otherwise
    slope: float
    inter: float
    # scl_inter where scl_slope is 0 or not a number: the standard applies no scaling, ITK
    # (so 3D Slicer) adds the intercept all the same; 0 otherwise
    added: float = 0.0
    integer: str | None = None  # numpy dtype of an integer datatype; None otherwise


def _header_bytes(path: str | os.PathLike[str], count: int) -> bytes:
    """The first ``count`` bytes of a NIfTI-family file's header (its .hdr for a pair),
    inflated where gzipped; fewer (or none) where the file is shorter or unreadable."""
    header_file, _ = nifti_files(path)
    try:
        with _open(header_file) as handle:
            return handle.read(count)
    except (OSError, EOFError, zlib.error):
        return b""


def _voxel_data(path: Path) -> _VoxelData | None:
    """What a NIfTI-1, NIfTI-2 or ANALYZE 7.5 header says of its voxels; None for an
    unreadable header."""
    _, voxel_file = nifti_files(path)
    header = _header_bytes(path, 540)
    if len(header) < 348:
        return None
    for order in "<>":
        (sizeof_hdr,) = struct.unpack(order + "i", header[:4])
        if sizeof_hdr == 348:
            datatype, bitpix = struct.unpack(order + "hh", header[70:74])
            dim = struct.unpack(order + "8h", header[40:56])
            offset = struct.unpack(order + "f", header[108:112])[0]
            slope, inter = struct.unpack(order + "ff", header[112:120])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(order + "hh", header[12:16])
            dim = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            slope, inter = struct.unpack(order + "dd", header[176:192])
            break
    else:
        return None
    if not 1 <= dim[0] <= 7 or any(d < 1 for d in dim[1:dim[0] + 1]) or bitpix <= 0 \
            or not np.isfinite(offset) or offset < 0:
        return None
    added = 0.0
    # the standard scales only where the slope is a usable number, other than 0
    if not np.isfinite(slope) or slope == 0:
        added = float(inter) if np.isfinite(inter) else 0.0
        slope, inter = 1.0, 0.0
    nbytes = int(np.prod([int(d) for d in dim[1:dim[0] + 1]], dtype=object)) * bitpix // 8
    float_type = order + _FLOAT_DATATYPES[datatype] if datatype in _FLOAT_DATATYPES else None
    return _VoxelData(voxel_file, int(offset), nbytes, float_type, float(slope), float(inter),
                      added, _INTEGER_DATATYPES.get(datatype))


def _cut_short(path: Path, data: _VoxelData, held: int | None = None) -> InputError:
    held_text = f"{held:,}" if held is not None else "fewer"
    holder = "the file" if data.file == path else f"its voxel file {data.file.name}"
    return InputError(str(path), f"is cut short: its header declares {data.nbytes:,} bytes of "
                      f"voxels from byte {data.offset:,}, and {holder} holds {held_text} "
                      "(an interrupted copy or download); ITK and 3D Slicer read such a file "
                      "without a word, the missing voxels as zeros")


def _gzip_trailer_size(path: Path) -> int | None:
    """The uncompressed size (modulo 2^32) a gzip file's trailer records for its last member:
    the whole stream's for the single member that ITK, nibabel and pigz write."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 18:
            return None
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def _cut_short_by_length(path: Path, data: _VoxelData) -> bool | None:
    """Whether the file is cut short by what its length says: an uncompressed file's size,
    a compressed one's gzip trailer (False when it matches; None when it does not decide:
    several gzip members, or a cut stream whose last bytes happen to differ)."""
    if not data.file.is_file():
        raise InputError(str(path), f"its voxel file {data.file.name} is missing (a NIfTI or "
                         "ANALYZE pair keeps its header in .hdr and its voxels in .img)")
    if not str(data.file).lower().endswith(".gz"):
        size = data.file.stat().st_size
        if size < data.offset + data.nbytes:
            raise _cut_short(path, data, max(0, size - data.offset))
        return False
    return False if _gzip_trailer_size(data.file) == (data.offset + data.nbytes) % 2**32 \
        else None


def _scan(path: Path, data: _VoxelData, collect: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read the voxel stream through, once, in chunks (no full-size copy): refuses it where it
    ends early or its gzip stream is damaged; with ``collect``, the NaN and infinite voxels of
    a float file (flat indices in file order, raw values scaled)."""
    dtype = data.dtype if collect else None
    item = np.dtype(dtype).itemsize if dtype else 1
    chunk = _CHUNK_BYTES - _CHUNK_BYTES % item
    indices, values = [], []
    read = 0
    try:
        with _open(data.file) as handle:
            handle.seek(data.offset)
            start = 0
            while True:
                block = handle.read(chunk)
                if not block:
                    break
                read += len(block)
                if dtype is None or len(block) < item:
                    continue
                array = np.frombuffer(block[: len(block) - len(block) % item], dtype)
                bad = np.flatnonzero(~np.isfinite(array))
                if bad.size:
                    indices.append(bad + start)
                    values.append(array[bad].astype(np.float64) * data.slope + data.inter)
                start += array.size
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise InputError(str(path), "is cut short or damaged: its gzip stream breaks off "
                         f"before the end of the {data.nbytes:,} bytes of voxels its header "
                         f"declares ({error}); ITK and 3D Slicer read such a file without a "
                         "word, the missing voxels as zeros") from None
    if read < data.nbytes:
        raise _cut_short(path, data, read)
    if not indices:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(indices), np.concatenate(values)


def refuse_nifti2(path: str | os.PathLike[str]) -> None:
    """Refuse a NIfTI-2 file (540-byte header: CIFTI, Connectome Workbench, images wider than
    32,767 voxels): ITK 5.4 reads NIfTI-1 only (its NiftiImageIO goes through nifti1_io,
    Modules/IO/NIFTI at v5.4.4), so SimpleITK and 3D Slicer 5.10 and 5.12 cannot read it, and
    it came back as "no reader recognises its pixel data: truncated, or an unknown encoding"."""
    if not is_nifti(path):
        return
    head = _header_bytes(path, 4)
    if len(head) == 4 and 540 in (struct.unpack("<i", head)[0], struct.unpack(">i", head)[0]):
        raise InputError(str(path), "is a NIfTI-2 file, which ITK 5.4 (so SimpleITK and 3D "
                         "Slicer 5.10 and 5.12) cannot read; nibabel can save it as NIfTI-1 "
                         "(nibabel.save(nibabel.Nifti1Image.from_image(nibabel.load(IN)), "
                         "'OUT.nii.gz')) for any image under 32,768 voxels along each axis")


def check_complete(path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`InputError`) a NIfTI file whose voxel data ends before its header's
    declared size, or whose gzip stream is damaged: nifti1_io (ITK, so 3D Slicer) reads what
    there is and leaves the rest zero; nibabel refuses such a file. Decided by the file's
    size, or a compressed file's gzip trailer, where they can (0.4 ms on an 80 MB file);
    else by reading the stream through. Not a NIfTI file: nothing to check."""
    path = Path(path)
    data = _voxel_data(path) if is_nifti(path) else None
    if data is not None and _cut_short_by_length(path, data) is None:
        _scan(path, data, collect=False)


def nonfinite_voxels(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (file order) and raw values of the NaN and infinite voxels of a float
    NIfTI file; empty for other files. A NIfTI file cut short is refused
    (:func:`check_complete`); a float one is read through once for both."""
    path = Path(path)
    data = _voxel_data(path) if is_nifti(path) else None
    if data is None or data.dtype is None:
        check_complete(path)
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    _cut_short_by_length(path, data)  # an uncompressed file's size says it before any read
    return _scan(path, data, collect=True)


def restore_nonfinite(image: sitk.Image, path: str | os.PathLike[str]) -> sitk.Image:
    """``image`` as read by SimpleITK from ``path``, with the NaN and infinite voxels the NIfTI
    file holds put back (the same image when there are none, or when the file is not a float
    NIfTI). Voxel order in a NIfTI file is the order of SimpleITK's array (x fastest). A NIfTI
    file cut short is refused (:func:`nonfinite_voxels`)."""
    if not is_nifti(path):
        return image
    indices, values = nonfinite_voxels(path)
    if indices.size == 0 or image.GetNumberOfComponentsPerPixel() != 1 or \
            image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image
    array = sitk.GetArrayFromImage(image)
    inside = indices < array.size  # trailing bytes past the declared voxels are not voxels
    array.reshape(-1)[indices[inside]] = values[inside]
    return _with_voxels(image, array)


def _with_voxels(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    """``array`` as an image on ``image``'s grid with its header's metadata (what the
    placement notes read)."""
    out = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    out.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        out.SetMetaData(key, image.GetMetaData(key))
    return out


def intercept_itk_adds(path: str | os.PathLike[str]) -> float:
    """The scl_inter ITK's NIfTI reader (so 3D Slicer) adds to every voxel of a file whose
    scl_slope is 0 or not a number, where the NIfTI standard (nifti1.h: the scaling applies
    "if the scl_slope field is nonzero") and nibabel apply none; 0 for other files."""
    data = _voxel_data(Path(path)) if is_nifti(path) else None
    return data.added if data is not None else 0.0


def without_added_intercept(image: sitk.Image, path: str | os.PathLike[str]) -> sitk.Image:
    """``image`` as ITK read it from ``path``, less the intercept it added against the
    standard (:func:`intercept_itk_adds`), in the file's own integer type where it stores
    integers (ITK read them as float for the scaling); the same image otherwise."""
    data = _voxel_data(Path(path)) if is_nifti(path) else None
    if data is None or not data.added:
        return image
    values = sitk.GetArrayFromImage(image).astype(np.float64) - data.added
    if data.integer is not None:
        values = values.astype(data.integer)
    elif image.GetPixelID() == sitk.sitkFloat32:
        values = values.astype(np.float32)
    return _with_voxels(image, values)


def _intercept_notes(path: str | os.PathLike[str], name: str) -> list[str]:
    added = intercept_itk_adds(path)
    return [f"{name}'s header gives scl_slope 0 (or no number) and scl_inter {added:g}: the "
            "NIfTI standard applies no scaling then, and nibabel and OncoSeg read the stored "
            f"values; ITK and 3D Slicer add {added:g} to every voxel (what Slicer shows)"
            ] if added else []


# NIfTI xyzt_units' spatial codes (its lowest three bits) -> (millimetres per unit, name)
_UNITS = {1: (1000.0, "metres"), 3: (0.001, "micrometres")}
# the patient axis a letter of an orientation code lies on, in words
_SIDES = {"L": "left and right", "R": "left and right", "P": "front and back",
          "A": "front and back", "S": "head and feet", "I": "head and feet"}


def _length_unit(source: sitk.Image | sitk.ImageFileReader) -> tuple[float, str] | None:
    """(mm per unit, its name) of a NIfTI file whose lengths are not in mm (``xyzt_units``:
    metres or micrometres, which ITK scales to mm); None for mm and unknown."""
    if "xyzt_units" not in source.GetMetaDataKeys():
        return None
    try:
        return _UNITS.get(int(source.GetMetaData("xyzt_units")) & 7)
    except ValueError:
        return None


def _unit_notes(source: sitk.Image | sitk.ImageFileReader, name: str) -> list[str]:
    """A file whose lengths are not in mm: ITK (and 3D Slicer) scale them, nibabel and FSL
    take the numbers as they are (mm), so the two show the scan at sizes 1000 times apart."""
    unit = _length_unit(source)
    if unit is None:
        return []
    factor, words = unit
    spacing = " x ".join(f"{s:g}" for s in source.GetSpacing()[:3])
    stored = " x ".join(f"{s / factor:g}" for s in source.GetSpacing()[:3])
    return [f"{name} gives its lengths in {words} (NIfTI xyzt_units): ITK and 3D Slicer scale "
            f"them to a spacing of {spacing} mm, nibabel and FSL read {stored} as mm: check "
            "that the scan's size is a patient's"]


def no_orientation_note(name: str, why: str, elsewhere: str = "", axes: str = "LPS") -> str:
    """The note for a file that does not say where the patient's axes lie (``why``: what
    its header lacks; ``elsewhere``: how other tools place it; ``axes``: how ITK took them)."""
    return (f"{name} holds no orientation ({why}): it was read as ITK and 3D Slicer read it, "
            f"with its axes taken as {', '.join(axes)}" +
            (f" ({elsewhere})" if elsewhere else "") +
            ", but where the patient's left, front and head lie is not known from the file: "
            "check the result's laterality")


# How nibabel places a NIfTI file with neither placement, or an ANALYZE 7.5 file (its
# ``get_best_affine`` falls back to the ANALYZE base affine, x flipped, centred, with the
# absolute voxel widths; nibabel 5)
_NIBABEL_UNPLACED = "LAS"


def _relation(read: np.ndarray, other: np.ndarray) -> str:
    """How a placement with axes ``other`` (a direction matrix) shows the voxels that one with
    axes ``read`` shows: mirrored (one placement a reflection of the other), turned round."""
    read_code, other_code = axis_code(read), axis_code(other)
    if np.sign(np.linalg.det(read)) != np.sign(np.linalg.det(other)):
        swapped = [_SIDES[a] for a, b in zip(read_code, other_code, strict=True)
                   if a != b and {a, b} in ({"L", "R"}, {"P", "A"}, {"S", "I"})] \
            if "oblique" not in (read_code, other_code) else []
        return "the mirror image of that" + (f" ({' and '.join(swapped)} swapped)"
                                             if len(swapped) == 1 else "")
    return "the same voxels turned round" if read_code != other_code else "the same axes"


def _negative_widths(path: str | os.PathLike[str]) -> list[int]:
    """The axes (0-based) whose pixdim is negative: the standard's voxel widths are positive;
    ITK's NIfTI reader takes the sign as a flip of the axis (nifti1_io's qform formula taken
    literally, and the sform divided by it), nibabel takes the absolute value."""
    found = _dims_and_widths(path)
    return [] if found is None else [axis for axis in range(3) if found[1][axis + 1] < 0]


def _dims_and_widths(path: str | os.PathLike[str]
                     ) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """A NIfTI-1 or ANALYZE header's dim[0..7] and pixdim[0..7] as stored (ITK's metadata
    shows them after nifti1_io has mended them); None for another file."""
    if not is_nifti(path):
        return None
    header = _header_bytes(path, 348)
    if len(header) < 348:
        return None
    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    if struct.unpack(order + "i", header[:4])[0] != 348:
        return None  # NIfTI-2 (refused elsewhere) or no NIfTI-1 header
    return struct.unpack(order + "8h", header[40:56]), struct.unpack(order + "8f", header[76:108])


def refuse_empty_axes(path: str | os.PathLike[str]) -> None:
    """Refuse a NIfTI or ANALYZE header declaring a size of 0 or less along a spatial axis:
    nifti1_io (so ITK and 3D Slicer) reads it as 1, one slice of what the file holds, without
    a word."""
    found = _dims_and_widths(path)
    if found is None:
        return
    dims = found[0]
    for axis in range(1, min(max(int(dims[0]), 1), 3) + 1):  # a later axis of 0 reads as 1
        if dims[axis] < 1:
            raise InputError(str(path), f"its header declares {dims[axis]} voxels along axis "
                             f"{axis} (dim[{axis}]): a damaged header (ITK and 3D Slicer read "
                             "one slice of the file as if it were all)")


def unknown_widths(path: str | os.PathLike[str]) -> str | None:
    """What a NIfTI-1 or ANALYZE header says wrong about its voxels' size: a spatial pixdim of
    0 or not a number, which nifti1_io (so ITK and 3D Slicer, whose metadata then shows 1)
    replaces by 1 mm without a word; None for a usable header or another file. In the words
    that follow the input's name."""
    found = _dims_and_widths(path)
    if found is None:
        return None
    dims, widths = found
    for axis in range(1, min(max(int(dims[0]), 1), 3) + 1):
        width = widths[axis]
        if width == 0 or not np.isfinite(width):
            return f"has a voxel width of {width:g} in its NIfTI header (pixdim[{axis}])"
    return None


def _flipped(matrix: np.ndarray, axes: Iterable[int]) -> np.ndarray:
    flipped = matrix.copy()
    for axis in axes:
        flipped[:, axis] *= -1
    return flipped


def orientation_notes(image: sitk.Image | sitk.ImageFileReader,
                      path: str | os.PathLike[str]) -> list[str]:
    """What a reader of ``image`` (as SimpleITK read it from the NIfTI file ``path``, or a
    reader that has read its header) should know about where its voxels lie, when tools
    disagree about it.

    A NIfTI file may hold two placements, the qform and the sform, each with a code. ITK (hence
    SimpleITK, nnU-Net and 3D Slicer) takes the sform only when its code is SCANNER_ANAT or the
    qform is absent, and otherwise the qform (``SetImageIOOrientationFromNIfTI`` in ITK's
    itkNiftiImageIO.cxx, ITK 5.4 in SimpleITK here and in Slicer v5.10.0 / v5.12.3, whose
    SuperBuild/External_ITK.cmake pin ITK 5.4.4 / 5.4.6 and whose volume reader,
    Libs/vtkITK/vtkITKArchetypeImageSeriesReader.cxx, reads NIfTI through that class);
    nibabel, FSL and the tools built on them (TotalSegmentator) take the sform whenever its
    code is set. So a file whose sform (code ALIGNED_ANAT, TALAIRACH or MNI)
    and qform disagree shows the same voxels in different places, mirrored where the two differ
    by a reflection: a left-right swap between viewers, silent in all of them. A file with
    neither (ANALYZE-style, or an ANALYZE 7.5 pair) says nothing about where left is: ITK
    takes its axes as L, P, S from origin 0, nibabel as L, A, S centred, the mirror image.
    Both are read as ITK reads them,
    as 3D Slicer would show them, with a note; so is a file whose lengths are in metres or
    micrometres (ITK scales them to mm, nibabel does not)."""
    keys = set(image.GetMetaDataKeys())
    if not is_nifti(path) or image.GetDimension() < 3 or \
            not {"qform_code", "sform_code", "srow_x"} <= keys:
        return []
    name = Path(path).name
    qform, sform = int(image.GetMetaData("qform_code")), int(image.GetMetaData("sform_code"))
    notes = _intercept_notes(path, name) + _unit_notes(image, name)
    read = direction_matrix(image)[:3, :3]
    negative = _negative_widths(path)
    if qform <= 0 and sform <= 0:
        analyze = "nifti_type" in keys and image.GetMetaData("nifti_type") == "0"
        why = ("an ANALYZE 7.5 header, which has no placement" if analyze else
               "its qform_code and sform_code are 0, an ANALYZE-style header")
        nibabel = np.diag([1.0, -1.0, 1.0])  # L, A, S as LPS axes
        elsewhere = (f"nibabel reads it as {', '.join(_NIBABEL_UNPLACED)}, centred on the "
                     f"volume: {_relation(read, nibabel)}")
        return [*notes, no_orientation_note(name, why, elsewhere, axis_code(read))]
    if sform <= 0:  # the qform alone: every reader takes it, save a negative voxel width
        return notes + _quaternion_notes(image, name) + \
            _negative_width_notes(name, read, negative)
    try:
        rows = np.array([[float(v) for v in image.GetMetaData(f"srow_{axis}").split()]
                         for axis in "xyz"])
    except ValueError:
        return []
    if rows.shape != (3, 4):
        return notes
    to_lps = np.diag([-1.0, -1.0, 1.0])
    scale = (_length_unit(image) or (1.0, ""))[0]
    sform_matrix = np.eye(4)  # in mm, as ITK scales both placements by the file's unit
    sform_matrix[:3, :3] = to_lps @ rows[:, :3] * scale
    sform_matrix[:3, 3] = to_lps @ rows[:, 3] * scale
    read_matrix = np.eye(4)  # ITK's placement of the first three axes (a 4D file's too)
    read_matrix[:3, :3] = direction_matrix(image)[:3, :3] * np.asarray(image.GetSpacing()[:3])
    read_matrix[:3, 3] = image.GetOrigin()[:3]
    size = np.asarray(image.GetSize()[:3], float)
    corners = np.array([[*(size - 1) * np.array(c), 1.0]
                        for c in itertools.product((0, 1), repeat=3)]).T
    apart = float(np.linalg.norm((sform_matrix @ corners - read_matrix @ corners)[:3],
                                 axis=0).max())
    if apart <= 0.1 * min(image.GetSpacing()[:3]):
        return notes  # ITK read the sform, or a qform equal to it
    read_axes, sform_axes = read_matrix[:3, :3], sform_matrix[:3, :3]
    columns = np.linalg.norm(sform_axes, axis=0)
    sform_direction = sform_axes / np.where(columns > 0, columns, 1.0)
    sform_code = axis_code(sform_direction)
    read_code = axis_code(read)
    how = f"up to {apart:.0f} mm from there"
    if np.sign(np.linalg.det(read_axes)) != np.sign(np.linalg.det(sform_axes)):
        how = _relation(read, sform_direction)
    names = {1: "SCANNER_ANAT", 2: "ALIGNED_ANAT", 3: "TALAIRACH", 4: "MNI_152"}
    # ITK's rule: a known qform wins over a sform whose code is not SCANNER_ANAT
    source = f" from its qform ({names.get(qform, qform)})" if qform > 0 and sform != 1 else ""
    if negative:
        widths = " and ".join(f"pixdim[{axis + 1}]" for axis in negative)
        source += f", its negative {widths} (voxel width) taken as a flip"
    return [*notes, f"{name} is placed differently by different tools: ITK and 3D Slicer (and "
            f"so OncoSeg) read it with orientation {read_code}{source}; nibabel, FSL and the "
            f"tools built on them (TotalSegmentator) use its sform ({names.get(sform, sform)}, "
            f"orientation {sform_code}): {how}. Check which one the scanner's images agree "
            "with before using the result"]


def _quaternion_notes(source: sitk.Image | sitk.ImageFileReader, name: str) -> list[str]:
    """A qform quaternion whose (b, c, d) is longer than 1, which the standard's a = sqrt(1 -
    b^2 - c^2 - d^2) does not allow: nibabel refuses such a file; nifti1_io (so ITK and 3D
    Slicer) scales (b, c, d) to length 1, a rotation by 180 degrees about it, which is no
    placement anyone wrote."""
    try:
        length = float(np.linalg.norm([float(source.GetMetaData(f"quatern_{k}"))
                                       for k in "bcd"]))
    except (RuntimeError, ValueError):
        return []
    if length <= 1.0 + 1e-5:
        return []
    return [f"{name}'s qform quaternion is broken (its b, c, d have length {length:.3g}, more "
            "than 1, which the NIfTI standard does not allow; nibabel refuses the file): ITK "
            "and 3D Slicer (and so OncoSeg) read it as a rotation by 180 degrees, which no "
            "scanner wrote, so where the patient's left, front and head lie is not known: "
            "check the result's laterality"]


def _negative_width_notes(name: str, read: np.ndarray, negative: Sequence[int]) -> list[str]:
    """The note for a qform file with negative voxel widths, which ITK reads flipped."""
    if not negative:
        return []
    widths = " and ".join(f"pixdim[{axis + 1}]" for axis in negative)
    other = _flipped(read, negative)
    return [f"{name} is placed differently by different tools: its {widths} (voxel width) "
            "is negative, which the NIfTI standard does not allow; ITK and 3D Slicer (and so "
            f"OncoSeg) read that as a flip of the axis (orientation {axis_code(read)}), "
            "nibabel and the tools built on it (TotalSegmentator) take the width's absolute "
            f"value (orientation {axis_code(other)}): {_relation(read, other)}. Check which "
            "one the scanner's images agree with before using the result"]


def _header_of(image: sitk.Image, folder: Path) -> bytearray:
    """The NIfTI-1 header (with its 4-byte extension flag) ITK writes for a uint8 image of
    ``image``'s size and geometry, read from a one-voxel image ITK writes with that geometry:
    only ``dim`` depends on the size (qform, sform and pixdim come from origin, spacing and
    direction), so it is patched in instead of writing every voxel twice."""
    dimension = image.GetDimension()
    size = image.GetSize()
    if any(s > 32767 for s in size):  # NIfTI-1 stores dimensions as 16-bit integers
        raise ValueError(f"a NIfTI-1 file cannot hold an image of size {size}")
    tiny = sitk.Image([1] * dimension, sitk.sitkUInt8)
    tiny.SetSpacing(image.GetSpacing())
    tiny.SetOrigin(image.GetOrigin())
    tiny.SetDirection(image.GetDirection())
    handle, name = tempfile.mkstemp(suffix=".nii", dir=folder)
    os.close(handle)
    try:
        sitk.WriteImage(tiny, name, useCompression=False)
        data = Path(name).read_bytes()
    finally:
        os.unlink(name)
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    offset = int(struct.unpack(order + "f", data[108:112])[0])
    header = bytearray(data[:offset])
    struct.pack_into(order + "h" * dimension, header, 42, *size)
    return header


def write_scaled_uint8(image: sitk.Image, path: str | os.PathLike[str],
                       values: Iterable[np.ndarray] | None = None,
                       scale: int = PROBABILITY_SCALE,
                       compress_level: int = SCALED_GZIP_LEVEL) -> None:
    """Write a float map with values in [0, 1] (clipped to it) as a uint8 NIfTI file holding
    ``round(value * scale)`` with ``scl_slope = 1 / scale`` and ``scl_inter = 0``, gzip-compressed
    when ``path`` ends in .gz. NIfTI readers (SimpleITK, Slicer, nibabel) read it back as float
    within ``0.5 / scale`` of the map. ``values``, when given, yields the map's voxels as
    (z, y, x) slabs, first slice first, and ``image`` only lends its grid (a map computed slab by
    slab is written without ever being whole). Quantised a block at a time: no full-size float
    copy."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only scalar images can be stored as scaled uint8")
    path = Path(path)
    header = _header_of(image, path.parent)
    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    struct.pack_into(order + "ff", header, 112, 1.0 / scale, 0.0)
    expected = int(np.prod(image.GetSize(), dtype=np.int64))
    blocks = (sitk.GetArrayViewFromImage(image),) if values is None else values
    # float64: p * 255 + 0.5 rounded in float32 would turn some p just below a half step up
    buffer = np.empty(min(max(expected, 1), _QUANTISE_VOXELS), np.float64)
    codes = np.empty(buffer.size, np.uint8)
    written = 0
    compressed = path.name.lower().endswith(".gz")
    with open(path, "wb") as raw, (
            gzip.GzipFile("", "wb", compress_level, raw, mtime=0) if compressed
            else contextlib.nullcontext(raw)) as handle:
        handle.write(bytes(header))
        for block in blocks:
            flat = np.asarray(block).reshape(-1)
            for start in range(0, flat.size, buffer.size):
                chunk = flat[start:start + buffer.size]
                part = buffer[:chunk.size]
                # round half up: v * scale + 0.5 truncated, after clipping to [0, 1]
                np.maximum(chunk, 0.0, out=part)  # np.clip is several times slower
                np.minimum(part, 1.0, out=part)
                np.multiply(part, scale, out=part)
                np.add(part, 0.5, out=part)
                np.copyto(codes[:chunk.size], part, casting="unsafe")
                handle.write(codes[:chunk.size].tobytes())
            written += flat.size
    if written != expected:
        path.unlink()
        raise ValueError(f"{written} voxels given for an image of {expected}")
