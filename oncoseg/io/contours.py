"""Closed planar contours <-> masks on an image grid (RT structure sets).

Contours are traced per slice at the 0.5 level between pixel centres (sub-pixel, marching
squares) and filled back with the pixel-centre rule, so a mask survives the round trip. Several
contours on one slice combine by even-odd (XOR): a contour inside another is a hole, as RT
planning systems draw them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import SimpleITK as sitk
from skimage.draw import polygon2mask
from skimage.measure import find_contours


def _index_to_lps(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * image.GetSpacing()
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def mask_to_contours(mask: np.ndarray, image: sitk.Image) -> list[tuple[int, np.ndarray]]:
    """(slice index k, points (n, 3) in LPS mm) for every closed contour of a (z, y, x) mask."""
    matrix = _index_to_lps(image)
    contours = []
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        padded = np.pad(mask[k].astype(np.float32), 1)
        for rows_cols in find_contours(padded, 0.5):
            if len(rows_cols) < 4:
                continue
            j, i = rows_cols[:-1, 0] - 1, rows_cols[:-1, 1] - 1  # drop the repeated end point
            ijk = np.stack([i, j, np.full_like(i, k), np.ones_like(i)], axis=1)
            contours.append((int(k), (ijk @ matrix.T)[:, :3]))
    return contours


def contours_to_mask(contours: Iterable[np.ndarray], image: sitk.Image,
                     tolerance_slices: float = 0.25) -> tuple[np.ndarray, int]:
    """Fill LPS contours into a (z, y, x) mask on ``image``'s grid.

    Returns the mask and how many contours lay off every slice plane (by more than
    ``tolerance_slices``); those are not drawn.
    """
    size = image.GetSize()
    mask = np.zeros(size[::-1], bool)
    inverse = np.linalg.inv(_index_to_lps(image))
    off_plane = 0
    for points in contours:
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
        ijk = (homogeneous @ inverse.T)[:, :3]
        k = float(np.median(ijk[:, 2]))
        slice_index = round(k)
        if abs(k - slice_index) > tolerance_slices or not 0 <= slice_index < size[2]:
            off_plane += 1
            continue
        polygon = np.stack([ijk[:, 1], ijk[:, 0]], axis=1)  # (row, col)
        mask[slice_index] ^= polygon2mask((size[1], size[0]), polygon)
    return mask, off_plane
