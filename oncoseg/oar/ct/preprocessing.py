"""CT as the OAR network reads it: HU clipped and scaled (paper 003), on the CT's own voxels or
a working grid.

Paper 003 works at the CT's resolution; a model trained on a working grid (``spacing_mm``, the
demo model's 3 mm) reads the CT resampled to it. Either way the CT is brought to the canonical
axis order (at its own resolution a pure reordering of voxels). Resampling happens on raw
HU, slab by slab (:mod:`oncoseg.tiling`: int16 stays compact, only one slab's block is ever
converted to float); clipping to [-800, 800] and dividing by 800 happens per window inside the
sliding-window loop, so no float copy of a whole CT is ever made. What the task holds at the
CT's full resolution besides the network's grid is the CT and its uint8 label map; probability
maps stay on the network's grid when the CT is large
(:data:`oncoseg.oar.ct.predict.FULL_GRID_PROBABILITY_BYTES`).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.memory import require_memory
from oncoseg.orientation import canonical_grid, canonical_grid_size
from oncoseg.tiling import Geometry, VolumeSource, continue_edges, resample_onto
from oncoseg.validation import check_volume

AIR_HU = -1024.0
# How far an oblique CT's edge continues into the corners of its working grid it never
# acquired (:func:`to_working_grid`). Chosen on one pelvic phantom tilted by 20 and 30 degrees
# (seed 5107; 6 mm kept too much of the cut, an unlimited reach drew vessels across the
# corners and cost the nodal CTV up to 0.03 Dice), checked on three others.
EDGE_CONTINUED_MM = 15.0
# Memory the task takes per CT voxel besides the CT (oncoseg.validation.check_volume): the uint8
# label map on the CT grid and the .seg.nrrd writer's copy of it. Measured with Testing/
# benchmarks/bench_memory.py: peak RSS grows by 3.5-3.6 bytes per CT voxel from 512^3 to 1024^3,
# 2 of them the int16 CT itself. The network's grid and full-resolution probability maps (at
# most FULL_GRID_PROBABILITY_BYTES) come on top.
CT_BYTES_PER_VOXEL = 2.0
# Per voxel of the network's grid (the working grid, or the CT's own at a model trained without
# one): the sliding window's six float32 class maps, the float32 HU and the body mask and labels
# on that grid (an estimate from the arrays' sizes, not a measurement). A working grid's size
# follows the CT's physical extent: 3 mm voxels over a 4 m box are 2.4 billion.
GRID_BYTES_PER_VOXEL = 4.0 * 6 + 4.0 + 2.0


def check_ct(image: sitk.Image, name: str = "ct",
             spacing_mm: tuple[float, float, float] | None = None) -> None:
    """Refuse what cannot be a CT volume, or cannot be segmented in the memory left on the
    network's grid (at ``spacing_mm``, None: the CT's own). Whether its values are Hounsfield
    units is said for every task alike (:func:`oncoseg.quality.modality_flags`)."""
    check_volume(image, name, bytes_per_voxel=CT_BYTES_PER_VOXEL)
    grid = canonical_grid_size(image, spacing_mm)
    where = "its own grid" if spacing_mm is None else \
        f"the model's {' x '.join(f'{s:g}' for s in spacing_mm)} mm working grid"
    require_memory(name, int(np.prod(image.GetSize(), dtype=np.float64) * CT_BYTES_PER_VOXEL
                             + np.prod(grid, dtype=np.float64) * GRID_BYTES_PER_VOXEL),
                   f"segment it on {where} ({' x '.join(map(str, grid))} voxels)")


def working_grid(image: sitk.Image, spacing_mm: tuple[float, float, float] | None
                 ) -> sitk.Image:
    """The network's grid: the CT's box at the model's spacing, or at the CT's own spacing when
    ``spacing_mm`` is None (the paper's way), in the canonical orientation (resampling onto it
    reorders any storage in the same step; nothing is copied first)."""
    return canonical_grid(image, spacing_mm)


def to_working_grid(image: sitk.Image | VolumeSource, grid: sitk.Image) -> np.ndarray:
    """HU on the working grid (z, y, x) as float32, resampled slab by slab. ``image`` may be a
    :class:`VolumeSource` reading a CT file block by block.

    An oblique CT's axis-aligned working grid covers corners the CT never acquired: there the
    CT's edge continues for :data:`EDGE_CONTINUED_MM`, then air. Air right at the edge cut the
    body with a plane the network never saw at a scan's end (an upright CT ends where the
    network's own padding begins): a CT tilted by 30 degrees about the front-back axis lost the
    femoral head the slab cut through (Dice 0.05 against the upright result, 0.92 now) and its
    bladder fell under 0.95 on four phantoms of four (docs/RESULTS.md, "Storage order and
    obliquity"). Nothing computed there comes back onto the CT."""
    source = image if isinstance(image, VolumeSource) else VolumeSource(image)
    hu = resample_onto(source, Geometry.of(grid), "linear", default_value=np.nan,
                       names=("ct", "working grid"))
    # the distance transform's arrays (20 bytes per voxel) are freed before the class maps
    # (GRID_BYTES_PER_VOXEL) are made
    continue_edges(hu, grid.GetSpacing()[::-1], EDGE_CONTINUED_MM, AIR_HU)
    return hu


def hu_window(low: float, high: float):
    """The paper's normalisation as a window transform: clip to [low, high], divide by high."""
    scale = max(abs(low), abs(high))

    def transform(windows: torch.Tensor) -> torch.Tensor:
        return windows.float().clamp_(low, high).div_(scale)

    return transform
