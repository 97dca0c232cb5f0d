"""Training samples as the RectalSeg paper draws them.

Per case, N tumour voxels and N background voxels; the background is split into three regions
so that the hard places are seen often enough: RB1, a 1 cm ring around the tumour (spherical
dilation, in millimetres on the real, anisotropic grid); RB2, voxels bright at high b
(standardised b1000 > 2, i.e. mean + 2 SD) outside RB1; RB3, everything else. RB1, RB2 and RB3
contribute N/4, N/2 and N/4 voxels. Each sample is the in-plane M x M patch around its voxel,
one channel per sequence, labelled with the centre voxel's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SamplingRegions:
    tumour: np.ndarray
    ring: np.ndarray  # RB1
    bright: np.ndarray  # RB2
    rest: np.ndarray  # RB3


def background_regions(tumour: np.ndarray, high_b: np.ndarray, spacing_zyx: Sequence[float],
                       ring_mm: float = 10.0, bright_threshold: float = 2.0) -> SamplingRegions:
    """The paper's RB1 / RB2 / RB3 around a tumour mask; ``high_b`` is standardised."""
    tumour = np.asarray(tumour, bool)
    distance = ndimage.distance_transform_edt(~tumour, sampling=spacing_zyx)
    ring = (distance <= ring_mm) & ~tumour
    bright = (np.asarray(high_b) > bright_threshold) & ~tumour & ~ring
    rest = ~tumour & ~ring & ~bright
    return SamplingRegions(tumour, ring, bright, rest)


def _draw(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` voxel indices (z, y, x) from a mask; with replacement only if it is smaller."""
    where = np.flatnonzero(mask)
    if count == 0 or where.size == 0:
        return np.empty((0, 3), np.int64)
    chosen = rng.choice(where, size=count, replace=where.size < count)
    return np.stack(np.unravel_index(chosen, mask.shape), axis=1)


def _background_counts(per_class: int) -> dict[str, int]:
    """The paper's N/4 RB1, N/2 RB2 and the rest of N from RB3."""
    counts = {"ring": per_class // 4, "bright": per_class // 2}
    counts["rest"] = per_class - counts["ring"] - counts["bright"]
    return counts


def sample_voxels(regions: SamplingRegions, per_class: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(voxels (n, 3) as z, y, x; labels (n,)): N tumour, N/4 RB1, N/2 RB2, N/4 RB3.

    A background region that is empty in a case gives its share to RB3, so every case yields
    2N samples.
    """
    counts = _background_counts(per_class)
    if not regions.bright.any():
        counts["rest"] += counts.pop("bright")
    if not regions.ring.any():
        counts["rest"] += counts.pop("ring")
    parts = [_draw(regions.tumour, per_class, rng)]
    parts += [_draw(getattr(regions, name), n, rng) for name, n in counts.items()]
    voxels = np.concatenate(parts)
    labels = np.concatenate([np.ones(len(parts[0]), np.int64),
                             np.zeros(len(voxels) - len(parts[0]), np.int64)])
    return voxels, labels


def sample_weights(regions: SamplingRegions, per_class: int, weighting: str) -> np.ndarray:
    """How much each of :func:`sample_voxels`' samples counts in the loss (same order).

    'paper': all alike. 'voxel-share': the N tumour and N/4 RB1 samples together still count
    1.25 N, shared between the two regions as their voxels are, so that the tumour's edge is
    seen as often from outside as from inside (the paper's counts see its outer voxel layer
    13-18 times as often as the layer just outside, and the 0.5 edge moves a voxel outward);
    RB2 and RB3 as the paper."""
    counts = _background_counts(per_class)
    weights = np.ones(2 * per_class, np.float32)
    tumour_voxels, ring_voxels = int(regions.tumour.sum()), int(regions.ring.sum())
    if weighting == "paper" or not ring_voxels or not tumour_voxels:
        return weights
    near = per_class + counts["ring"]
    weights[:per_class] = near * tumour_voxels / (tumour_voxels + ring_voxels) / per_class
    ring = slice(per_class, per_class + counts["ring"])  # drawn right after the tumour
    weights[ring] = near * ring_voxels / (tumour_voxels + ring_voxels) / counts["ring"]
    return weights


def extract_patches(channels: np.ndarray, voxels: np.ndarray, size: int) -> np.ndarray:
    """In-plane patches (n, C, size, size) around voxels of a (C, z, y, x) volume.

    Outside the image counts as zero (the standardised images' mean), so border voxels get
    patches like any other.
    """
    if size % 2 == 0:
        raise ValueError("the patch size must be odd, so that a voxel is its centre")
    half = size // 2
    padded = np.pad(channels, ((0, 0), (0, 0), (half, half), (half, half)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    z, y, x = voxels[:, 0], voxels[:, 1], voxels[:, 2]
    return np.ascontiguousarray(windows[:, z, y, x].transpose(1, 0, 2, 3))
