"""Data set cases prepared once: registered, standardised channels and labels on the b0 grid.

Registration costs tens of seconds a case; training, repeated training and evaluation all read
the same prepared cases, so they are cached as compressed ``.npz`` files next to the output,
keyed by the files' names, sizes and modification times and the registration preset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case
from oncoseg.errors import InputError
from oncoseg.geometry import resample_to_reference
from oncoseg.io.atomic import atomic_path
from oncoseg.io.volumes import read_image
from oncoseg.progress import CancelToken
from oncoseg.rectal.preprocessing import REFERENCE, ROLES, prepare


@dataclass
class PreparedArrays:
    case_id: str
    channels: np.ndarray  # (3, z, y, x) float32
    labels: dict[str, np.ndarray]  # reader label name -> (z, y, x) bool
    spacing_zyx: tuple[float, float, float]
    reference: sitk.Image  # the b0 grid (voxels not needed; kept for geometry)


def _key(case: Case, registration: str) -> str:
    digest = hashlib.sha256(registration.encode())
    for name, path in sorted({**case.images, **case.labels}.items()):
        stat = path.stat()
        digest.update(f"{name}={path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _labels_on_grid(case: Case, reference: sitk.Image) -> dict[str, np.ndarray]:
    labels = {}
    for name, path in sorted(case.labels.items()):
        image = read_image(path)
        on_grid = resample_to_reference(image, reference, "nearest",
                                        names=(f"{case.id}/{path.name}", REFERENCE))
        labels[name] = sitk.GetArrayFromImage(on_grid) > 0
    return labels


def prepare_case(case: Case, registration: str, cache: Path | None = None,
                 cancel: CancelToken | None = None) -> PreparedArrays:
    """The case's channels and labels, from the cache when it holds this exact case."""
    key = _key(case, registration)
    path = cache / f"{case.id}.npz" if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            if str(stored["key"]) == key:
                reference = _grid(json.loads(str(stored["grid"])))
                labels = {k[len("label:"):]: stored[k] for k in stored.files
                          if k.startswith("label:")}
                return PreparedArrays(case.id, stored["channels"], labels,
                                      _spacing_zyx(reference), reference)
    images = {role: case.read(role) for role in ROLES}
    try:
        prepared = prepare(images, registration, cancel=cancel)
    except InputError as error:
        raise InputError(f"case '{case.id}'", str(error)) from None
    reference = prepared.reference
    labels = _labels_on_grid(case, reference)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as stream:
            np.savez_compressed(stream, key=key, grid=json.dumps(_grid_dict(reference)),
                                channels=prepared.channels,
                                **{f"label:{k}": v for k, v in labels.items()})
    return PreparedArrays(case.id, prepared.channels, labels, _spacing_zyx(reference),
                          _grid(_grid_dict(reference)))


def _spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    x, y, z = image.GetSpacing()
    return (z, y, x)


def _grid_dict(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def _grid(grid: dict) -> sitk.Image:
    image = sitk.Image([int(s) for s in grid["size"]], sitk.sitkUInt8)
    image.SetSpacing(grid["spacing"])
    image.SetOrigin(grid["origin"])
    image.SetDirection(grid["direction"])
    return image
