"""From the probability map to the tumour: threshold, candidate components, the reader's pick.

The paper keeps the largest component of p >= 0.5, and names its failure: sometimes the largest
component is not the tumour (a bright node, the bladder wall). So every component is a
candidate, listed with its volume and its mean and maximum probability, and the one kept is
the largest by default, the one under a seed point when a reader gives one, or all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import image_like
from oncoseg.postprocess import Component, component_at, components

KEEP_CHOICES = ("largest", "all")


@dataclass
class Candidates:
    labels: np.ndarray  # (z, y, x) component index per voxel, 0 outside; 1 = largest
    components: list[Component]  # largest first
    selected: list[int]  # component indices kept as the tumour

    def mask(self, selected: Sequence[int] | None = None) -> np.ndarray:
        """The kept components (or the ones given) as a boolean mask."""
        chosen = self.selected if selected is None else list(selected)
        return np.isin(self.labels, chosen) if chosen else np.zeros(self.labels.shape, bool)

    def as_dicts(self) -> list[dict]:
        return [dict(c.as_dict(), selected=c.index in self.selected) for c in self.components]

    def onto_grid(self, source: sitk.Image, grid: sitk.Image) -> Candidates:
        """The same candidates with their voxels on ``grid`` (``source``: the grid they were
        found on, its canonical form); components are physical and stay as they are."""
        from oncoseg.orientation import onto_grid

        labels = onto_grid(image_like(self.labels.astype(np.int32), source), grid)
        return replace(self, labels=sitk.GetArrayFromImage(labels))


def find_candidates(probability: sitk.Image, threshold: float = 0.5, keep: str = "largest",
                    seed_lps_mm: Sequence[float] | None = None,
                    connectivity: int = 26) -> Candidates:
    """Components of ``probability >= threshold`` and which of them are the tumour."""
    if not 0.0 < threshold <= 1.0:
        raise InputError("threshold", f"{threshold} is not in (0, 1]")
    if keep not in KEEP_CHOICES:
        raise InputError("keep", f"'{keep}' is not one of {', '.join(KEEP_CHOICES)}")
    mask = sitk.GetArrayViewFromImage(probability) >= threshold
    mask_image = image_like(mask.astype(np.uint8), probability)
    labels, found = components(mask_image, probability, connectivity)
    if seed_lps_mm is not None:
        hit = component_at(labels, probability, seed_lps_mm)
        if hit == 0:
            raise InputError("seed point", f"{tuple(round(float(v), 1) for v in seed_lps_mm)} "
                             f"(LPS mm) is not inside any candidate (p >= {threshold}); place it "
                             "inside the tumour's probability region")
        selected = [hit]
    elif keep == "all":
        selected = [c.index for c in found]
    else:
        selected = [found[0].index] if found else []
    return Candidates(labels, found, selected)


def candidates_from_probability(probability: np.ndarray, reference: sitk.Image, config,
                                seed_lps_mm: Sequence[float] | None = None
                                ) -> tuple[sitk.Image, Candidates]:
    """The probability map (z, y, x) as an image on the reference grid, and its candidates
    under a :class:`~oncoseg.rectal.config.RectalConfig`'s threshold, keep rule and
    connectivity."""
    image = image_like(probability, reference)
    return image, find_candidates(image, config.threshold, config.keep, seed_lps_mm,
                                  config.connectivity)

