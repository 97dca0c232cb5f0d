"""Pelvic CT phantom as a clinical DICOM cohort (OARSeg CT, paper 003).

Per patient a CT series in Hounsfield units (fat, muscle, pelvic bones and femoral heads with
cortex and marrow, a urine-filled bladder, bowel loops with gas, contrast-enhanced iliac vessels
with nodes) and an RT structure set: femoral heads, bladder, bowel bag and the nodal CTV (the
vessels with a 7 mm margin). Structure names vary between patients as they do between
clinics, and every third patient has no bladder contour, so training must treat unannotated
organs as unknown rather than background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from oncoseg.io.dicom import Patient, write_ct_series
from oncoseg.io.rtstruct import write_rtstruct
from oncoseg.phantoms.common import (
    UPRIGHT_LPS,
    Storage,
    case_rng,
    ellipsoid_distance,
    grid_points,
    lumpy,
    soft,
    to_image,
    tube_distance,
)

SIZE, SPACING = (176, 144, 40), (2.7, 2.7, 3.0)
NAMINGS = [
    ["FemoralHead_L", "FemoralHead_R", "Bladder", "BowelBag", "CTV_N"],
    ["Femur_Head_L", "Femur_Head_R", "bladder", "Bowel_Bag", "CTVn"],
    ["Femoral head left", "Femoral head right", "Urinary Bladder", "Bowel bag", "CTV nodal"],
]
COLOURS = [(230, 220, 70), (70, 220, 230), (220, 160, 40), (190, 110, 60), (230, 60, 60)]


def render(points: np.ndarray, rng: np.random.Generator, width: float
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x, y = points[..., 0], points[..., 1]
    texture = np.random.default_rng(rng.integers(2**32))
    body = soft(np.sqrt((x / 185) ** 2 + (y / 125) ** 2) * 125 - 125, width)
    def outline(rx: float, ry: float) -> np.ndarray:
        return soft(np.sqrt((x / rx) ** 2 + (y / ry) ** 2) * ry - ry, width)

    muscle = outline(172, 114) * (1 - outline(160, 104))  # under the subcutaneous fat
    heads = {}
    for side, name in ((1, "Femoral head L"), (-1, "Femoral head R")):  # LPS: +x = left
        centre = (side * rng.uniform(88, 96), rng.uniform(5, 15), rng.uniform(-35, -20))
        heads[name] = (centre, rng.uniform(22, 25))
    bladder_c = (rng.uniform(-6, 6), rng.uniform(-55, -45), rng.uniform(-25, -10))
    bladder_r = (rng.uniform(30, 42), rng.uniform(25, 32), rng.uniform(20, 30))
    bowel_region = ellipsoid_distance(points, (0, -20, 45), (120, 80, 60))
    vessels = []
    for side in (-1, 1):
        start, end = np.array([side * 15, 20, 80.0]), np.array([side * 80, -5, -40.0])

        def path(zz, start=start, end=end):
            t = np.clip((start[2] - zz) / (start[2] - end[2]), 0, 1)
            return start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])

        vessels.append(tube_distance(points, path, 6.0))
    vessel_d = np.minimum(*vessels)
    hu = np.full(points.shape[:-1], -1000.0, np.float32)
    hu += body * (-100 + 1000)  # fat
    hu += np.clip(muscle, 0, 1) * (45 + 100)
    bladder_d = ellipsoid_distance(points, bladder_c, bladder_r)
    loops = 0.5 + 0.5 * np.sin(lumpy(points, texture, 1.2, 36.0, terms=6) * 2.5)
    bowel = soft(bowel_region, width) * soft(-bladder_d - 5, width) * body
    gas = bowel * (loops > 0.8)
    hu += bowel * (25 - hu) * (loops > 0.3)
    hu += gas * (-850 - hu)
    for d, level in ((bladder_d, 40), (bladder_d + 3, 12)):
        w = soft(d, width)
        hu += w * (level - hu)
    # the pelvic ring: a bony shell, lateral and posterior (LPS: +y is posterior)
    ring = ellipsoid_distance(points, (0, 30, 0), (100, 62, 70))
    pelvis = soft(np.abs(ring) - 5, width) * soft(-20 - y, width)
    hu += np.clip(pelvis, 0, 1) * (600 - hu)
    for centre, radius in heads.values():
        shell = soft(ellipsoid_distance(points, centre, (radius,) * 3), width)
        marrow = soft(ellipsoid_distance(points, centre, (radius - 4,) * 3), width)
        hu += shell * (900 - hu)
        hu += marrow * (250 - hu)
    vessel = soft(vessel_d, width)
    hu += vessel * (180 - hu)
    for _ in range(int(rng.integers(3, 6))):
        t = rng.uniform(0.2, 0.9)
        side = rng.choice([-1, 1])
        node_c = (side * (15 + 65 * t) + rng.uniform(-10, 10), 20 - 25 * t + rng.uniform(-8, 8),
                  80 - 120 * t)
        hu += soft(ellipsoid_distance(points, node_c, (5, 5, 6)), width) * (50 - hu)
    hu = hu + texture.normal(0, 12, hu.shape).astype(np.float32)
    masks = {name: ellipsoid_distance(points, c, (r,) * 3) < 0 for name, (c, r) in heads.items()}
    masks["Bladder"] = bladder_d < 0
    masks["Bowel bag"] = (bowel_region < 0) & (bladder_d > 0) & (body > 0.5) & (ring < 0)
    ctv = (vessel_d < 7.0) & (body > 0.5)
    for centre, radius in heads.values():
        ctv &= ellipsoid_distance(points, centre, (radius,) * 3) > 0
    masks["Nodal CTV"] = ndimage.binary_opening(ctv)
    return hu, masks


def generate_case(folder: Path, seed: int, case: int, storage: Storage = UPRIGHT_LPS) -> dict:
    """A CT series and its structure set, stored as ``storage`` says (an axial code: row and
    column directions and slice order as a scanner may write them; a tilt: an oblique
    reconstruction)."""
    rng = case_rng(seed, case)
    grid = storage.grid(SIZE, SPACING)
    hu, masks = render(grid_points(grid), rng, width=SPACING[0])
    ct = storage.store(to_image(np.clip(np.round(hu), -1024, 3071).astype(np.int16), grid))
    masks = {name: sitk.GetArrayFromImage(storage.store(to_image(mask.astype(np.uint8), grid,
                                                                 sitk.sitkUInt8))) > 0
             for name, mask in masks.items()}
    patient = Patient(folder.name, f"Phantom^{folder.name}", "19600101", "O")
    files = write_ct_series(ct, folder, patient, "Pelvis CT (synthetic)")
    naming = NAMINGS[case % len(NAMINGS)]
    canonical = ["Femoral head L", "Femoral head R", "Bladder", "Bowel bag", "Nodal CTV"]
    lacks_bladder = case % 3 == 2
    structures = []
    for clinic_name, name, colour in zip(naming, canonical, COLOURS, strict=True):
        if name == "Bladder" and lacks_bladder:
            continue
        kind = "CTV" if name == "Nodal CTV" else "ORGAN"
        structures.append((clinic_name, masks[name], colour, kind))
    write_rtstruct(structures, ct, files, folder / f"RS_{folder.name}.dcm")
    info = {"task": "oar-ct", "case": folder.name, "seed": seed, "index": case,
            "synthetic": True, "stored_as": storage.describe(),
            "structure_names": [s[0] for s in structures],
            "unannotated": ["Bladder"] if lacks_bladder else []}
    (folder / "case.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info

