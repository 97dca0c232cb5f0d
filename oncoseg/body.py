"""Where the patient is, so that no organ or tumour is reported in the air around them.

A network that sees an unusual field of view (a 20-slice CT thinner than its window, a volume
padded with air) can call air "bowel". Organs at risk and tumours lie inside the body by
definition, so every segmentation task keeps its results inside the body mask of its own
reference image (radiotherapy planning contours its organs inside the External/BODY structure
the same way):

- CT: tissue above -500 HU, gas pockets and lungs inside filled slice by slice, the largest
  connected part (the trunk; a table or a separate arm is not where these organs lie);
- skull-stripped brain MR (BraTS): the voxels where any sequence is non-zero.

Arrays are (z, y, x) in the canonical order of :mod:`oncoseg.orientation`, so axis 0 runs
along the body's long axis and slices of axis 0 are axial.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oncoseg.postprocess import largest_component

CT_TISSUE_HU = -500.0


def ct_body(hu: np.ndarray, threshold: float = CT_TISSUE_HU) -> np.ndarray:
    """The body in a CT (z, y, x) in Hounsfield units, as a boolean mask."""
    return body_above(hu, threshold)


def body_above(volume: np.ndarray, threshold: float) -> np.ndarray:
    """The voxels above ``threshold``, gas pockets inside filled slice by slice, the largest
    6-connected part: the body in any volume whose background lies below ``threshold``."""
    tissue = np.asarray(volume) > threshold
    if not tissue.any():
        return tissue
    filled = np.stack([ndimage.binary_fill_holes(axial) for axial in tissue])
    return largest_component(filled, connectivity=6)


def nonzero_body(channels: np.ndarray) -> np.ndarray:
    """Where any channel (C, z, y, x) of a skull-stripped MR is non-zero."""
    return np.any(np.asarray(channels) != 0, axis=0)
