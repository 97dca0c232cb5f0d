"""CT as the OAR network reads it: a working grid, HU clipped and scaled (paper 003).

Resampling to the model's working spacing happens on raw HU (int16 stays compact until a
window is cut); clipping to [-800, 800] and dividing by 800 happens per window inside the
sliding-window loop, so no float copy of a whole CT is ever made.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.geometry import resample_to_reference
from oncoseg.orientation import canonical_grid
from oncoseg.validation import check_volume

AIR_HU = -1024.0
# A CT in Hounsfield units has air near -1000 and bone above +300; an image that never goes
# below this, or never above the other, is not HU (an MR passed as CT, or a rescaled export).
HU_LOWEST_EXPECTED = -500.0
HU_HIGHEST_EXPECTED = 150.0


def check_ct(image: sitk.Image, name: str = "ct") -> list[str]:
    """Refuse what cannot be a CT volume; return warnings for what is probably not HU."""
    check_volume(image, name)
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(np.percentile(array, 0.5)), float(np.percentile(array, 99.5))
    warnings = []
    if low > HU_LOWEST_EXPECTED or high < HU_HIGHEST_EXPECTED:
        warnings.append(f"{name}: intensities {low:.0f} to {high:.0f} are impossible for a CT in "
                        "Hounsfield units (air is near -1000, bone above +300): is this an MR "
                        "or a rescaled image? The result is meaningless unless the input is HU")
    return warnings


def working_grid(image: sitk.Image, spacing_mm: tuple[float, float, float]) -> sitk.Image:
    """The network's grid: the CT's box at the model's spacing, in the canonical orientation
    (resampling onto it reorders any storage in the same step; nothing is copied first)."""
    return canonical_grid(image, spacing_mm)


def to_working_grid(image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """HU on the working grid (z, y, x) as float32; outside the CT reads air."""
    resampled = resample_to_reference(image, grid, "linear", default_value=AIR_HU,
                                      names=("ct", "working grid"))
    return sitk.GetArrayFromImage(resampled).astype(np.float32, copy=False)


def hu_window(low: float, high: float):
    """The paper's normalisation as a window transform: clip to [low, high], divide by high."""
    scale = max(abs(low), abs(high))

    def transform(windows: torch.Tensor) -> torch.Tensor:
        return windows.float().clamp_(low, high).div_(scale)

    return transform
