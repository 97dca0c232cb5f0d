"""Checks that an image is fit for a method, with messages that name it and say what is wrong.

A method runs only on what it can handle: a 3D scalar volume with finite values that are not all
the same. Everything else is stopped here, before any work starts, so a bad input never leaves
partial output behind.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError

_FLOAT_TYPES = (sitk.sitkFloat32, sitk.sitkFloat64)
# A slice-wise method reads in-plane patterns, so its image must be an axial (or near-axial
# oblique) series: the slice normal may lean this far from the body's long axis.
MAX_SLICE_TILT_DEGREES = 30.0


def check_volume(image: sitk.Image, name: str, min_slices: int = 2,
                 allow_constant: bool = False) -> None:
    """Raise :class:`InputError` unless ``image`` is a usable 3D scalar volume."""
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 2 or (dimension == 3 and min(size) == 1 and min_slices > 1):
        raise InputError(name, f"is a 2D image (size {_size(size)}); a 3D volume is needed")
    if dimension != 3:
        raise InputError(name, f"is a {dimension}D image (size {_size(size)}); a 3D volume is "
                         "needed (split time series or multi-volume files first)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(name, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(colour or vector image); a scalar volume is needed")
    if min(size) < min_slices:
        raise InputError(name, f"has only {min(size)} slices along one axis (size {_size(size)}); "
                         f"at least {min_slices} are needed")
    if np.any(np.asarray(image.GetSpacing()) <= 0):
        raise InputError(name, f"has a non-positive voxel spacing {image.GetSpacing()}")
    array = sitk.GetArrayViewFromImage(image)
    if image.GetPixelID() in _FLOAT_TYPES:
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(name, f"contains {bad} NaN or infinite voxels")
    if not allow_constant and array.size and array.min() == array.max():
        raise InputError(name, f"is constant (every voxel is {array.flat[0]}); it holds no image")


def check_axial(image: sitk.Image, name: str, advice: str) -> None:
    """Raise :class:`InputError` unless ``image``'s slices are (near) axial; ``advice`` tells
    the user which series to give instead."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    normal = direction[:, 2] / np.linalg.norm(direction[:, 2])
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    if tilt > MAX_SLICE_TILT_DEGREES:
        raise InputError(name, f"is not an axial series (its slices are tilted {tilt:.0f} "
                         f"degrees from axial); {advice}")


def _size(size: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in size)
