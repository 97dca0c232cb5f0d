"""NaN and infinite voxels of NIfTI files, which SimpleITK's reader silently turns into 0.

ITK reads NIfTI through nifti1_io, whose ``nifti_read_buffer`` replaces every non-finite float
by 0 (and counts them only in a debug message). A NaN-filled mask or a failed quantitative map
then looks like a valid image, or like a constant one. The raw voxels are scanned here, in
chunks (no full-size copy), and any NaN or infinity is put back where the file has it, so a
NIfTI image reads as NRRD and MHA images do: exactly what the file holds.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# NIfTI datatype codes of real floating-point voxels
_FLOAT_DATATYPES = {16: "f4", 64: "f8"}
_CHUNK_BYTES = 1 << 24


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
