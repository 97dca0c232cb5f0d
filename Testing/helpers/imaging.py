"""Small image builders shared by the tests."""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = rotation(0.3, -0.2, 0.5)
FLIPS = [np.diag(signs) for signs in itertools.product([1.0, -1.0], repeat=3)]


def make_image(shape_zyx=(6, 9, 11), direction=None, spacing=(0.8, 1.3, 3.5),
               origin=(-12.5, 30.25, 7.0), dtype=np.int16, seed=0) -> sitk.Image:
    direction = np.eye(3) if direction is None else direction
    rng = np.random.default_rng(seed)
    array = rng.integers(-500, 1500, size=shape_zyx).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return image


def blob_labels(reference: sitk.Image, n_labels=3, seed=1) -> sitk.Image:
    """Non-overlapping boxes with labels 1..n on the reference grid (some may be small)."""
    rng = np.random.default_rng(seed)
    shape = sitk.GetArrayViewFromImage(reference).shape
    labels = np.zeros(shape, np.uint8)
    for label in range(1, n_labels + 1):
        start = [rng.integers(0, max(1, s - 2)) for s in shape]
        stop = [min(s, a + rng.integers(1, max(2, s // 2)))
                for a, s in zip(start, shape, strict=True)]
        region = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        labels[region] = np.where(labels[region] == 0, label, labels[region])
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    return image


def assert_same_image(a: sitk.Image, b: sitk.Image, atol=1e-9) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=atol)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
