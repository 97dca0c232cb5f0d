"""Registration from a fresh process (imports included) vs the elastix executable, same parameters.

A textured synthetic pelvis: the fixed image on a DWI-like grid, the moving image on a finer
T2-like grid, deformed by a known smooth field. For each preset (rigid, affine, the RectalSeg
paper's 'rectal': affine then B-spline) OncoSeg registers in a new Python process, timed from
its start to the warped image written (interpreter start, imports, itk's loading and the
registration: what a command pays), and the elastix executable runs the same parameter maps
written as files, timed from its start to its result image written, in the same run. Both
read and write MetaImage files. Prints the time ratio OncoSeg / executable per preset, the
largest voxel difference between the two warped images, and the landmark TRE of each; for
rigid and affine also the opt-in SimpleITK engine's (oncoseg.registration, engine="simpleitk").

    python Testing/benchmarks/bench_registration.py            # the presets as shipped
    python Testing/benchmarks/bench_registration.py --quick    # 100 iterations per level
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from deformations import grid, landmarks, render, true_mapping
from report import report

from oncoseg.registration import preset_maps, write_parameter_file

WARP_MM = 5.0
PRESETS = ("rigid", "affine", "rectal")

# The fresh process: imports, reading, registration, the warped image written; the time stamp
# printed then; the displacement field (for the TRE) afterwards, untimed.
CHILD = """
import json, sys, time
import numpy as np
import SimpleITK as sitk
from oncoseg.registration import register
folder, preset, engine, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
fixed = sitk.ReadImage(folder + "/fixed.mha")
moving = sitk.ReadImage(folder + "/moving.mha")
result = register(fixed, moving, preset, overrides=overrides or None, engine=engine)
sitk.WriteImage(result.warped, f"{folder}/oncoseg-{preset}-{engine}.mha")
print(time.time(), flush=True)
np.save(f"{folder}/field-{preset}-{engine}.npy", result.displacement_field())
"""


def tre(field_image: sitk.Image, points: np.ndarray) -> float:
    """Mean landmark error of a displacement field image (fixed grid, LPS mm)."""
    moved = []
    for p in points:
        d = field_image.EvaluateAtPhysicalPoint(tuple(p), sitk.sitkLinear)
        moved.append(np.asarray(p) + np.asarray(d))
    return float(np.linalg.norm(np.array(moved) - true_mapping(points, WARP_MM), axis=1).mean())


def field_from_parameter_files(files: list[Path], fixed: sitk.Image, folder: Path) -> sitk.Image:
    """transformix executable's deformation field for the elastix executable's transform."""
    out = folder / "field"
    out.mkdir()
    subprocess.run(["transformix", "-def", "all", "-tp", str(files[-1]), "-out", str(out)],
                   check=True, capture_output=True)
    field = sitk.ReadImage(str(next(out.glob("deformationField.mh[ad]"))))
    field.CopyInformation(fixed)
    return field


def fresh_process(folder: Path, preset: str, engine: str, overrides: dict | None,
                  fixed: sitk.Image) -> tuple[float, sitk.Image, sitk.Image]:
    """Seconds from the process's start to its warped image written; warped; field."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), preset, engine,
                           json.dumps(overrides or {})], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    seconds = float(done.stdout.split()[0]) - started
    field = sitk.GetImageFromArray(np.load(folder / f"field-{preset}-{engine}.npy"),
                                   isVector=True)
    field.CopyInformation(fixed)
    return seconds, sitk.ReadImage(str(folder / f"oncoseg-{preset}-{engine}.mha")), field


