"""Shapes, grids, bias fields and noise shared by the phantom generators."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.geometry import image_like
from oncoseg.io.atomic import atomic_directory
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report


def case_rng(seed: int, case: int) -> np.random.Generator:
    """One independent, reproducible stream per (seed, case)."""
    return np.random.default_rng(np.random.SeedSequence([seed, case]))


def make_grid(size: Sequence[int], spacing: Sequence[float],
              centre: Sequence[float] = (0.0, 0.0, 0.0)) -> sitk.Image:
    """An empty axial grid (LPS directions) of ``size`` voxels centred on ``centre``."""
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing(tuple(float(s) for s in spacing))
    extent = (np.asarray(size) - 1) * np.asarray(spacing)
    image.SetOrigin(tuple(np.asarray(centre, float) - extent / 2))
    return image


def grid_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shape (z, y, x, 3)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    matrix = (np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing()))
    return (ijk @ matrix.T.astype(np.float32)) + np.asarray(image.GetOrigin(), np.float32)


def partial_volume(inside: Callable[[np.ndarray], Mapping[str, np.ndarray]], grid: sitk.Image,
                   samples: int = 3) -> dict[str, np.ndarray]:
    """The share of each voxel of ``grid`` (z, y, x) inside each structure that
    ``inside(points)`` names (bool per name, from (..., 3) LPS points), from samples^3 points
    spread evenly over the voxel (1: its centre alone, a binary mask). Training targets with it
    give a map whose 0.5 edge lies where the structure's does between voxel centres, on
    whatever grid a scanner chose."""
    points = grid_points(grid)
    step = np.asarray(grid.GetDirection()).reshape(3, 3) * np.asarray(grid.GetSpacing())
    offsets = [(i - (samples - 1) / 2) / samples for i in range(samples)]
    shares: dict[str, np.ndarray] = {}
    for offset in itertools.product(offsets, repeat=3):
        for name, mask in inside(points + (step @ np.asarray(offset)).astype(np.float32)).items():
            shares[name] = shares.get(name, 0) + np.asarray(mask, np.float32)
    return {name: share / samples ** 3 for name, share in shares.items()}


def soft(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """Inside-ness in 0..1 from a signed distance (negative inside); ``width`` ~ a voxel,
    which gives partial-volume edges instead of staircase ones."""
    return 1.0 / (1.0 + np.exp(np.clip(signed_distance / max(width, 1e-3), -40, 40)))


def ellipsoid_distance(points: np.ndarray, centre: Sequence[float], radii: Sequence[float],
                       rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid's surface."""
    d = points - np.asarray(centre, np.float32)
    if rotation is not None:
        d = d @ rotation.astype(np.float32)
    r = np.asarray(radii, np.float32)
    normalised = np.sqrt(np.sum((d / r) ** 2, axis=-1))
    return (normalised - 1.0) * float(np.min(r))


def tube_distance(points: np.ndarray, path: callable, radius: float) -> np.ndarray:
    """Signed distance to a tube whose centre line at height z is ``path(z) -> (x, y)``."""
    cx, cy = path(points[..., 2])
    return np.sqrt((points[..., 0] - cx) ** 2 + (points[..., 1] - cy) ** 2) - radius


def lumpy(points: np.ndarray, rng: np.random.Generator, amplitude: float,
          wavelength: float, terms: int = 4) -> np.ndarray:
    """A smooth random field (sum of a few random plane waves), for irregular edges."""
    field = np.zeros(points.shape[:-1], np.float32)
    for _ in range(terms):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(points @ (direction * 2 * np.pi / wavelength).astype(np.float32) + phase)
    return amplitude * field / np.sqrt(terms)


