"""The brain task's inputs, made into what the networks read: the present sequences on one
grid (T1c's, or the first present sequence's), in the canonical (LPS) axis order of
:mod:`oncoseg.orientation`, each divided by the median
of its non-zero voxels times a constant (paper 004, section 3.1); absent sequences are zeros
and flagged absent. A model with a spacing (``spacing_mm``, :mod:`oncoseg.spacing`) reads them
resampled to it, as the paper's networks read BraTS's volumes, which its organisers resample to
1 mm: a network trained at one spacing and given a scan at half of it sees a brain twice the
size. Each must be skull-stripped, as BraTS provides them (paper 004, section
4): the method reads its non-zero voxels as the brain (:func:`check_skull_stripped`).

Array axes (z, y, x) after orienting to LPS are (inferior-superior, anterior-posterior,
right-left): axial slices stack along z, coronal along y, sagittal along x.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from oncoseg.body import nonzero_body
from oncoseg.brain.config import SEQUENCES
from oncoseg.errors import InputError
from oncoseg.geometry import (
    arrays_onto,
    grid_with_spacing,
    image_like,
    resample_to_reference,
    same_grid,
    voxel_volume_ml,
)
from oncoseg.intensity import tail_bounds
from oncoseg.orientation import onto_grid, to_canonical
from oncoseg.spacing import same_spacing
from oncoseg.validation import check_volume

AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass
class BrainVolume:
    array: np.ndarray  # (K, z, y, x) float32, LPS axis order, on ``work``
    present: np.ndarray  # (K,) bool
    grid: sitk.Image  # the reference grid as given (outputs go back onto it)
    oriented: sitk.Image  # the reference grid in LPS axis order
    reference_role: str
    messages: list[str]
    work: sitk.Image  # the array's grid: ``oriented`` itself unless a spacing asks
    body: np.ndarray  # (z, y, x) on ``oriented``: where any sequence is non-zero

    @property
    def used(self) -> list[str]:
        return [s for s, p in zip(SEQUENCES, self.present, strict=True) if p]

    @property
    def resampled(self) -> bool:
        """Whether the networks read another grid than the reference's own."""
        return self.work is not self.oriented

    def onto_oriented(self, arrays: np.ndarray) -> np.ndarray:
        """Maps (..., z, y, x) on the working grid carried onto the oriented reference grid
        (linear): the networks' class probabilities, before any label is chosen."""
        return arrays_onto(arrays, self.work, self.oriented) if self.resampled else arrays


def working_grid(oriented: sitk.Image, spacing_mm: tuple[float, float, float] | None
                 ) -> sitk.Image:
    """The grid the networks read: the oriented reference itself, or its box at
    ``spacing_mm`` (x, y, z, LPS axis order), its direction kept (an oblique scan is read
    along its own axes, as the networks always read it)."""
    if spacing_mm is None or same_spacing(oriented.GetSpacing(), spacing_mm):
        return oriented
    return grid_with_spacing(oriented, spacing_mm)


def spacing_note(volume: BrainVolume) -> str:
    """What a result says when the networks read another grid than the reference's."""
    read, stored = (" x ".join(f"{s:.3g}" for s in g.GetSpacing())
                    for g in (volume.work, volume.oriented))
    return (f"the networks read the sequences at {read} mm (the model's spacing_mm; the "
            f"{volume.reference_role} is stored at {stored} mm); the results lie on the "
            f"{volume.reference_role} grid")


# The largest adult intracranial volumes are about 2 L: non-zero voxels beyond this are more
# than a brain, i.e. skull, scalp or the scan's background noise.
MAX_BRAIN_ML = 2500.0
# A skull-stripped volume is 0 along its left, right, front and back faces but where the brain
# touches them (a volume cropped to the brain); a scan with its background is not.
MAX_SIDE_FACE_SHARE = 0.5


def check_skull_stripped(array: np.ndarray, voxel_ml: float, name: str) -> None:
    """Refuse a sequence that still holds skull, scalp or background (``array``: z, y, x in
    LPS order): the method takes its non-zero voxels for the brain (the median it divides by,
    where results may lie), so an unstripped head gave oedema in the scalp without a word (a
    brain phantom given a scalp and background noise: oedema 129 mL instead of 77, its Dice
    against the truth 0.74 instead of 0.95, exit 0)."""
    inside = array != 0
    volume_ml = float(np.count_nonzero(inside)) * voxel_ml
    sides = np.concatenate([inside[:, (0, -1), :].ravel(), inside[:, :, (0, -1)].ravel()])
    side_share = float(sides.mean()) if sides.size else 0.0
    if volume_ml <= MAX_BRAIN_ML and side_share <= MAX_SIDE_FACE_SHARE:
        return
    if volume_ml > MAX_BRAIN_ML:
        found = f"is not skull-stripped: {volume_ml:,.0f} mL of it is non-zero"
    else:
        found = (f"is not skull-stripped, or is cut inside the brain: {side_share:.0%} of its "
                 "left, right, front and back faces is non-zero")
    raise InputError(name, f"{found} (a brain: at most about {MAX_BRAIN_ML:,.0f} mL, with "
                     "zeros round it). The method reads whole skull-stripped brains, every "
                     "voxel outside the brain 0, as BraTS provides them (paper 004): strip the "
                     "skull first, e.g. with HD-BET or SynthStrip (in 3D Slicer: the "
                     "HDBrainExtraction or SwissSkullStripper extension), and give the whole "
                     "brain")


