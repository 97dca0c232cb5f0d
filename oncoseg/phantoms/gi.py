"""Abdominal MR phantom in the UW-Madison GI tract (Kaggle) layout (OARSeg MR, paper 001).

Per patient one or two scans (days) of axial slices: stomach (upper left), small-bowel loops
(a textured mass in the centre), large bowel (a tube framing them), with liver and kidneys as
distractors of similar brightness. Many slices hold no organ at all, as in the competition.
Slices are 16-bit PNGs named with their size and pixel spacing; masks go to train.csv as
run-length strings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oncoseg.datasets.kaggle import CLASSES, SLICE_THICKNESS_MM, TABLE, rle_encode
from oncoseg.io.atomic import atomic_directory
from oncoseg.phantoms.common import (
    bias_field,
    case_rng,
    ellipsoid_distance,
    grid_points,
    lumpy,
    make_grid,
    rician,
    soft,
    tube_distance,
)
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report

SIZE, PIXEL = 128, 1.5
SLICES = 40


def render(points: np.ndarray, rng: np.random.Generator, width: float
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    body = soft(np.sqrt((x / 88) ** 2 + (y / 70) ** 2) * 70 - 70, width)
    texture = np.random.default_rng(rng.integers(2**32))
    liver = soft(ellipsoid_distance(points, (-45, -5, 30), (38, 35, 30)), width)
    kidneys = sum(soft(ellipsoid_distance(points, (s * 38, 35, 0), (12, 14, 22)), width)
                  for s in (-1, 1))
    stomach_centre = (rng.uniform(35, 50), rng.uniform(-20, -5), rng.uniform(25, 35))
    stomach = soft(ellipsoid_distance(points, stomach_centre, (26, 20, 18))
                   + lumpy(points, texture, 2.0, 25.0), width)

    def colon(zz):
        # ascending (patient's right, x < 0), transverse (anterior, top), descending (left)
        t = np.clip((zz + 30) / 60, 0, 1)
        return (-58 + 116 * t, -25 + 10 * np.sin(np.pi * t))

    large = soft(tube_distance(points, colon, 11.0) + lumpy(points, texture, 1.5, 18.0), width)
    large *= soft(np.abs(z - 5) - 38, width)
    small = soft(ellipsoid_distance(points, (0, 5, -12), (38, 28, 26)), width)
    loops = 0.5 + 0.5 * np.sin(lumpy(points, texture, 3.0, 20.0, terms=6) * 2.5)
    small = small * (1 - large) * (loops > 0.35)
    values = 0.25 * body
    for weight, level in [(liver, 0.55), (kidneys, 0.7), (stomach, 0.6), (large, 0.45),
                          (small, 0.5 + 0.3 * loops)]:
        values = values + weight * (level - values)
    masks = {"stomach": stomach > 0.5, "small_bowel": small > 0.5, "large_bowel": large > 0.5}
    return values * body, masks


def generate_patient(root: Path, seed: int, case: int) -> list[list[str]]:
    """Write a patient's scans under root/train; returns their train.csv rows."""
    from PIL import Image

    rng = case_rng(seed, case)
    rows = []
    patient = f"case{case + 1}"
    for day in sorted(rng.choice(np.arange(1, 30), size=int(rng.integers(1, 3)), replace=False)):
        grid = make_grid((SIZE, SIZE, SLICES), (PIXEL, PIXEL, SLICE_THICKNESS_MM),
                         centre=(0, 0, rng.uniform(-6, 6)))
        points = grid_points(grid)
        values, masks = render(points, rng, width=PIXEL)
        signal = rician(values * bias_field(points, rng, 0.25), rng, 0.025)
        pixels = np.clip(signal * 20000, 0, 65535).astype(np.uint16)
        scans = root / "train" / patient / f"{patient}_day{day}" / "scans"
        scans.mkdir(parents=True)
        for k in range(SLICES):
            name = f"slice_{k + 1:04d}_{SIZE}_{SIZE}_{PIXEL:.2f}_{PIXEL:.2f}.png"
            Image.fromarray(pixels[k]).save(scans / name)
            for organ in CLASSES:
                mask = masks[organ][k]
                rows.append([f"{patient}_day{day}_slice_{k + 1:04d}", organ,
                             rle_encode(mask) if mask.any() else ""])
    return rows


def generate(output: str | os.PathLike[str], cases: int, seed: int,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> list[Path]:
    """The whole layout, all or nothing."""
    rows = [["id", "class", "segmentation"]]
    with atomic_directory(output) as folder:
        for case in range(cases):
            check_cancelled(cancel)
            rows += generate_patient(folder, seed, case)
            report(progress, "Writing GI tract phantoms", case + 1, cases)
        (folder / TABLE).write_text("\n".join(",".join(r) for r in rows) + "\n",
                                    encoding="utf-8")
    return sorted((Path(output) / "train").iterdir())
