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

from oncoseg.geometry import grid_with_spacing, image_like, resample_to_reference
from oncoseg.rectal.config import MEDIAN, NATIVE

# spacings closer than this (relative) are the same: no resampling
SAME_SPACING = 1e-3


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
    spacing = provenance.get("dataset", {}).get("geometry", {}).get("spacing_mm")
    if not spacing:
        return None
    low, high = np.asarray(spacing["min"], float), np.asarray(spacing["max"], float)
    shared = np.allclose(low[:2], high[:2], rtol=SAME_SPACING) and \
        np.isclose(low[0], low[1], rtol=SAME_SPACING)
    return float(low[0]) if shared else None


def in_plane_grid(reference: sitk.Image, in_plane_mm: float | None) -> sitk.Image | None:
    """The grid the network reads for a b0 ``reference`` (None: the b0 grid itself): the
    same box and slices at ``in_plane_mm`` in-plane."""
    if in_plane_mm is None:
        return None
    x, y, z = reference.GetSpacing()
    if all(abs(s - in_plane_mm) <= SAME_SPACING * in_plane_mm for s in (x, y)):
        return None
    return grid_with_spacing(reference, (in_plane_mm, in_plane_mm, z))


def arrays_onto(arrays: np.ndarray, source: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Arrays (..., z, y, x) on ``source``'s grid resampled linearly onto ``grid``."""
    flat = arrays.reshape(-1, *arrays.shape[-3:])
    moved = [sitk.GetArrayFromImage(resample_to_reference(
        image_like(np.ascontiguousarray(a, np.float32), source), grid, "linear"))
        for a in flat]
    return np.stack(moved).reshape(*arrays.shape[:-3], *moved[0].shape).astype(np.float32)


def note(reference: sitk.Image, in_plane_mm: float) -> str:
    """What a result says when the network read the b0 at a spacing other than its own."""
    x, y, _ = reference.GetSpacing()
    return (f"the network read dwi_b0 at {in_plane_mm:g} mm in-plane (the model's in_plane_mm; "
            f"the b0 is stored at {x:.3g} x {y:.3g} mm); its probability map lies on the b0 "
            "grid")
