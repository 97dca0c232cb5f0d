"""Checks that an image is fit for a method, with messages that name it and say what is wrong.

A method runs only on what it can handle: a 3D scalar volume with finite values that are not all
the same. Everything else is stopped here, before any work starts, so a bad input never leaves
partial output behind.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.memory import require_memory

_FLOAT_TYPES = (sitk.sitkFloat32, sitk.sitkFloat64)
# Memory a method takes per voxel of each input, besides the input itself: float copies, the
# resampled and normalised images, probability maps. Measured with Testing/benchmarks/
# bench_memory.py --tasks (peak RSS against input size on phantoms upsampled 2x per axis):
# rectal 40, brain 58, staging 7 bytes per input voxel; rounded up. oar-ct works in slabs and
# passes its own.
METHOD_BYTES_PER_VOXEL = 64.0
# A slice-wise method reads in-plane patterns, so its image must be an axial (or near-axial
# oblique) series: the slice normal may lean this far from the body's long axis.
MAX_SLICE_TILT_DEGREES = 30.0
# A spacing this much thicker than the other two marks the acquisition's slice axis.
SLICE_AXIS_RATIO = 1.2
# No patient scan spans more than this along an axis (a whole-body CT: about 2 m) or has finer
# voxels than this (clinical MR and CT: 0.1 mm and more). Outside, its lengths are in other units
# than mm: a NIfTI file declaring metres, which ITK scales by 1000, or micrometres. A method's
# working grid over a 475 m "CT" would need terabytes.
MAX_EXTENT_MM = 4000.0
MIN_SPACING_MM = 0.01
# Metadata key on an image whose file does not say where its voxels lie or how large they
# are (a DICOM series without a usable ImagePositionPatient, ImageOrientationPatient or
# PixelSpacing, oncoseg.io.dicom_series; a NIfTI voxel width of 0, oncoseg.io.nifti): what it
# lacks, as the words after the input's name ("comes from DICOM files without ..."); its
# geometry is the reader's guess
UNPLACED_KEY = "oncoseg:unplaced"
# A 16- or 32-bit image whose top byte is this much smoother read in the other byte order was
# stored in that order (byte_swap_ratio): images read right give 17 to 3200 (phantoms of every
# task, nibabel's and pydicom's files), the same byte-swapped 0.0003 to 0.06
BYTE_SWAP_RATIO = 0.1


def check_volume(image: sitk.Image, name: str, min_slices: int = 2,
                 allow_constant: bool = False,
                 bytes_per_voxel: float = METHOD_BYTES_PER_VOXEL) -> None:
    """Raise :class:`InputError` unless ``image`` is a usable 3D scalar volume that the method
    can process in the memory left (``bytes_per_voxel`` of this input: what the method needs
    besides the image itself; a tiled method passes its own, smaller figure)."""
    check_structure(image, name)
    problems = volume_problems(image, name, min_slices, allow_constant)
    if problems:
        raise InputError(name, problems[0])
    size = image.GetSize()
    require_memory(name, int(np.prod(size, dtype=np.float64) * bytes_per_voxel),
                   f"process its {_size(size)} voxels")


# complex voxels: one pixel of two parts to SimpleITK's Image, two components to its reader
COMPLEX_PIXELS = frozenset({sitk.sitkComplexFloat32, sitk.sitkComplexFloat64})


def check_structure(image: sitk.Image, name: str) -> None:
    """Raise :class:`InputError` unless ``image`` is a 3D scalar image at all (what ``info`` can
    describe); :func:`volume_problems` says whether a method can use it."""
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 2:
        raise InputError(name, f"is a 2D image (size {_size(size)}); a 3D volume is needed")
    if dimension != 3:
        raise InputError(name, f"is a {dimension}D image (size {_size(size)}); a 3D volume is "
                         "needed (split time series or multi-volume files first)")
    if image.GetPixelID() in COMPLEX_PIXELS:
        raise InputError(name, f"holds complex voxels ({image.GetPixelIDTypeAsString()}: real "
                         "and imaginary parts, as MR raw or phase data): a magnitude image is "
                         "needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(name, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(colour or vector image); a scalar volume is needed")


def volume_problems(image: sitk.Image, name: str, min_slices: int = 2,
                    allow_constant: bool = False) -> list[str]:
    """What stops a method from using a 3D scalar ``image``, most basic first (empty: usable).

    The texts follow the input's name in an :class:`InputError`; ``info`` lists them as
    warnings, so a file it describes and a method refuses get the same words."""
    size = image.GetSize()
    voxels = int(np.prod(size))
    problems = []
    if voxels == 1:
        problems.append("has 1 voxel; a 3D volume is needed (size 1 x 1 x 1)")
    elif sorted(size)[1] == 1:
        problems.append(f"is a single row of voxels; a 3D volume is needed (size "
                        f"{_size(size)})")
    elif min(size) == 1 and min_slices > 1:
        problems.append(f"is a single slice; a 3D series is needed (size {_size(size)})")
    elif min(size) < min_slices:
        problems.append(f"has only {min(size)} slices along one axis (size {_size(size)}); "
                        f"at least {min_slices} are needed")
    if UNPLACED_KEY in image.GetMetaDataKeys():
        problems.append(f"{image.GetMetaData(UNPLACED_KEY)}: where its voxels lie and how large "
                        "they are is not known (GDCM, ITK and 3D Slicer guess them: 1 mm where "
                        "a size is missing), and a method would read the anatomy at the wrong "
                        "place or size")
    spacing = np.asarray(image.GetSpacing(), float)
    if np.any(spacing <= 0):
        problems.append(f"has a non-positive voxel spacing {image.GetSpacing()}")
    else:
        problems += _scale_problems(spacing, np.asarray(size, float))
    swapped = byte_swap_ratio(image)
    if swapped is not None and swapped < BYTE_SWAP_RATIO:
        problems.append(f"looks byte-swapped: read in the other byte order, the coarse part "
                        f"of its values varies {1 / max(swapped, 1e-9):.0f} times less from voxel "
                        "to voxel, as a scan's does (its header's byte order, e.g. NRRD "
                        "'endian' or MetaImage 'BinaryDataByteOrderMSB', is probably wrong)")
    nan, infinite = count_nonfinite(image)
    if nan or infinite:
        problems.append(f"contains {nan} NaN and {infinite} infinite voxels (a method needs a "
                        "value in every voxel)")
    elif not allow_constant and voxels > 1:
        low, high = intensity_range(image)
        if low == high:
            problems.append(f"is constant (every voxel is {low:g}); it holds no image")
    return problems


def _scale_problems(spacing: np.ndarray, size: np.ndarray) -> list[str]:
    """A patient scan's size in mm is within known bounds; outside them its header measures
    in other units (see MAX_EXTENT_MM)."""
    extent = spacing * size
    shown = " x ".join(f"{v:g}" for v in spacing)
    if extent.max() > MAX_EXTENT_MM:
        return [f"spans {extent.max() / 1000:.3g} m along one axis (spacing {shown} mm), more "
                "than any patient: its lengths are not in mm (a NIfTI file declaring metres "
                "is scaled to mm by ITK and 3D Slicer)"]
    if spacing.min() < MIN_SPACING_MM:
        return [f"has voxels of {spacing.min() * 1000:.3g} micrometres (spacing {shown} mm), "
                "finer than any patient scan: its lengths are not in mm (a NIfTI file "
                "declaring micrometres is scaled to mm by ITK and 3D Slicer)"]
    return []


def byte_swap_ratio(image: sitk.Image, slices: int = 8) -> float | None:
    """How much rougher the image's most significant byte is when read in the other byte
    order than as stored (mean absolute difference between neighbours along rows, on a few
    slices; the byte signed for a signed type); None for 8-bit and float images, or where the
    other order's top byte does not vary (the image is then the same either way round, but
    for a factor of 256). A scan's top byte varies slowly (the value's coarse part)
    and its bottom byte like noise, so read in the right order the ratio is far above 1; a file
    whose header names the wrong byte order has them exchanged, and the ratio falls far below 1.
    """
    array = sitk.GetArrayViewFromImage(image)
    if image.GetNumberOfComponentsPerPixel() != 1 or array.dtype.kind not in "iu" or \
            array.dtype.itemsize < 2 or array.ndim < 2 or array.shape[-1] < 2:
        return None
    step = max(1, array.shape[0] // slices) if array.ndim == 3 else 1
    sample = np.ascontiguousarray(array[::step] if array.ndim == 3 else array)
    stored, swapped = _top_byte_roughness(sample), _top_byte_roughness(sample.byteswap())
    if swapped == 0:  # values of one byte in the other order (or 8-bit data in the top byte):
        return None   # the same image either way, but for a factor of 256
    return swapped / stored if stored else float("inf")


def _top_byte_roughness(values: np.ndarray) -> float:
    """Mean absolute difference between neighbours along rows of the values' most significant
    byte (an arithmetic shift keeps a signed type's sign)."""
    top = (values >> (8 * (values.dtype.itemsize - 1))).astype(np.int16)
    return float(np.abs(np.diff(top, axis=-1)).mean())


def count_nonfinite(image: sitk.Image) -> tuple[int, int]:
    """(NaN voxels, infinite voxels); integer images have neither. Counted slab by slab, so a
    big volume needs no full-size mask."""
    if image.GetPixelID() not in _FLOAT_TYPES:
        return 0, 0
    nan = infinite = 0
    for slab in _slabs(sitk.GetArrayViewFromImage(image)):
        nan += int(np.count_nonzero(np.isnan(slab)))
        infinite += int(np.count_nonzero(np.isinf(slab)))
    return nan, infinite


def intensity_range(image: sitk.Image) -> tuple[float, float]:
    """(lowest, highest) finite voxel value; (nan, nan) when there is none."""
    low, high = np.inf, -np.inf
    for slab in _slabs(sitk.GetArrayViewFromImage(image)):
        if slab.dtype.kind == "f":
            slab = slab[np.isfinite(slab)]
        if slab.size:
            low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    return (low, high) if low <= high else (float("nan"), float("nan"))


def _slabs(array: np.ndarray, voxels: int = 1 << 24) -> list[np.ndarray]:
    """Views of ``array`` along its first axis, each about ``voxels`` large."""
    if array.ndim == 0 or array.size == 0:
        return [array.reshape(-1)]
    step = max(1, voxels // max(1, array[0].size))
    return [array[i:i + step] for i in range(0, array.shape[0], step)]


def check_axial(image: sitk.Image, name: str, advice: str) -> None:
    """Raise :class:`InputError` unless ``image``'s slices are (near) axial; ``advice`` tells
    the user which series to give instead.

    The acquisition's slice axis is the one with clearly the thickest spacing, whatever its
    place in the storage order (a NIfTI may store an axial series with its slices along any
    array axis); a near-isotropic volume can be read in any plane, so its axis nearest the
    body's long axis is judged."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), float)
    thickest = int(np.argmax(spacing))
    others = np.delete(spacing, thickest)
    if spacing[thickest] >= SLICE_AXIS_RATIO * others.max():
        axis = thickest
    else:
        axis = int(np.argmax(np.abs(direction[2])))
    normal = direction[:, axis] / np.linalg.norm(direction[:, axis])
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    # a grid turned by exactly the limit is within it: NIfTI keeps the direction in float32
    # (30 degrees reads back as 30.0000015)
    if tilt > MAX_SLICE_TILT_DEGREES + 1e-3:
        raise InputError(name, f"is not an axial series (its slices are tilted {tilt:.0f} "
                         f"degrees from axial); {advice}")


def _size(size: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in size)
