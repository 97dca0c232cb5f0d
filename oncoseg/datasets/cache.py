"""Prepared cases cached on disk: arrays on a grid, valid only for the exact inputs.

Training and evaluation prepare each case once (registration, resampling to a working grid)
and keep the result as a compressed ``.npz`` with a key derived from the inputs and settings;
a file whose key differs, or that an older version wrote, is a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case
from oncoseg.io.atomic import atomic_path

# How cases are read; a change here changes every key once, so that arrays prepared the
# earlier way are not reused (2026-12-07: segmentations and data sets that name their labels
# read by name, no longer by the values their drawing order gave; a data set's channels by
# their names).
LABEL_READING = "labels and channels by name"


def case_key(case: Case, *settings: str) -> str:
    """Changes when any of the case's files (folders: every file in them) is renamed, resized
    or touched, or when a setting that shapes the prepared arrays changes."""
    digest = hashlib.sha256("\0".join((LABEL_READING, *settings)).encode())
    fractions = {f"fraction:{name}": path for name, path in case.fractions.items()}
    for name, path in sorted({**case.images, **case.labels, **fractions}.items()):
        path = Path(path).resolve()
        for file in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() \
                else [path]:
            stat = file.stat()
            digest.update(f"{name}={file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _grid_description(image: sitk.Image) -> str:
    return json.dumps({"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
                       "origin": list(image.GetOrigin()),
                       "direction": list(image.GetDirection())})


def _grid(description: str) -> sitk.Image:
    """An empty image with the described geometry (the voxels are the cached arrays)."""
    grid = json.loads(description)
    image = sitk.Image([int(s) for s in grid["size"]], sitk.sitkUInt8)
    image.SetSpacing(grid["spacing"])
    image.SetOrigin(grid["origin"])
    image.SetDirection(grid["direction"])
    return image


def load_cached(path: Path | None, key: str
                ) -> tuple[dict[str, np.ndarray], sitk.Image] | None:
    """The arrays and their grid, or None when there is no valid entry for ``key``."""
    if path is None or not path.is_file():
        return None
    with np.load(path) as stored:
        if "grid" not in stored.files or str(stored["key"]) != key:
            return None
        arrays = {name: stored[name] for name in stored.files if name not in ("key", "grid")}
        return arrays, _grid(str(stored["grid"]))


def save_cached(path: Path | None, key: str, grid: sitk.Image,
                arrays: Mapping[str, np.ndarray]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as stream:
        np.savez_compressed(stream, key=key, grid=_grid_description(grid), **arrays)


def empty_grid(image: sitk.Image) -> sitk.Image:
    """The geometry of ``image`` without its voxels."""
    return _grid(_grid_description(image))
