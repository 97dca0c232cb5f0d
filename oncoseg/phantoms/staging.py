"""Rectal cancer T-stage phantom (StagingCNN, paper 002).

A T2w pelvis per case. In a T2 case the tumour stays inside the rectal wall's outer boundary; in
a T3 case it breaks through into the mesorectal fat with an irregular, spiculated margin. The
staging table ``staging.csv`` gives each case's stage and a box around rectum and tumour (LPS,
mm), as a reader would draw it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.io.atomic import write_text_atomic
from oncoseg.phantoms.common import (
    UPRIGHT_LPS,
    Storage,
    bias_field,
    case_rng,
    grid_points,
    rician,
    to_image,
)
from oncoseg.phantoms.rectal import RectalAnatomy

TABLE = "staging.csv"
SIZE, SPACING = (160, 160, 18), (0.9, 0.9, 4.0)


def generate_case(folder: Path, seed: int, case: int, storage: Storage = UPRIGHT_LPS) -> dict:
    rng = case_rng(seed, case)
    stage = "T3" if case % 2 else "T2"  # balanced, and not guessable from the seed stream
    extension = float(rng.uniform(4.0, 9.0)) if stage == "T3" else 0.0
    anatomy = RectalAnatomy(rng, tumour_extension_mm=extension)
    cx, cy = (float(v) for v in anatomy.rectum_centre(np.array(anatomy.tumour_centre[2])))
    # an oblique T2w is planned on the tumour: turned about it, the slab still covers it (turned
    # about the slab's centre, 25-32 mm in front of the rectum, a 20-degree tilt left the lower
    # third of a tumour out of the 72 mm slab)
    grid = storage.grid(SIZE, SPACING, pivot=(cx, cy, float(anatomy.tumour_centre[2])))
    points = grid_points(grid)
    values, tumour = anatomy.render(points, width=SPACING[0])
    signal = rician(values[..., 0] * bias_field(points, rng, 0.35), rng, 0.03)
    folder.mkdir(parents=True, exist_ok=True)
    t2w = to_image(np.round(signal * 1000).astype(np.int16), grid, sitk.sitkInt16)
    sitk.WriteImage(storage.store(t2w), str(folder / "t2w.nii.gz"), useCompression=True)
    label = to_image((tumour > 0.5).astype(np.uint8), grid, sitk.sitkUInt8)
    sitk.WriteImage(storage.store(label), str(folder / "label.nii.gz"), useCompression=True)
    half = 40.0
    roi = [cx - half, cy - half, anatomy.tumour_centre[2] - 30.0,
           cx + half, cy + half, anatomy.tumour_centre[2] + 30.0]
    info = {"task": "staging", "case": folder.name, "seed": seed, "index": case,
            "stored_as": storage.describe(),
            "synthetic": True, "stage": stage, "tumour_extension_mm": round(extension, 2),
            "roi_lps_mm": [round(v, 2) for v in roi]}
    (folder / "case.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def write_table(root: str | os.PathLike[str], rows: list[dict]) -> Path:
    """The staging table: case_id, stage, roi_lps_mm (six numbers, or empty)."""
    lines = ["case_id,stage,roi_lps_mm"]
    for row in rows:
        roi = " ".join(f"{v:g}" for v in row.get("roi_lps_mm") or [])
        lines.append(f"{row['case']},{row['stage']},{roi}")
    return write_text_atomic(Path(root) / TABLE, "\n".join(lines) + "\n")


def read_table(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
