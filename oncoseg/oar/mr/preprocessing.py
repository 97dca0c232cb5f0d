"""Pre-processing for the GI-tract network (paper 001): one slice, or a 2.5D slice stack.

A scan is scaled to [0, 1] by its own intensity range (the competition's 16-bit slices span
different ranges per scanner), every slice is resized to the working size (266 x 266 in the
paper, whatever the acquisition matrix), and each slice is the network's input on its own (the
paper's single slice, ``context=0``) or with ``context`` neighbours on each side as channels.
The same functions serve training, threshold tuning and prediction, so the three cannot drift.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from oncoseg.intensity import OUTLIER_SHARE
from oncoseg.orientation import to_canonical
from oncoseg.slices import resize_slices
from oncoseg.validation import check_axial, check_volume

ORGANS = ("stomach", "small_bowel", "large_bowel")  # network channels, in GI_SEGMENTS order
UPPER_PERCENTILE = 99.5


def network_view(image: sitk.Image) -> sitk.Image:
    """The scan as the GI network reads it (prediction, training and evaluation alike): in the
    canonical order, resliced upright when clearly oblique (keeping the scan's matrix:
    :func:`oncoseg.orientation.upright_grid`), since the competition's slices are all upright
    axial ones (a 20 degree tilt cost the large bowel 0.6 Dice unresliced, 0.1 resliced:
    docs/RESULTS.md)."""
    return to_canonical(image, reslice_oblique=True)


def check_mr(image: sitk.Image, name: str = "mr") -> None:
    check_volume(image, name)
    check_axial(image, name, "the GI-tract model reads axial slices: give the axial series")


def scale_scan(volume: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: the scan's 0.1st percentile (its minimum but for a few extreme
    voxels, :data:`oncoseg.intensity.OUTLIER_SHARE`) to its 99.5th percentile (a few bright
    vessels or fat pixels do not compress the organs' contrast). Until 2026-12-07 the minimum:
    thirty voxels far below the scan's range (values wrapped round by a converter that stored
    unsigned data as signed) left every organ out."""
    values = np.asarray(volume, np.float32)
    low, high = (float(v) for v in np.percentile(
        values, (100 * OUTLIER_SHARE, UPPER_PERCENTILE)))
    if high <= low:
        high = float(values.max())
    return np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)


def working_volume(volume: np.ndarray, size: int) -> torch.Tensor:
    """(z, y, x) scaled intensities to (z, size, size) float32."""
    slices = torch.from_numpy(np.ascontiguousarray(volume, np.float32))[:, None]
    return resize_slices(slices, (size, size))[:, 0]


def neighbours(slice_count: int, context: int, stride: int) -> np.ndarray:
    """(z, 2 context + 1) slice indices of each slice's stack, clamped at the scan's ends (the
    edge slice repeats, as nearest-neighbour padding would)."""
    offsets = np.arange(-context, context + 1) * stride
    return np.clip(np.arange(slice_count)[:, None] + offsets[None], 0, slice_count - 1)


def stacks(volume: torch.Tensor | np.ndarray, slices: np.ndarray | list[int], context: int,
           stride: int, mean: float, std: float) -> torch.Tensor:
    """Network input (B, 2 context + 1, S, S) float32 for ``slices`` of a working volume (a
    tensor, or the float16 array training keeps: only the slices used are converted)."""
    index = neighbours(volume.shape[0], context, stride)[np.asarray(slices)]
    if isinstance(volume, np.ndarray):
        selected = torch.from_numpy(volume[index].astype(np.float32))
    else:
        selected = volume[torch.from_numpy(index)].float()
    return (selected - mean) / std


def smooth_labels(masks: torch.Tensor, probability: float) -> torch.Tensor:
    """The paper's label smoothing: every 3 x 3 neighbour of an organ pixel joins the organ
    with ``probability``, each (pixel, neighbour) pair drawn independently. Masks (K, H, W)
    of 0/1; only grows them (a missed organ costs more than a generous margin).

    A pixel with n organ pixels among its 8 neighbours therefore joins with probability
    1 - (1 - p)^n: one count and one draw per pixel instead of one draw per pair.
    """
    ring = torch.ones(1, 1, 3, 3, dtype=masks.dtype)
    ring[0, 0, 1, 1] = 0
    neighbours = F.conv2d(masks[:, None], ring, padding=1)[:, 0]
    joins = torch.rand(masks.shape) < 1.0 - (1.0 - probability) ** neighbours
    return torch.maximum(masks, (joins & (neighbours > 0)).to(masks.dtype))


def random_crop(image: torch.Tensor, masks: torch.Tensor, max_px: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove 0..max_px pixels from each border (uniform, each border on its own) and resize
    back: (C, S, S) image and (K, S, S) masks."""
    if max_px <= 0:
        return image, masks
    size = tuple(image.shape[-2:])
    top, bottom, left, right = (int(v) for v in torch.randint(0, max_px + 1, (4,)))
    rows = slice(top, size[0] - bottom)
    columns = slice(left, size[1] - right)
    image = resize_slices(image[None, :, rows, columns], size)[0]
    masks = (resize_slices(masks[None, :, rows, columns], size)[0] >= 0.5).to(masks.dtype)
    return image, masks
