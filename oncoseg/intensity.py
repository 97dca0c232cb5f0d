"""Intensities as the networks read them: scales that a few extreme voxels cannot sway.

The rectal (paper 000) and staging (paper 002) methods standardise each sequence to mean 0 and
standard deviation 1 over its voxels. Taken literally, a handful of extreme voxels sets the
scale for the whole volume: thirty voxels at twenty times a diffusion volume's maximum (a
spike, signal piled up by EPI distortion at rectal gas, a burned-in marker) raised the
b1000's standard deviation fourfold and the rectal demo lost the tumour completely (Dice 0.000
against its own result without them; one such voxel: 0.893), and the staging demo's P(T3) fell
from 0.016 to 0.001 (docs/RESULTS.md, "Extreme voxels"). Both tails beyond
:data:`OUTLIER_SHARE` of the voxels are therefore clipped before the mean and standard
deviation are taken, and in the values the network reads, as nnU-Net clips CT to its
foreground's 0.5th-99.5th percentiles: a volume without such voxels is read as before but for
its brightest and darkest 0.1 % (measured on the demo models: docs/RESULTS.md). The same
tails bound what the brain's networks read (:func:`tail_bounds`; their scale, the median, is
robust already), where the GI scale starts, and what the quality check's neighbour
correlation is taken of (:func:`clip_tails`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oncoseg.errors import InputError

# Each tail's share of the voxels clipped: robust to up to one voxel in a thousand at any value.
OUTLIER_SHARE = 1e-3
# Part of the keys of arrays prepared for training (oncoseg.datasets.cache.case_key): arrays
# whose intensities were scaled before the tails were clipped (2026-12-07) are not reused.
INTENSITY_READING = f"extreme tails of {OUTLIER_SHARE:g} clipped"


def tail_bounds(values: np.ndarray) -> tuple[float, float]:
    """The values below and above which lie :data:`OUTLIER_SHARE` of ``values`` each (taken
    in the values' own type: no float64 copy of a large volume)."""
    low, high = np.quantile(np.asarray(values).ravel(), (OUTLIER_SHARE, 1 - OUTLIER_SHARE))
    return float(low), float(high)


def clip_tails(values: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """A float64 copy of ``values`` with either extreme :data:`OUTLIER_SHARE` clipped (or
    clipped to ``bounds``): what a statistic of the whole volume (a mean, a spread, a
    correlation) should be taken of."""
    clipped = np.array(values, np.float64)
    return np.clip(clipped, *(bounds or tail_bounds(values)), out=clipped)


@dataclass(frozen=True)
class ZScore:
    """The clipping bounds and the clipped values' mean and standard deviation of one volume."""

    low: float
    high: float
    mean: float
    std: float

    @classmethod
    def of(cls, values: np.ndarray, name: str) -> ZScore:
        """``values``' own z-score; ``name`` says which input is refused if it is constant."""
        low, high = tail_bounds(values)
        clipped = clip_tails(values, (low, high))
        std = float(clipped.std())
        if std == 0:
            others = int(np.count_nonzero(np.asarray(values) != low))
            raise InputError(name, f"holds no image: all but {others} of its "
                             f"{np.asarray(values).size} voxels have the value {low:g}, so "
                             "it cannot be standardised")
        return cls(low, high, float(clipped.mean()), std)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` clipped to the bounds and standardised, float32."""
        standardised = np.clip(np.asarray(values, np.float32), self.low, self.high)
        standardised -= np.float32(self.mean)  # in place: one volume-sized array, not three
        standardised /= np.float32(self.std)
        return standardised
