"""What an ideal segmenter reaches in the storage test's tilted comparison.

`Testing/engine/test_orientation.py` compares each task's result on a phantom acquired tilted
with its result upright (the tilted maps resampled linearly onto the upright grid, at 0.5) and
prints how well the two acquisitions' truths agree the same way. Those truths are binary, each
voxel in or out by its centre, so their agreement is that of a segmenter whose map has no
edge: it is not a ceiling. A segmenter whose map gave each voxel the fraction of it inside the
structure (its partial volume, here 3 x 3 x 3 samples per voxel) is the ideal one; this script
prints both, per label, for the test's phantoms and tilt (or another tilt)::

    .venv/bin/python Testing/helpers/ideal_agreement.py [--tilt x:20] [--samples 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from test_orientation import _dice, _seen_by_both

from oncoseg.geometry import resample_to_reference
from oncoseg.phantoms import brain, gi, pelvis_ct, rectal
from oncoseg.phantoms.common import Storage, case_rng, partial_volume, to_image

# (z, y, x, 3) points -> {label: inside (bool, same shape)}, one phantom case's anatomy
Inside = Callable[[np.ndarray], dict[str, np.ndarray]]


def pelvis(points: np.ndarray) -> dict[str, np.ndarray]:
    _, masks = pelvis_ct.render(points, case_rng(5107, 0), width=pelvis_ct.SPACING[0])
    return {name: np.asarray(mask) > 0.5 for name, mask in masks.items()}


def abdomen(points: np.ndarray) -> dict[str, np.ndarray]:
    _, masks = gi.render(points, case_rng(6107, 0), width=gi.PIXEL)
    return {name: np.asarray(mask) > 0.5 for name, mask in masks.items()}


def brats(points: np.ndarray) -> dict[str, np.ndarray]:
    _, labels, _ = brain.render(points, case_rng(7107, 0), width=min(brain.BrainGeometry().spacing))
    return {name: labels == k for k, name in enumerate(("core", "oedema", "enhancing"), 1)}


def rectum(points: np.ndarray) -> dict[str, np.ndarray]:
    """The tumour as the rectal phantom draws its truth: on the DWI, moved by its motion."""
    g = rectal.RectalPhantomGeometry()
    anatomy, motion = rectal.case_anatomy(case_rng(9107, 0), g)
    _, tumour = anatomy.render(motion.on_dwi(points), width=min(g.dwi_spacing[:2]))
    return {"Rectal tumour": tumour > 0.5}


def grids(storage: Storage) -> dict[str, tuple[Inside, sitk.Image]]:
    """Each task's phantom grid as the storage test renders it."""
    r = rectal.RectalPhantomGeometry()
    b = brain.BrainGeometry()
    return {
        "rectal": (rectum, storage.grid(r.dwi_size, r.dwi_spacing,
                                        centre=(0.0, 0.0, r.dwi_slice_offset_mm))),
        "oar-ct": (pelvis, storage.grid(pelvis_ct.SIZE, pelvis_ct.SPACING)),
        "oar-mr": (abdomen, storage.grid((gi.SIZE, gi.SIZE, gi.SLICES),
                                         (gi.PIXEL, gi.PIXEL, gi.SLICE_THICKNESS_MM))),
        "brain": (brats, storage.grid(b.size, b.spacing)),
    }


def inside_fraction(inside: Inside, grid: sitk.Image, samples: int) -> dict[str, sitk.Image]:
    """Each label's share of every voxel, from samples^3 points spread evenly over it (1: the
    voxel's centre alone, the binary truth)."""
    return {name: to_image(share, grid, sitk.sitkFloat32)
            for name, share in partial_volume(inside, grid, samples).items()}


def agreement(upright: dict[str, sitk.Image], tilted: dict[str, sitk.Image]) -> dict[str, float]:
    """The storage test's comparison: the tilted map resampled linearly onto the upright grid,
    both at 0.5, in the part both fields of view cover."""
    found = {}
    for name, reference in upright.items():
        seen = _seen_by_both(tilted[name], reference)
        moved = resample_to_reference(tilted[name], reference, "linear")
        found[name] = _dice((sitk.GetArrayFromImage(reference) >= 0.5) & seen,
                            (sitk.GetArrayFromImage(moved) >= 0.5) & seen)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tilt", default="x:20", help="axis:degrees (the test's: x:20)")
    parser.add_argument("--samples", type=int, default=3, help="per voxel edge")
    args = parser.parse_args()
    axis, degrees = args.tilt.split(":")
    turn = Rotation.from_euler(axis, float(degrees), degrees=True).as_matrix()
    tilted = grids(Storage("LPS", tuple(turn.ravel())))
    for task, (inside, grid) in grids(Storage()).items():
        for kind, samples in (("binary truths", 1), ("partial volume", args.samples)):
            found = agreement(inside_fraction(inside, grid, samples),
                              inside_fraction(inside, tilted[task][1], samples))
            print(f"{task:7s} {kind:15s}", {n: round(v, 3) for n, v in found.items()},
                  flush=True)


if __name__ == "__main__":
    main()