def normalise(array: np.ndarray, constant: float, name: str) -> np.ndarray:
    """Divide by the median of the non-zero voxels (stabler than the mean, which the tumour
    sways), times ``constant``; the brain's extreme 0.1 % on either side clipped first, as for
    the z-scored tasks (:mod:`oncoseg.intensity`): a spike would otherwise reach the networks
    at many times any tissue's value."""
    inside = array != 0
    nonzero = array[inside]
    median = float(np.median(nonzero)) if nonzero.size else 0.0
    if median <= 0:
        raise InputError(name, "has no positive median over its non-zero voxels; is it a "
                         "skull-stripped MR volume?")
    low, high = tail_bounds(nonzero)
    clipped = np.where(inside, np.clip(array, low, high), 0)  # the background stays 0
    return (clipped * (constant / median)).astype(np.float32)


def reference_role(images: Mapping[str, sitk.Image | None]) -> str:
    present = [s for s in SEQUENCES if images.get(s) is not None]
    if not present:
        raise InputError("inputs", f"none of {', '.join(SEQUENCES)} was given; at least one "
                         "sequence is needed")
    return "t1c" if "t1c" in present else present[0]


def prepare_volume(images: Mapping[str, sitk.Image | None], constant: float = 1.0,
                   drop: Sequence[str] = (),
                   spacing_mm: tuple[float, float, float] | None = None) -> BrainVolume:
    """``drop``: sequences to leave out even when given; ``spacing_mm``: the networks' grid's
    spacing (None: the reference grid's own)."""
    images = {k: (None if k in drop else v) for k, v in images.items()}
    role = reference_role(images)
    grid = images[role]
    messages = []
    for name in SEQUENCES:
        if images.get(name) is not None:
            check_volume(images[name], name)
    oriented = to_canonical(grid)
    shape = sitk.GetArrayViewFromImage(oriented).shape
    array = np.zeros((len(SEQUENCES), *shape), np.float32)
    present = np.zeros(len(SEQUENCES), bool)
    for k, name in enumerate(SEQUENCES):
        image = images.get(name)
        if image is None:
            continue
        if not same_grid(image, grid, tolerance=1e-3):
            image = resample_to_reference(sitk.Cast(image, sitk.sitkFloat32), grid, "linear",
                                          names=(name, role))
            messages.append(f"{name} was resampled onto the {role} grid")
        moved = sitk.GetArrayFromImage(to_canonical(image)).astype(np.float32)
        check_skull_stripped(moved, voxel_volume_ml(image), name)
        array[k] = normalise(moved, constant, name)
        present[k] = True
    missing = [s for s, p in zip(SEQUENCES, present, strict=True) if not p]
    if missing:
        messages.append(f"sequences used: {', '.join(s for s in SEQUENCES if s not in missing)}"
                        f" ({', '.join(missing)} missing: the model uses the subnetworks it has)")
    body = nonzero_body(array)
    work = working_grid(oriented, spacing_mm)
    if work is not oriented:  # normalised first: the same median whatever the grid
        array = arrays_onto(array, oriented, work)
    volume = BrainVolume(array, present, grid, oriented, role, messages, work, body)
    if volume.resampled:
        messages.append(spacing_note(volume))
    return volume


def to_slices(volume: np.ndarray, orientation: str) -> np.ndarray:
    """(C, z, y, x) -> (n, C, h, w): the volume cut along ``orientation``."""
    return np.moveaxis(volume, 1 + AXIS[orientation], 0)


def from_slices(slices: np.ndarray, orientation: str) -> np.ndarray:
    """(n, C, h, w) -> (C, z, y, x), the inverse of :func:`to_slices`."""
    return np.moveaxis(slices, 0, 1 + AXIS[orientation])


def back_to_grid(array: np.ndarray, volume: BrainVolume, pixel: int = sitk.sitkUInt8
                 ) -> sitk.Image:
    """A (z, y, x) array in LPS axis order as an image on the reference grid as given."""
    image = image_like(array, volume.oriented)
    return onto_grid(sitk.Cast(image, pixel), volume.grid)

