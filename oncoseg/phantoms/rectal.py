"""Multiparametric rectal MR phantom (RectalSeg, paper 000).

Per case: T2w (fine in-plane, 5 mm slices), DWI b0 and b1000 on a coarser grid over the same
field of view, and the tumour label on the b0 grid (the task's reference). The diffusion images
show the anatomy displaced by a known smooth deformation plus a shift, as patient motion
between the acquisitions does; ``case.json`` records it. The tumour is bright at b1000, but so
are lymph nodes, a prostate-like gland and the bladder wall: only together with T2w is the
tumour distinct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial import cKDTree

from oncoseg.datasets.base import FRACTION_SUFFIX
from oncoseg.phantoms.common import (
    UPRIGHT_LPS,
    Storage,
    blend,
    case_rng,
    ellipsoid_distance,
    grid_points,
    lumpy,
    partial_volume,
    scan,
    smooth_displacement,
    soft,
    to_image,
    tube_distance,
    write_case_info,
)

# Tissue intensities (arbitrary units, before bias and noise): T2w, DWI b0, DWI b1000.
TISSUES = {
    "background": (0.0, 0.0, 0.0),
    "fat": (0.75, 0.22, 0.04),
    "muscle": (0.28, 0.35, 0.10),
    "bone": (0.55, 0.18, 0.05),
    "rectal wall": (0.25, 0.45, 0.18),
    "lumen": (0.06, 0.08, 0.03),
    "bladder": (0.95, 0.90, 0.07),
    "bladder wall": (0.30, 0.50, 0.50),
    "gland": (0.50, 0.55, 0.48),
    "node": (0.40, 0.58, 0.68),
    "septum": (0.42, 0.42, 0.10),  # vessels and fibrous septa in the fat: texture, not lesion
    "tumour": (0.46, 0.62, 0.78),
}
SEQUENCES = ("t2w", "dwi_b0", "dwi_b1000")


@dataclass(frozen=True)
class RectalPhantomGeometry:
    t2w_size: tuple[int, int, int] = (192, 192, 20)
    t2w_spacing: tuple[float, float, float] = (0.8, 0.8, 5.0)
    dwi_size: tuple[int, int, int] = (80, 80, 20)
    dwi_spacing: tuple[float, float, float] = (2.0, 2.0, 5.0)
    dwi_slice_offset_mm: float = 1.0  # the acquisitions' slices do not coincide
    misalignment_mm: float = 3.0


class RectalAnatomy:
    """One patient's anatomy as a function of LPS position."""

    def __init__(self, rng: np.random.Generator, tumour_extension_mm: float = 6.0):
        """``tumour_extension_mm``: how far beyond the outer rectal wall the tumour may grow
        (0 keeps it inside the wall: a T2 tumour; several mm: a T3 tumour)."""
        self.rng = rng
        self.tumour_extension_mm = tumour_extension_mm
        self.rectum_phase = rng.uniform(0, 2 * np.pi, 2)
        self.rectum_radius = rng.uniform(12.5, 15.5)
        self.wall = rng.uniform(3.0, 4.0)
        self.bladder = ((rng.uniform(-5, 5), rng.uniform(-42, -34), rng.uniform(8, 20)),
                        (rng.uniform(28, 38), rng.uniform(22, 30), rng.uniform(22, 32)))
        self.gland = ((rng.uniform(-3, 3), rng.uniform(-14, -9), rng.uniform(-32, -20)),
                      (rng.uniform(14, 19), rng.uniform(11, 15), rng.uniform(12, 18)))
        angle = rng.uniform(0, 2 * np.pi)
        z = rng.uniform(-18, 18)
        cx, cy = self.rectum_centre(np.array(z))
        r = self.rectum_radius - 1.0
        self.tumour_centre = (float(cx + r * math.cos(angle)), float(cy + r * math.sin(angle)),
                              float(z))
        self.tumour_radii = (rng.uniform(9, 15), rng.uniform(9, 15), rng.uniform(12, 24))
        self.tumour_lumps = np.random.default_rng(rng.integers(2**32))
        self.septa = []  # small structures throughout the fat: what registration locks onto
        texture = np.random.default_rng(rng.integers(2**32))
        while len(self.septa) < 160:
            c = texture.uniform([-95, -75, -55], [95, 75, 55])
            if (c[0] / 140) ** 2 + (c[1] / 105) ** 2 < 1:
                self.septa.append((tuple(c), tuple(texture.uniform([2.0, 2.0, 4.0],
                                                                   [4.5, 4.5, 12.0]))))
        self.nodes = []
        for _ in range(rng.integers(2, 5)):
            a, d, nz = rng.uniform(0, 2 * np.pi), rng.uniform(22, 32), rng.uniform(-35, 35)
            ncx, ncy = self.rectum_centre(np.array(nz))
            self.nodes.append(((float(ncx + d * math.cos(a)), float(ncy + d * math.sin(a)),
                                float(nz)), float(rng.uniform(3.0, 5.0))))

    def septa_distance(self, points: np.ndarray, neighbours: int = 3) -> np.ndarray:
        """Signed distance to the nearest septum, from each point's few closest centres (one
        pass over the volume instead of one per septum)."""
        centres = np.array([c for c, _ in self.septa], np.float32)
        radii = np.array([r for _, r in self.septa], np.float32)
        flat = points.reshape(-1, 3)
        _, nearest = cKDTree(centres).query(flat, k=neighbours)
        d = flat[:, None, :] - centres[nearest]
        r = radii[nearest]
        distance = (np.sqrt(np.sum((d / r) ** 2, axis=-1)) - 1.0) * r.min(axis=-1)
        return distance.min(axis=1).reshape(points.shape[:-1])

    def rectum_centre(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (3.0 * np.sin(z / 30.0 + self.rectum_phase[0]),
                28.0 + 4.0 * np.cos(z / 25.0 + self.rectum_phase[1]))

    def tumour(self, points: np.ndarray, width: float) -> np.ndarray:
        d = ellipsoid_distance(points, self.tumour_centre, self.tumour_radii)
        d = d + lumpy(points, np.random.default_rng(self.tumour_lumps.bit_generator.seed_seq),
                      amplitude=2.0, wavelength=18.0)
        return soft(d, width)

    def render(self, points: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
        """Intensities (z, y, x, 3 sequences) and the tumour's inside-ness at ``points``."""
        x, y = points[..., 0], points[..., 1]
        body = soft(np.sqrt((x / 150.0) ** 2 + (y / 115.0) ** 2) * 115.0 - 115.0, width)
        layers: list[tuple[str, np.ndarray]] = [("fat", body)]
        layers.append(("septum", soft(self.septa_distance(points), width)))
        for side in (-1, 1):
            layers.append(("muscle", soft(ellipsoid_distance(points, (58 * side, 10, 0),
                                                             (13, 38, 70)), width)))
            layers.append(("bone", soft(ellipsoid_distance(points, (74 * side, -8, -12),
                                                           (22, 22, 22)), width)))
        centre, radii = self.bladder
        outer = ellipsoid_distance(points, centre, radii)
        layers.append(("bladder wall", soft(outer, width)))
        layers.append(("bladder", soft(outer + 3.0, width)))
        layers.append(("gland", soft(ellipsoid_distance(points, *self.gland), width)))
        for node_centre, radius in self.nodes:
            layers.append(("node", soft(ellipsoid_distance(points, node_centre,
                                                           (radius,) * 3), width)))
        tube = tube_distance(points, self.rectum_centre, self.rectum_radius)
        layers.append(("rectal wall", soft(tube, width)))
        layers.append(("lumen", soft(tube + self.wall, width)))
        layers.append(("tumour", self.tumour_inside(points, width, tube)))
        return blend(layers, TISSUES, points.shape[:-1]), layers[-1][1]

    def tumour_inside(self, points: np.ndarray, width: float,
                      tube: np.ndarray | None = None) -> np.ndarray:
        """The tumour's inside-ness (0..1) alone, what the label thresholds at 0.5; cheap
        enough to sample 27 times per voxel for its partial volume. ``tube``: the rectum's
        signed distance at ``points`` where the caller has it."""
        if tube is None:
            tube = tube_distance(points, self.rectum_centre, self.rectum_radius)
        tumour = self.tumour(points, width)
        # the tumour grows from the wall, at most tumour_extension_mm beyond it
        spicules = lumpy(points, np.random.default_rng(self.tumour_lumps.bit_generator.seed_seq),
                         amplitude=1.5, wavelength=6.0) if self.tumour_extension_mm else 0.0
        return tumour * soft(tube - self.tumour_extension_mm + spicules, width)


@dataclass(frozen=True)
class CaseMotion:
    """How the patient moved between the T2w and the DWI: a smooth displacement field."""

    amplitude_mm: float
    shift_mm: np.ndarray
    phase_seed: int
    wavelength_mm: float = 120.0

    def on_dwi(self, points: np.ndarray) -> np.ndarray:
        """The anatomy's points that the DWI shows at ``points``."""
        return points - smooth_displacement(points, self.amplitude_mm, self.wavelength_mm,
                                            self.shift_mm, np.random.default_rng(self.phase_seed))


def case_anatomy(rng: np.random.Generator, geometry: RectalPhantomGeometry
                 ) -> tuple[RectalAnatomy, CaseMotion]:
    """A case's anatomy and motion, the first draws of its stream (:func:`case_rng`)."""
    anatomy = RectalAnatomy(rng)
    shift = rng.uniform(-2.0, 2.0, 3)
    phase_seed = int(np.random.default_rng(rng.integers(2**32)).bit_generator.seed_seq.entropy)
    return anatomy, CaseMotion(geometry.misalignment_mm, shift, phase_seed)


def generate_case(folder: Path, seed: int, case: int,
                  geometry: RectalPhantomGeometry | None = None,
                  storage: Storage = UPRIGHT_LPS) -> dict:
    g = geometry or RectalPhantomGeometry()
    rng = case_rng(seed, case)
    anatomy, moved = case_anatomy(rng, g)
    t2_grid = storage.grid(g.t2w_size, g.t2w_spacing)
    dwi_grid = storage.grid(g.dwi_size, g.dwi_spacing, centre=(0.0, 0.0, g.dwi_slice_offset_mm))
    motion = {"amplitude_mm": moved.amplitude_mm, "wavelength_mm": moved.wavelength_mm,
              "shift_mm": [round(float(s), 3) for s in moved.shift_mm],
              "phase_seed": moved.phase_seed}

    t2_points = grid_points(t2_grid)
    t2_values, _ = anatomy.render(t2_points, width=min(g.t2w_spacing[:2]))
    dwi_points = grid_points(dwi_grid)
    dwi_width = min(g.dwi_spacing[:2])
    dwi_values, tumour = anatomy.render(moved.on_dwi(dwi_points), width=dwi_width)

    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "t2w": (t2_values[..., 0], t2_points, 0.03, 0.35),
        "dwi_b0": (dwi_values[..., 1], dwi_points, 0.035, 0.2),
        "dwi_b1000": (dwi_values[..., 2], dwi_points, 0.045, 0.2),
    }
    for role, (values, points, noise, bias) in images.items():
        grid = t2_grid if role == "t2w" else dwi_grid
        storage.write_signal(folder / f"{role}.nii.gz",
                             scan(values, points, rng, bias=bias, noise=noise), grid)
    storage.write_labels(folder / "label.nii.gz", (tumour > 0.5).astype(np.uint8), dwi_grid)
    # each voxel's share inside the tumour (3 x 3 x 3 samples): partial-volume training targets
    fraction = partial_volume(
        lambda p: {"tumour": anatomy.tumour_inside(moved.on_dwi(p), dwi_width) > 0.5},
        dwi_grid)["tumour"]
    storage.write(folder / f"label{FRACTION_SUFFIX}.nii.gz",
                  to_image(fraction, dwi_grid, sitk.sitkFloat32))
    info = {"task": "rectal", "case": folder.name, "seed": seed, "index": case,
            "synthetic": True, "reference_role": "dwi_b0", "stored_as": storage.describe(),
            "tumour_voxels": int((tumour > 0.5).sum()),
            "misalignment_dwi_vs_t2w": motion}
    return write_case_info(folder, info)
