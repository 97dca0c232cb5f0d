"""NIfTI details SimpleITK does not cover: NaN and infinite voxels, which its reader silently
turns into 0, and maps in [0, 1] stored as scaled uint8, which its writer cannot produce.

ITK reads NIfTI through nifti1_io, whose ``nifti_read_buffer`` replaces every non-finite float
by 0 (and counts them only in a debug message). A NaN-filled mask or a failed quantitative map
then looks like a valid image, or like a constant one. The raw voxels are scanned here, in
chunks (no full-size copy), and any NaN or infinity is put back where the file has it, so a
NIfTI image reads as NRRD and MHA images do: exactly what the file holds.

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
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# NIfTI datatype codes of real floating-point voxels
_FLOAT_DATATYPES = {16: "f4", 64: "f8"}
_CHUNK_BYTES = 1 << 24
# A probability map's uint8 code: stored v reads as v / PROBABILITY_SCALE (steps of 1/255).
PROBABILITY_SCALE = 255
# gzip level of scaled uint8 maps: level 1 takes a quarter of level 6's time for files about
# 1.5x as large (a 512 x 512 x 150 OAR-CT map: 0.07 s and 0.96 MB vs 0.27 s and 0.62 MB)
SCALED_GZIP_LEVEL = 1
# Voxels quantised at a time (a float64 buffer of this many is the only temporary)
_QUANTISE_VOXELS = 1 << 21


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else path.open("rb")


def _float_layout(path: Path) -> tuple[str, int, float, float] | None:
    """(numpy dtype with byte order, voxel data offset, scl_slope, scl_inter) of a float NIfTI-1
    or NIfTI-2 file; None for other data types or an unreadable header."""
    with _open(path) as handle:
        header = handle.read(540)
    if len(header) < 348:
        return None
    for order in "<>":
        (sizeof_hdr,) = struct.unpack(order + "i", header[:4])
        if sizeof_hdr == 348:
            datatype = struct.unpack(order + "h", header[70:72])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            slope, inter = struct.unpack(order + "ff", header[112:120])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
            slope, inter = struct.unpack(order + "dd", header[176:192])
            break
    else:
        return None
    if datatype not in _FLOAT_DATATYPES:
        return None
    # nifti1_io applies the scaling only when the slope is a usable number
    if not np.isfinite(slope) or slope == 0:
        slope, inter = 1.0, 0.0
    return order + _FLOAT_DATATYPES[datatype], int(offset), float(slope), float(inter)


def nonfinite_voxels(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (file order) and raw values of the NaN and infinite voxels of a float
    NIfTI file; empty for other files."""
    path = Path(path)
    layout = _float_layout(path) if is_nifti(path) else None
    empty = np.zeros(0, np.int64), np.zeros(0, np.float64)
    if layout is None:
        return empty
    dtype, offset, slope, inter = layout
    item = np.dtype(dtype).itemsize
    chunk = _CHUNK_BYTES - _CHUNK_BYTES % item
    indices, values = [], []
    with _open(path) as handle:
        handle.seek(offset)
        start = 0
        while True:
            data = handle.read(chunk)
            if len(data) < item:
                break
            array = np.frombuffer(data[: len(data) - len(data) % item], dtype)
            bad = np.flatnonzero(~np.isfinite(array))
            if bad.size:
                indices.append(bad + start)
                values.append(array[bad].astype(np.float64) * slope + inter)
            start += array.size
    if not indices:
        return empty
    return np.concatenate(indices), np.concatenate(values)


def restore_nonfinite(image: sitk.Image, path: str | os.PathLike[str]) -> sitk.Image:
    """``image`` as read by SimpleITK from ``path``, with the NaN and infinite voxels the NIfTI
    file holds put back (the same image when there are none, or when the file is not a float
    NIfTI). Voxel order in a NIfTI file is the order of SimpleITK's array (x fastest)."""
    if not is_nifti(path) or image.GetNumberOfComponentsPerPixel() != 1 or \
            image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image
    indices, values = nonfinite_voxels(path)
    if indices.size == 0:
        return image
    array = sitk.GetArrayFromImage(image)
    inside = indices < array.size  # trailing bytes past the declared voxels are not voxels
    array.reshape(-1)[indices[inside]] = values[inside]
    restored = sitk.GetImageFromArray(array, isVector=False)
    restored.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        restored.SetMetaData(key, image.GetMetaData(key))
    return restored


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
