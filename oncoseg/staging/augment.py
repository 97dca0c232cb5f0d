"""Training- and test-time augmentation of a staging volume (D, S, S), the same in-plane
transform for every slice (the slices of one volume stay aligned).

Paper 002 lists elastic, optical and grid distortion, shift / scale / rotate, crop, horizontal
flip, CLAHE, brightness, contrast and motion / median / Gaussian blur (Albumentations). Here:
one resampling does shift, scale (which is also the random crop), rotation and a smooth elastic
displacement (covering the three distortions); then flip, brightness and contrast, and a
Gaussian blur. CLAHE and motion / median blur, which target photographs and whose effect on
z-scored MR the paper does not isolate, are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentRanges:
    shift: float = 0.0625  # fraction of the field of view
    scale: float = 0.10
    rotate_deg: float = 15.0
    elastic_px: float = 4.0  # peak displacement of the smooth field, in pixels
    elastic_grid: int = 5  # control points per side of the random field
    flip: float = 0.5
    brightness: float = 0.2  # added, in standard deviations of the z-scored volume
    contrast: float = 0.2
    blur_probability: float = 0.3
    blur_sigma_px: float = 1.0


TRAINING = AugmentRanges()
# test time: the geometry varies a little, intensities not at all
TEST_TIME = AugmentRanges(shift=0.03, scale=0.05, rotate_deg=5.0, elastic_px=0.0, flip=0.5,
                          brightness=0.0, contrast=0.0, blur_probability=0.0)


def _uniform(generator: torch.Generator, bound: float) -> float:
    return float((torch.rand((), generator=generator) * 2 - 1) * bound)


def sampling_grid(size: int, ranges: AugmentRanges, generator: torch.Generator
                  ) -> torch.Tensor:
    """(1, S, S, 2) normalised sampling coordinates of one random in-plane transform."""
    angle = math.radians(_uniform(generator, ranges.rotate_deg))
    scale = 1.0 + _uniform(generator, ranges.scale)
    tx, ty = (_uniform(generator, 2 * ranges.shift) for _ in range(2))
    flip = -1.0 if float(torch.rand((), generator=generator)) < ranges.flip else 1.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[flip * cos, -sin, tx], [flip * sin, cos, ty]]])
    grid = F.affine_grid(theta, [1, 1, size, size], align_corners=False)
    if ranges.elastic_px > 0:
        coarse = torch.randn((1, 2, ranges.elastic_grid, ranges.elastic_grid),
                             generator=generator) * (2 * ranges.elastic_px / size)
        field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    return grid


def gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """In-plane Gaussian blur of (D, S, S), separable, reflect-padded."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=volume.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    out = volume[:, None]
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return out[:, 0]


def augment(volume: torch.Tensor, ranges: AugmentRanges, generator: torch.Generator
            ) -> torch.Tensor:
    """One random augmentation of a z-scored (D, S, S) volume; pixels pulled from outside
    the field of view mirror the image (Albumentations' default border), so no dark frame
    appears that could pass for anatomy."""
    depth, size, _ = volume.shape
    grid = sampling_grid(size, ranges, generator).expand(depth, -1, -1, -1)
    moved = F.grid_sample(volume[:, None], grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)[:, 0]
    if ranges.brightness or ranges.contrast:
        gain = 1.0 + _uniform(generator, ranges.contrast)
        moved = moved * gain + _uniform(generator, ranges.brightness)
    if ranges.blur_probability and float(torch.rand((), generator=generator)) < \
            ranges.blur_probability:
        sigma = float(torch.rand((), generator=generator)) * ranges.blur_sigma_px
        if sigma > 0.2:
            moved = gaussian_blur(moved, sigma)
    return moved
