"""Where voxels are in space: bounds, overlap, orientation, resampling onto a reference grid.

All computations use the full direction matrix, so oblique and flipped acquisitions are handled
in physical space rather than by assuming axis-aligned grids. Coordinates are ITK's LPS, in mm.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError

Interpolation = Literal["linear", "bspline", "nearest"]
_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An array (z, y, x) as an image on ``reference``'s grid: geometry travels with pixels."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def direction_matrix(image: sitk.Image) -> np.ndarray:
    d = image.GetDimension()
    return np.asarray(image.GetDirection(), float).reshape(d, d)


def index_to_physical_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 homogeneous matrix taking a continuous (i, j, k) index to an LPS point."""
    matrix = np.eye(4)
    matrix[:3, :3] = direction_matrix(image) * np.asarray(image.GetSpacing(), float)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS box (min, max) enclosing every voxel, voxel extents included."""
    size = np.asarray(image.GetSize(), float)
    matrix = index_to_physical_matrix(image)
    corners = np.array([
        [*(np.where(choice, size - 0.5, -0.5)), 1.0]
        for choice in itertools.product([False, True], repeat=3)
    ])
    points = corners @ matrix.T
    return points[:, :3].min(axis=0), points[:, :3].max(axis=0)


def overlap_fraction(image: sitk.Image, reference: sitk.Image) -> float:
    """Fraction of the reference's bounding box that the image's bounding box covers."""
    a_min, a_max = physical_bounds(image)
    b_min, b_max = physical_bounds(reference)
    inter = np.clip(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0.0, None)
    volume = np.prod(b_max - b_min)
    return float(np.prod(inter) / volume) if volume > 0 else 0.0


def check_overlap(image: sitk.Image, reference: sitk.Image, image_name: str = "image",
                  reference_name: str = "reference", minimum: float = 0.0) -> float:
    """Refuse images that do not share physical space (e.g. another patient's scan).

    ``minimum`` is the fraction of the reference box that must be covered; the default only
    rejects images with no overlap at all.
    """
    fraction = overlap_fraction(image, reference)
    if fraction <= minimum:
        a_min, a_max = physical_bounds(image)
        b_min, b_max = physical_bounds(reference)
        raise InputError(image_name, (
            f"does not overlap {reference_name} in physical space (covers {100 * fraction:.1f} % "
            f"of it; {image_name} spans {_box(a_min, a_max)} mm, {reference_name} spans "
            f"{_box(b_min, b_max)} mm). Are both from the same patient and study?"
        ))
    return fraction


def _box(lo: np.ndarray, hi: np.ndarray) -> str:
    return "[" + ", ".join(f"{a:.0f}..{b:.0f}" for a, b in zip(lo, hi, strict=True)) + "]"


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when voxel (i, j, k) of ``a`` and of ``b`` are the same point in space."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance, rtol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance, rtol=0)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance, rtol=0)
    )


def resample_to_reference(
    image: sitk.Image,
    reference: sitk.Image,
    interpolation: Interpolation = "linear",
    default_value: float = 0.0,
    transform: sitk.Transform | None = None,
    names: tuple[str, str] = ("image", "reference"),
) -> sitk.Image:
    """The image on the reference grid (physical space, so any orientations may differ).

    Images keep their pixel type except that linear/B-spline interpolation of integer images
    returns float32 (interpolated values are not integers). Labels must use ``"nearest"``.
    Without a transform the two must overlap in space; ``names`` go into that error message.
    """
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    if transform is None:
        if same_grid(image, reference, tolerance=1e-6):
            return image
        check_overlap(image, reference, *names)
    pixel = image.GetPixelID()
    if interpolation != "nearest" and pixel not in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = sitk.Cast(image, sitk.sitkFloat32)
        pixel = sitk.sitkFloat32
    return sitk.Resample(
        image, reference, transform or sitk.Transform(), _INTERPOLATORS[interpolation],
        default_value, pixel,
    )


def arrays_onto(arrays: np.ndarray, source: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Arrays (..., z, y, x) on ``source``'s grid resampled linearly onto ``grid`` (float32):
    several channels or class maps carried to and from a network's working grid."""
    flat = arrays.reshape(-1, *arrays.shape[-3:])
    moved = [sitk.GetArrayFromImage(resample_to_reference(
        image_like(np.ascontiguousarray(a, np.float32), source), grid, "linear"))
        for a in flat]
    return np.stack(moved).reshape(*arrays.shape[:-3], *moved[0].shape).astype(np.float32)


def grid_with_spacing(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty reference covering the same box as ``image`` at another spacing.

    The direction is kept, so resampling onto it never re-slices an oblique acquisition.
    """
    return grid_from_box(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                         image.GetDirection(), spacing)


def box_size(size, spacing, new_spacing) -> np.ndarray:
    """Voxels per axis of :func:`grid_from_box`'s grid (computed alone: a grid's size is known
    before any voxel of it is allocated)."""
    return np.maximum(1, np.round(np.asarray(size, float) * np.asarray(spacing, float)
                                  / np.asarray(new_spacing, float))).astype(int)


def grid_from_box(size, spacing, origin, direction, new_spacing) -> sitk.Image:
    """An empty grid covering the box of a grid given by its header (size, spacing, origin,
    direction as a flat or 3 x 3 matrix) at ``new_spacing``: the same first corner and axes."""
    old_spacing = np.asarray(spacing, float)
    new_spacing = np.asarray(new_spacing, float)
    matrix = np.asarray(direction, float).reshape(3, 3)
    new_size = box_size(size, old_spacing, new_spacing)
    # Keep the box's first corner: shift the origin by half a voxel difference.
    shift = matrix @ ((new_spacing - old_spacing) / 2.0)
    reference = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in new_spacing))
    reference.SetDirection(tuple(float(v) for v in matrix.ravel()))
    reference.SetOrigin(tuple(np.asarray(origin, float) + shift))
    return reference


def orientation_code(image: sitk.Image, tolerance: float = 1e-3) -> str:
    """Three letters (LPS convention: the direction each axis points to, e.g. 'LPS', 'RAI').

    ``'oblique'`` when an axis is not aligned with a patient axis.
    """
    return axis_code(direction_matrix(image), tolerance)


def axis_code(matrix: np.ndarray, tolerance: float = 1e-3) -> str:
    """:func:`orientation_code` of a direction matrix (LPS, columns the index axes)."""
    letters = []
    for column in matrix.T:
        axis = int(np.argmax(np.abs(column)))
        if abs(abs(column[axis]) - 1.0) > tolerance:
            return "oblique"
        positive, negative = "LPS"[axis], "RAI"[axis]
        letters.append(positive if column[axis] > 0 else negative)
    return "".join(letters)


def is_oblique(image: sitk.Image, tolerance: float = 1e-3) -> bool:
    return orientation_code(image, tolerance) == "oblique"


def voxel_volume_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0
