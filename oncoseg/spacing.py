"""The spacing a network reads at: a setting each model file fixes (OAR-CT's and the brain's
``spacing_mm``, the rectal network's ``in_plane_mm``).

A network counts its receptive field in voxels, so a scan stored on a finer grid than the
training cases' shows it a smaller anatomy: the rectal demo gave DSC 0.25-0.37 on DWI stored at
1 mm instead of 2 (docs/RESULTS.md, "DWI stored at another in-plane spacing"). nnU-Net
resamples every case to its plan's target spacing, the training cases' median; OncoSeg does
the same where a task's setting asks for it. :data:`NATIVE` reads each image as stored (the
papers' way: each trained on one protocol's grid, or on BraTS, resampled to 1 mm by its
organisers); :data:`MEDIAN`, the training cases' median, which training records in the model
file as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from oncoseg.errors import InputError

NATIVE = "native"
MEDIAN = "median"
_NATIVE_WORDS = ("", NATIVE, "none", "null")
# spacings closer than this (relative) are the same: no resampling
SAME_SPACING = 1e-3


def parse_spacing(value: object, key: str = "spacing_mm", median: bool = False
                  ) -> tuple[float, float, float] | str:
    """A three-axis spacing setting as given (``native``, ``median`` where the task allows it,
    ``[2,2,3]``, ``2,2,3``, a model file's list or null): a word or three positive numbers
    (x, y, z mm). The settings machinery hands a string-typed setting every value as
    ``str(value)``, so lists arrive as their repr."""
    if value is None:
        return NATIVE
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        text = str(value).strip().strip("[]()").strip()
        if text.lower() in _NATIVE_WORDS:
            return NATIVE
        if median and text.lower() == MEDIAN:
            return MEDIAN
        items = [v for v in text.replace(" x ", ",").split(",") if v.strip()]
    if not items:
        return NATIVE
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        numbers = ()
    words = f"'{NATIVE}' (each image's own grid)" + (
        f", '{MEDIAN}' (the training cases' median)" if median else "")
    if len(numbers) != 3:
        raise InputError(f"--set {key}", f"is {value!r}: give {words} or three spacings in mm, "
                         "x, y, z (e.g. [2,2,3])")
    if not all(math.isfinite(s) and s > 0 for s in numbers):
        raise InputError(f"--set {key}", f"is {numbers}: each entry must be greater than 0")
    return numbers  # type: ignore[return-value]


def parse_length(value: object, key: str, words: Mapping[str, str]) -> float | str:
    """A one-number setting in mm as given (``--set``, a model file, code): one of ``words``
    (each with what it means, for the refusal) or a positive length; anything else refused
    by name."""
    if isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        named = ", ".join(f"'{word}' ({meaning})" for word, meaning in words.items())
        raise InputError(f"--set {key}", f"is {value!r}: give {named} or a length in mm")
    return number


def median_spacing(spacings_xyz: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """The per-axis median of the training cases' spacings (x, y, z mm, in one axis order)."""
    values = np.median(np.asarray(spacings_xyz, float), axis=0)
    return tuple(round(float(v), 4) for v in values)  # type: ignore[return-value]


def shared_training_spacing(provenance: Mapping[str, Any], axes: int = 3) -> np.ndarray | None:
    """The one spacing every training case had along its ``axes`` finest axes (sorted, finest
    first), from the geometry a model file records of its training cases; None where they
    differed or none is recorded. What a model file written before its task's spacing setting
    existed was trained at."""
    spacing = provenance.get("dataset", {}).get("geometry", {}).get("spacing_mm")
    if not spacing:
        return None
    low, high = (np.asarray(spacing[k], float)[:axes] for k in ("min", "max"))
    return low if np.allclose(low, high, rtol=SAME_SPACING) else None


def model_spacing(setting: tuple[float, float, float] | str, provenance: Mapping[str, Any]
                  ) -> tuple[float, float, float] | None:
    """The spacing (x, y, z mm) a model reads at, None: each image's own grid. A model file
    fixes the setting; one written before it existed leaves :data:`MEDIAN`, and then reads at
    the spacing its training cases shared where it is the same along every axis (a sorted
    record cannot say which axis held which spacing otherwise), else as stored."""
    if setting == NATIVE:
        return None
    if setting != MEDIAN:
        return tuple(float(s) for s in setting)  # type: ignore[return-value]
    shared = shared_training_spacing(provenance)
    if shared is None or not np.allclose(shared, shared[0], rtol=SAME_SPACING):
        return None
    return (float(shared[0]),) * 3  # type: ignore[return-value]


def same_spacing(spacing: Sequence[float], other: Sequence[float]) -> bool:
    """Equal within :data:`SAME_SPACING` along every axis: reading one at the other's spacing
    resamples nothing."""
    return all(abs(a - b) <= SAME_SPACING * max(abs(a), abs(b)) for a, b in
               zip(spacing, other, strict=True))
