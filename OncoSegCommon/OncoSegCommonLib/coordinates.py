"""Slicer is RAS, ITK is LPS: the one place the two meet.

Both conventions share the superior axis and negate the first two, so the conversion is its own
inverse. It applies to points (3-vectors), direction matrices (3x3, acting on the left) and
homogeneous transforms (4x4).
"""

from __future__ import annotations

import numpy as np

_FLIP3 = np.diag([-1.0, -1.0, 1.0])
_FLIP4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_lps(value: np.ndarray) -> np.ndarray:
    """Convert a point, a 3x3 direction matrix or a 4x4 index-to-space matrix RAS <-> LPS."""
    array = np.asarray(value, float)
    if array.shape == (3,):
        return _FLIP3 @ array
    if array.shape == (3, 3):
        return _FLIP3 @ array
    if array.shape == (4, 4):
        return _FLIP4 @ array
    raise ValueError(f"expected a 3-vector, 3x3 or 4x4 matrix, got shape {array.shape}")
