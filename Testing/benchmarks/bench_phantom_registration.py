"""Registration error on the rectal phantom, where the T2w-DWI misalignment is known.

For each registration setting, the mean distance (mm) over the b0 grid's body voxels between
the estimated T2w point of each b0 voxel and the true one (the phantom's smooth displacement,
from ``case.json``). The peer is no registration at all, in the same run: a setting is only
worth running if it beats it. The ``-simpleitk`` settings run the preset with the opt-in
SimpleITK engine (oncoseg.registration, ``engine="simpleitk"``), the others with elastix.

    python Testing/benchmarks/bench_phantom_registration.py [--settings none rigid ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from report import report

from oncoseg.phantoms.common import grid_points, smooth_displacement
from oncoseg.phantoms.rectal import generate_case
from oncoseg.registration import register

NO_INIT_TRANSLATION = {"Transform": "TranslationTransform", "MaximumNumberOfIterations": 0,
                       "AutomaticTransformInitialization": "false"}
SETTINGS = {
    "none": None,
    "rigid": ("rigid", None, "elastix"),
    "affine": ("affine", None, "elastix"),
    "rectal": ("rectal", None, "elastix"),
    "bspline-2res-8k": ("rectal", [NO_INIT_TRANSLATION, {
        "NumberOfResolutions": 2, "ImagePyramidSchedule": [2, 2, 1, 1, 1, 1],
        "MaximumNumberOfIterations": 250, "NumberOfSpatialSamples": 8000}], "elastix"),
    "rigid-simpleitk": ("rigid", None, "simpleitk"),
    "affine-simpleitk": ("affine", None, "simpleitk"),
}
DEFAULT_SETTINGS = ["none", "rigid", "affine", "rectal", "bspline-2res-8k"]


def true_offsets(case: Path, fixed: sitk.Image) -> np.ndarray:
    """DWI(p) shows the anatomy at p - d(p): the T2w point of b0 voxel p is p - d(p)."""
    motion = json.loads((case / "case.json").read_text())["misalignment_dwi_vs_t2w"]
    points = grid_points(fixed).reshape(-1, 3)
    return -smooth_displacement(points, motion["amplitude_mm"], motion["wavelength_mm"],
                                motion["shift_mm"], np.random.default_rng(motion["phase_seed"]))


def measure(case: Path, name: str) -> dict:
    fixed = sitk.ReadImage(str(case / "dwi_b0.nii.gz"), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(case / "t2w.nii.gz"), sitk.sitkFloat32)
    truth = true_offsets(case, fixed)
    body = sitk.GetArrayViewFromImage(fixed).ravel() > 100
    setting = SETTINGS[name]
    seconds = 0.0
    estimate = np.zeros_like(truth)
    if setting is not None:
        preset, stages, engine = setting
        result = register(fixed, moving, preset, stage_overrides=stages, engine=engine)
        estimate = result.displacement_field().reshape(-1, 3)
        seconds = result.seconds
    error = np.abs(estimate - truth)[body]
    return {"setting": name, "mean_error_mm": round(float(np.linalg.norm(
        estimate - truth, axis=1)[body].mean()), 2),
        "xyz_mm": [round(float(v), 2) for v in error.mean(axis=0)], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case"
        generate_case(case, args.seed, 0)
        rows = [measure(case, name) for name in args.settings]
    baseline = next((r["mean_error_mm"] for r in rows if r["setting"] == "none"), None)
    report(rows, args.json, [
        f"{r['setting']:>16}: mean error {r['mean_error_mm']:.2f} mm (x/y/z {r['xyz_mm']})"
        + (f", {r['mean_error_mm'] / baseline:.2f}x no registration" if baseline else "")
        + f", {r['seconds']} s" for r in rows])


if __name__ == "__main__":
    main()