def executable(folder: Path, preset: str, overrides: dict | None,
               fixed: sitk.Image) -> tuple[float, sitk.Image, sitk.Image]:
    out = folder / f"elastix-{preset}"
    out.mkdir()
    maps = preset_maps(preset, overrides)
    command = ["elastix", "-f", str(folder / "fixed.mha"), "-m", str(folder / "moving.mha"),
               "-out", str(out)]
    for index, parameters in enumerate(maps):
        command += ["-p", str(write_parameter_file(parameters, out / f"p{index}.txt"))]
    started = time.time()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.time() - started
    warped = sitk.ReadImage(str(out / f"result.{len(maps) - 1}.mha"))
    files = [out / f"TransformParameters.{i}.txt" for i in range(len(maps))]
    return seconds, warped, field_from_parameter_files(files, fixed, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 iterations per level")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("elastix") is None:
        raise SystemExit("the elastix executable is not installed (Debian: apt-get install "
                         "elastix)")
    fixed = render(grid(size=(96, 80, 26), spacing=(2.2, 2.2, 4.0)))
    moving = render(grid(size=(160, 128, 26), spacing=(1.3, 1.3, 4.0)), warp=WARP_MM)
    overrides = {"MaximumNumberOfIterations": 100} if args.quick else None
    points = landmarks()
    before = float(np.linalg.norm(true_mapping(points, WARP_MM) - points, axis=1).mean())
    version = subprocess.run(["elastix", "--version"], capture_output=True,
                             text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="oncoseg-bench-registration-") as tmp:
        folder = Path(tmp)
        sitk.WriteImage(fixed, str(folder / "fixed.mha"))
        sitk.WriteImage(moving, str(folder / "moving.mha"))
        for preset in args.presets:
            ours, warped, field = fresh_process(folder, preset, "elastix", overrides, fixed)
            theirs, warped_cli, field_cli = executable(folder, preset, overrides, fixed)
            row = {"preset": preset, "oncoseg_s": round(ours, 2), "executable_s": round(theirs, 2),
                   "time_ratio": round(ours / theirs, 3),
                   "max_abs_difference": float(np.abs(sitk.GetArrayViewFromImage(warped) -
                                                      sitk.GetArrayViewFromImage(warped_cli))
                                               .max()),
                   "tre_oncoseg_mm": round(tre(field, points), 2),
                   "tre_executable_mm": round(tre(field_cli, points), 2)}
            if preset != "rectal":
                seconds, _, field_sitk = fresh_process(folder, preset, "simpleitk", overrides,
                                                       fixed)
                row.update(simpleitk_s=round(seconds, 2),
                           tre_simpleitk_mm=round(tre(field_sitk, points), 2))
            rows.append(row)
    last = rows[-1]
    summary = {
        "iterations": "100 per level" if args.quick else "the presets'",
        "fixed": "96 x 80 x 26 @ 2.2 x 2.2 x 4 mm", "moving": "160 x 128 x 26 @ 1.3 x 1.3 x 4 mm",
        "elastix_executable": version, "tre_before_mm": round(before, 2), "presets": rows,
        # the last preset's (the paper's 'rectal' by default), under the names the suite reads
        "time_ratio": last["time_ratio"], "tre_in_process_mm": last["tre_oncoseg_mm"],
        "tre_executable_mm": last["tre_executable_mm"],
    }
    lines = [f"registration from a fresh process vs the {version} executable, iterations "
             f"{summary['iterations']}; fixed {summary['fixed']}, moving {summary['moving']}; "
             f"landmark TRE before {before:.2f} mm"]
    for row in rows:
        lines.append(
            f"  {row['preset']:>6}: OncoSeg {row['oncoseg_s']:6.2f} s, executable "
            f"{row['executable_s']:6.2f} s, ratio {row['time_ratio']:.3f}; TRE OncoSeg "
            f"{row['tre_oncoseg_mm']:.2f} mm, executable {row['tre_executable_mm']:.2f} mm; "
            f"warped max abs difference {row['max_abs_difference']:.3g}"
            + (f"; SimpleITK engine {row['simpleitk_s']:.2f} s, TRE "
               f"{row['tre_simpleitk_mm']:.2f} mm" if "simpleitk_s" in row else ""))
    report(summary, args.json, lines)


if __name__ == "__main__":
    main()
