"""Data set cases prepared once: registered, standardised channels and labels on the b0 grid.

Registration costs tens of seconds a case; training, repeated training and evaluation all read
the same prepared cases, so they are cached as compressed ``.npz`` files next to the output,
keyed by the files' names, sizes and modification times and the registration preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, label_file_on
from oncoseg.datasets.cache import case_key, empty_grid, load_cached, save_cached
from oncoseg.datasets.segmentation_labels import declared_values
from oncoseg.errors import InputError
from oncoseg.geometry import arrays_onto, resample_to_reference
from oncoseg.intensity import INTENSITY_READING
from oncoseg.io.volumes import read_image
from oncoseg.progress import CancelToken
from oncoseg.rectal.config import NATIVE
from oncoseg.rectal.preprocessing import REFERENCE, ROLES, prepare
from oncoseg.rectal.spacing import in_plane_grid
from oncoseg.rectal.task import TASK


@dataclass
class PreparedArrays:
    case_id: str
    channels: np.ndarray  # (3, z, y, x) float32
    labels: dict[str, np.ndarray]  # reader label name -> (z, y, x) bool
    spacing_zyx: tuple[float, float, float]
    reference: sitk.Image  # the b0 grid (voxels not needed; kept for geometry)
    # reader label name -> (z, y, x) float32 partial volume, where the data set has it
    fractions: dict[str, np.ndarray] = field(default_factory=dict)


def _labels_on_grid(case: Case, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Each reader's tumour mask on the b0 grid: any whole-number label but 0 (a probability
    map given as a label file is refused, not taken as tumour wherever it is above 0), or,
    where the data set names its labels (dataset.json), the one named as the tumour (a data
    set naming another structure too is refused by name)."""
    declared = declared_values(case.info.get("labels"), TASK.segments, f"case '{case.id}'")
    return {name: label_file_on(path, reference, case.id, REFERENCE, segments=TASK.segments,
                                remap=declared[0] if declared else None) > 0
            for name, path in sorted(case.labels.items())}


def _fractions_on_grid(case: Case, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Each reader's partial-volume file (``label_fraction``) on the b0 grid (linear: a
    share resamples as one); values outside 0..1 are refused by file."""
    fractions = {}
    for name, path in sorted(case.fractions.items()):
        share = sitk.GetArrayFromImage(resample_to_reference(
            sitk.Cast(read_image(path), sitk.sitkFloat32), reference, "linear"))
        if not np.isfinite(share).all() or share.min() < -1e-3 or share.max() > 1 + 1e-3:
            raise InputError(f"case '{case.id}'", f"{Path(path).name} holds values outside "
                             f"0..1 ({share.min():g} to {share.max():g}); a partial-volume "
                             "file gives each voxel's share inside the structure")
        fractions[name] = np.clip(share, 0.0, 1.0).astype(np.float32)
    return fractions


def _named(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The cached arrays stored as ``prefix`` + a reader's name, by that name."""
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def prepare_case(case: Case, registration: str, cache: Path | None = None,
                 cancel: CancelToken | None = None) -> PreparedArrays:
    """The case's channels and labels, from the cache when it holds this exact case."""
    key = case_key(case, registration, INTENSITY_READING)
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, reference = cached
        return PreparedArrays(case.id, arrays["channels"], _named(arrays, "label:"),
                              _spacing_zyx(reference), reference, _named(arrays, "fraction:"))
    images = {role: case.read(role) for role in ROLES}
    try:
        prepared = prepare(images, registration, cancel=cancel)
    except InputError as error:
        raise InputError(f"case '{case.id}'", str(error)) from None
    reference = prepared.reference
    labels = _labels_on_grid(case, reference)
    fractions = _fractions_on_grid(case, reference)
    save_cached(path, key, reference, {"channels": prepared.channels,
                                       **{f"label:{k}": v for k, v in labels.items()},
                                       **{f"fraction:{k}": v for k, v in fractions.items()}})
    return PreparedArrays(case.id, prepared.channels, labels, _spacing_zyx(reference),
                          empty_grid(reference), fractions)


def _spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    x, y, z = image.GetSpacing()
    return (z, y, x)


def at_in_plane(case: PreparedArrays, in_plane_mm: float | str) -> PreparedArrays:
    """The case as the network reads it at ``in_plane_mm`` (:mod:`oncoseg.rectal.spacing`):
    channels resampled linearly in-plane, each reader's mask with them (at 0.5); unchanged on
    its own grid or with :data:`NATIVE`."""
    grid = in_plane_grid(case.reference, None if in_plane_mm == NATIVE else float(in_plane_mm))
    if grid is None:
        return case
    channels = arrays_onto(case.channels, case.reference, grid)
    labels = {name: arrays_onto(mask.astype(np.float32), case.reference, grid) >= 0.5
              for name, mask in case.labels.items()}
    fractions = {name: np.clip(arrays_onto(share, case.reference, grid), 0.0, 1.0)
                 for name, share in case.fractions.items()}
    return PreparedArrays(case.case_id, channels, labels, _spacing_zyx(grid), grid, fractions)