def bias_field(points: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative intensity inhomogeneity (coil sensitivity), mean about 1."""
    scale = np.float32(1.0 / 150.0)
    coeff = rng.normal(0, strength, size=6).astype(np.float32)
    x, y, z = (points[..., c] * scale for c in range(3))
    return np.exp(coeff[0] * x + coeff[1] * y + coeff[2] * z + coeff[3] * x * y
                  + coeff[4] * x * x + coeff[5] * y * y)


def rician(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Magnitude MR noise: |signal + complex Gaussian|."""
    real = image + rng.normal(0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def blend(layers: Sequence[tuple[str, np.ndarray]], tissues: Mapping[str, Sequence[float]],
          shape: Sequence[int]) -> np.ndarray:
    """Noise-free intensities (``shape`` + one per sequence) of tissue layers, each given by
    its inside-ness (0..1): a later layer covers what lies below it by that much, so soft edges
    give partial-volume mixtures."""
    sequences = len(next(iter(tissues.values())))
    values = np.zeros((*shape, sequences), np.float32)
    for tissue, weight in layers:
        values += weight[..., None] * (np.asarray(tissues[tissue], np.float32) - values)
    return values


def scan(values: np.ndarray, points: np.ndarray, rng: np.random.Generator, *, bias: float,
         noise: float) -> np.ndarray:
    """What an MR scanner records of noise-free ``values`` at ``points``: a coil's bias field
    (:func:`bias_field` of strength ``bias``) times the signal, then Rician noise of ``noise``."""
    return rician(values * bias_field(points, rng, bias), rng, noise)


def to_image(array: np.ndarray, grid: sitk.Image, pixel: int = sitk.sitkFloat32) -> sitk.Image:
    image = image_like(array, grid)
    return sitk.Cast(image, pixel) if image.GetPixelID() != pixel else image


def smooth_displacement(points: np.ndarray, amplitude: float, wavelength: float,
                        shift: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A known smooth deformation plus a translation (mm), e.g. patient motion between the
    T2-weighted and the diffusion acquisitions."""
    k = np.float32(2 * np.pi / wavelength)
    phases = rng.uniform(0, 2 * np.pi, size=6).astype(np.float32)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    field = np.stack([
        np.sin(k * y + phases[0]) * np.cos(k * z + phases[1]),
        np.cos(k * x + phases[2]) * np.sin(k * z + phases[3]),
        0.5 * np.sin(k * x + phases[4]) * np.cos(k * y + phases[5]),
    ], axis=-1)
    return amplitude * field + np.asarray(shift, np.float32)


# Every way of storing a volume: each array axis points to one of L/R, P/A, S/I (48 codes).
STORAGE_ORIENTATIONS = tuple(
    "".join(("LPS" if signs[i] > 0 else "RAI")[order[i]] for i in range(3))
    for order in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3))


def storage_orientation(orientation: str, seed: int, case: int, axial_only: bool = False) -> str:
    """The orientation code a case is stored in: ``orientation`` itself, or for ``random`` one
    of the 48 drawn per case (from its own stream, so the anatomy does not change with it).
    ``axial_only`` keeps the slices along S-I (a DICOM CT series is a stack of axial slices)."""
    choices = tuple(c for c in STORAGE_ORIENTATIONS if not axial_only or c[2] in "SI")
    if orientation == "random":
        rng = np.random.default_rng(np.random.SeedSequence([seed, case, 48]))
        return choices[int(rng.integers(len(choices)))]
    code = orientation.upper()
    if code not in choices:
        from oncoseg.errors import InputError

        kind = "an axial orientation code (third letter S or I)" if axial_only else \
            "a three-letter orientation code (one of L/R, P/A, S/I each, e.g. LPS, RAS, LAS)"
        raise InputError("--orientation", f"'{orientation}' is not {kind} or 'random'")
    return code


@dataclass(frozen=True)
class Storage:
    """How one phantom case is acquired and stored: the tilt of its grids (an oblique
    acquisition, rendered directly on the tilted grid, so no interpolation blurs it) and the
    axis order its files are written in. The anatomy in physical space never changes."""

    orientation: str = "LPS"
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def tilt_degrees(self) -> float:
        matrix = np.asarray(self.rotation).reshape(3, 3)
        return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))

    def grid(self, size: Sequence[int], spacing: Sequence[float],
             centre: Sequence[float] = (0.0, 0.0, 0.0),
             pivot: Sequence[float] | None = None) -> sitk.Image:
        """:func:`make_grid`, turned by the case's tilt about ``pivot`` (the grid's own centre
        when None; a radiographer plans an oblique acquisition on what it must cover)."""
        image = make_grid(size, spacing, centre)
        if self.tilt_degrees == 0.0:
            return image
        matrix = np.asarray(self.rotation).reshape(3, 3)
        pivot = np.asarray(centre if pivot is None else pivot, float)
        image.SetDirection(tuple(float(v) for v in matrix.ravel()))
        image.SetOrigin(tuple(pivot + matrix @ (np.asarray(image.GetOrigin()) - pivot)))
        return image

    def store(self, image: sitk.Image) -> sitk.Image:
        """The image with its voxels reordered so its axes point as the case's orientation
        says (the same anatomy, stored as another scanner or converter would)."""
        return image if self.orientation == "LPS" else sitk.DICOMOrient(image, self.orientation)

    def describe(self) -> dict:
        return {"orientation": self.orientation, "tilt_degrees": round(self.tilt_degrees, 2)}

    def write(self, path: Path, image: sitk.Image) -> None:
        """``image`` written compressed, in the case's storage order (:meth:`store`)."""
        sitk.WriteImage(self.store(image), str(path), useCompression=True)

    def write_signal(self, path: Path, signal: np.ndarray, grid: sitk.Image) -> None:
        """An MR signal (about 0..1) on ``grid`` as scanners store it: int16, x 1000."""
        self.write(path, to_image(np.round(signal * 1000).astype(np.int16), grid,
                                  sitk.sitkInt16))

    def write_labels(self, path: Path, labels: np.ndarray, grid: sitk.Image) -> None:
        """A label map (uint8 values) on ``grid``."""
        self.write(path, to_image(labels, grid, sitk.sitkUInt8))


# What the generators write unless told otherwise: upright grids stored in LPS order.
UPRIGHT_LPS = Storage()


def write_case_info(folder: Path, info: dict) -> dict:
    """A case's ``case.json`` (what it is, how it was made and stored); returns ``info``."""
    (folder / "case.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def case_storage(orientation: str, tilt_degrees: float, seed: int, case: int,
                 axial_only: bool = False) -> Storage:
    """The storage of one case: :func:`storage_orientation`, and with ``tilt_degrees`` > 0 a
    rotation about a random axis by up to that angle (its own stream: anatomy unchanged)."""
    code = storage_orientation(orientation, seed, case, axial_only)
    if not 0.0 <= tilt_degrees <= 90.0:
        from oncoseg.errors import InputError

        raise InputError("--tilt", f"{tilt_degrees:g} is not an angle from 0 to 90 degrees")
    if tilt_degrees == 0.0:
        return Storage(code)
    rng = np.random.default_rng(np.random.SeedSequence([seed, case, 90]))
    axis = rng.normal(size=3)
    angle = np.radians(rng.uniform(0.0, tilt_degrees))
    from scipy.spatial.transform import Rotation

    matrix = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
    return Storage(code, tuple(float(v) for v in matrix.ravel()))


def check_phantom_layout(layout: str, allowed: Sequence[str]) -> None:
    if layout not in allowed:
        from oncoseg.errors import InputError

        raise InputError("--layout", f"'{layout}' is not one of {', '.join(allowed)} for "
                         "this task's phantoms (nnunet is also accepted for segmentation "
                         "tasks)")


def generate_dataset(output: str | os.PathLike[str], cases: int, seed: int,
                     generate_case: Callable[..., dict], prefix: str,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None,
                     finish: Callable[[Path, list[dict]], object] | None = None,
                     names: Callable[[int], str] | None = None, orientation: str = "LPS",
                     axial_only: bool = False, tilt_degrees: float = 0.0) -> list[Path]:
    """Write ``cases`` case folders, all or nothing: they appear in ``output`` only when every
    case was written. ``finish(folder, infos)`` adds data-set-level files (a label table);
    ``names(index)`` gives a layout's own folder names (default ``<prefix>_000``);
    ``orientation`` and ``tilt_degrees`` say how each case is stored (:func:`case_storage`)."""
    case_storage(orientation, tilt_degrees, seed, 0, axial_only)  # bad values fail first
    output = Path(output)
    written, infos = [], []
    with atomic_directory(output) as folder:
        for index in range(cases):
            check_cancelled(cancel)
            name = names(index) if names else f"{prefix}_{index:03d}"
            storage = case_storage(orientation, tilt_degrees, seed, index, axial_only)
            infos.append(generate_case(folder / name, seed, index, storage=storage))
            written.append(output / name)
            report(progress, f"Writing {prefix} phantoms", index + 1, cases)
        if finish is not None:
            finish(folder, infos)
    return written
