"""The in-plane spacing the rectal network reads at.

The patch classifier reads an M x M in-plane patch (M = 21): at 2 mm it sees 42 mm of anatomy,
at 1 mm 21 mm. Scanners reconstruct DWI at 1-2.5 mm in-plane by vendor and protocol (some
interpolate to a finer matrix), so the same acquisition stored on another grid gave another
tumour: the demo model, trained at 2 mm, gave DSC 0.25-0.37 and about 2 mL instead of 11 on
phantoms whose b0 and high b were resampled to 1 mm (docs/RESULTS.md, "DWI stored at another
in-plane spacing"). So the network reads the channels resampled in-plane to the spacing it was
trained at, as nnU-Net resamples every case to its plan's target spacing, and its probability
comes back onto the b0 grid, where the candidates are found. The slices stay as they are: the
network never reads across them.

``in_plane_mm`` (a setting the model file fixes): :data:`NATIVE` reads the b0 grid as stored
(paper 000 states no resampling, over DWI protocols of 1.3-3.2 mm in-plane, its Table 1); a
number, that spacing; :data:`MEDIAN` (training's default) the median in-plane spacing of the
training cases, recorded in the model file as a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.geometry import grid_with_spacing
from oncoseg.spacing import (
    MEDIAN,
    NATIVE,
    SAME_SPACING,
    same_spacing,
    shared_training_spacing,
)


def training_in_plane_mm(setting: float | str, spacings_zyx: Sequence[Sequence[float]]
                         ) -> float | str:
    """What a training run reads at: :data:`MEDIAN` resolved over its cases' in-plane
    spacings (both in-plane axes of every case), a number or :data:`NATIVE` as given."""
    if setting != MEDIAN:
        return setting
    return round(float(np.median([s for zyx in spacings_zyx for s in zyx[1:]])), 4)


def model_in_plane_mm(setting: float | str, provenance: Mapping[str, Any]) -> float | None:
    """The spacing a model reads at (None: the b0 grid as stored). A model file fixes the
    setting; one written before it existed leaves :data:`MEDIAN`, and then reads at the one
    in-plane spacing its training cases shared (its recorded training geometry: the two finest
    axes, equal in every case), or as stored where they differed."""
    if setting == NATIVE:
        return None
    if setting != MEDIAN:
        return float(setting)
    shared = shared_training_spacing(provenance, axes=2)  # sorted: the in-plane ones
    if shared is None or not np.isclose(shared[0], shared[1], rtol=SAME_SPACING):
        return None
    return float(shared[0])


def in_plane_grid(reference: sitk.Image, in_plane_mm: float | None) -> sitk.Image | None:
    """The grid the network reads for a b0 ``reference`` (None: the b0 grid itself): the
    same box and slices at ``in_plane_mm`` in-plane."""
    if in_plane_mm is None:
        return None
    x, y, z = reference.GetSpacing()
    if same_spacing((x, y), (in_plane_mm, in_plane_mm)):
        return None
    return grid_with_spacing(reference, (in_plane_mm, in_plane_mm, z))


def note(reference: sitk.Image, in_plane_mm: float) -> str:
    """What a result says when the network read the b0 at a spacing other than its own."""
    x, y, _ = reference.GetSpacing()
    return (f"the network read dwi_b0 at {in_plane_mm:g} mm in-plane (the model's in_plane_mm; "
            f"the b0 is stored at {x:.3g} x {y:.3g} mm); its probability map lies on the b0 "
            "grid")
