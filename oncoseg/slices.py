"""In-plane resizing of slice stacks, shared by the 2D and 2.5D tasks (GI tract, staging)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_slices(slices: torch.Tensor, size: tuple[int, int],
                  antialias: bool = False) -> torch.Tensor:
    """(N, C, H, W) to (N, C, *size), bilinear (images, probabilities, and masks thresholded
    at 0.5 afterwards); ``antialias`` low-passes first when shrinking."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    return F.interpolate(slices, size=size, mode="bilinear", align_corners=False,
                         antialias=antialias)
