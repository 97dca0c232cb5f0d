"""Synthetic anatomy and known smooth deformations, to measure registration error exactly."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def anatomy(points: np.ndarray) -> np.ndarray:
    """Intensity at LPS points (N, 3): a body ellipse holding smooth blobs of several
    contrasts, like organs in a pelvis (values 0..~1.3, no noise)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    body = 1.0 / (1.0 + np.exp(((x / 70) ** 2 + (y / 50) ** 2 + (z / 38) ** 2 - 1) * 12))
    value = 0.35 * body
    blobs = [((-25, 5, -18), (14, 12, 12), 0.6), ((28, 8, 14), (12, 16, 10), 0.8),
             ((0, -22, -4), (18, 9, 8), 0.45), ((5, 22, 20), (9, 9, 8), 0.9),
             ((-40, -10, 10), (8, 8, 10), 0.7), ((42, -18, -22), (7, 10, 9), 0.55),
             ((-8, 0, 0), (6, 6, 28), 1.0)]
    for centre, radii, contrast in blobs + texture_blobs():
        r2 = sum(((p - c) / r) ** 2 for p, c, r in zip((x, y, z), centre, radii, strict=True))
        value += contrast * np.exp(-r2 * 2.0) * body
    return value


def texture_blobs(count: int = 90, seed: int = 7) -> list:
    """Small structures spread through the body (vessels, nodes, bowel loops): tissue texture
    that makes displacement observable everywhere, and landmarks for the error."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        c = rng.uniform([-60, -42, -32], [60, 42, 32])
        if (c[0] / 62) ** 2 + (c[1] / 44) ** 2 + (c[2] / 34) ** 2 < 1:
            found.append((tuple(c), tuple(rng.uniform(3.5, 7.0, 3)),
                          float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.5))))
    return found


def landmarks() -> np.ndarray:
    """Centres of the texture structures: points a reader could click in both images."""
    return np.array([c for c, _, _ in texture_blobs()])


def displacement(points: np.ndarray, amplitude: float = 5.0) -> np.ndarray:
    """A smooth displacement field v(p) in mm (sine waves of ~100 mm wavelength)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    k = 2 * np.pi / 110.0
    return amplitude * np.stack([
        np.sin(k * y + 0.3) * np.cos(k * z),
        np.cos(k * x - 0.2) * np.sin(k * z + 0.5),
        0.6 * np.sin(k * x) * np.cos(k * y),
    ], axis=1)


def grid_points(image: sitk.Image) -> np.ndarray:
    """LPS points of every voxel, in the order of the (z, y, x) array."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(s) for s in size[::-1]), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return ijk @ matrix.T + np.asarray(image.GetOrigin())


def render(grid: sitk.Image, warp: float = 0.0) -> sitk.Image:
    """The anatomy sampled on ``grid``; with ``warp``, pulled back through the displacement:
    image(q) = anatomy(q - v(q)), so the true fixed -> moving mapping is T(p) = p + v(T(p))."""
    points = grid_points(grid)
    if warp:
        points = points - displacement(points, warp)
    image = sitk.GetImageFromArray(anatomy(points).reshape(grid.GetSize()[::-1])
                                   .astype(np.float32))
    image.CopyInformation(grid)
    return image


def true_mapping(points: np.ndarray, warp: float, iterations: int = 30) -> np.ndarray:
    """T(p) for the warp of :func:`render`: the fixed point of q = p + v(q)."""
    q = points.copy()
    for _ in range(iterations):
        q = points + displacement(q, warp)
    return q


def grid(size=(64, 48, 20), spacing=(2.5, 2.5, 5.0), origin=None) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    extent = np.asarray(size) * np.asarray(spacing)
    image.SetOrigin(tuple(-extent / 2 if origin is None else origin))
    return image
