"""Registration in-process (itk-elastix) vs the elastix executable, same parameter files.

A textured synthetic pelvis: the fixed image on a DWI-like grid, the moving image on a finer
T2-like grid, deformed by a known smooth field. Both runs use the RectalSeg preset's parameter
maps (written to files for the executable). Prints the time ratio in-process / executable, the
largest voxel difference between the two warped images, and the landmark TRE of each.

    python Testing/benchmarks/bench_registration.py            # the paper's full preset
    python Testing/benchmarks/bench_registration.py --quick    # 100 iterations per level
"""

from __future__ import annotations

import argparse
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

from oncoseg.registration import (
    _itk,
    _parameter_object,
    preset_maps,
    register,
    to_itk,
    write_parameter_file,
)

WARP_MM = 5.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 iterations per level")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("elastix") is None:
        raise SystemExit("the elastix executable is not installed (Debian: apt-get install "
                         "elastix)")
    fixed = render(grid(size=(96, 80, 26), spacing=(2.2, 2.2, 4.0)))
    moving = render(grid(size=(160, 128, 26), spacing=(1.3, 1.3, 4.0)), warp=WARP_MM)
    overrides = {"MaximumNumberOfIterations": 100} if args.quick else None
    maps = preset_maps("rectal", overrides)
    points = landmarks()

    started = time.perf_counter()
    # itk's one-time lazy loading of the modules registration uses, reported on its own
    itk = _itk()
    _parameter_object(maps)
    itk.ElastixRegistrationMethod[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
    to_itk(fixed)
    itk_load = time.perf_counter() - started
    result = register(fixed, moving, "rectal", overrides=overrides)
    in_process = result.seconds
    field = sitk.GetImageFromArray(result.displacement_field(), isVector=True)
    field.CopyInformation(fixed)
    tre_in_process = tre(field, points)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sitk.WriteImage(fixed, str(folder / "fixed.mha"))
        sitk.WriteImage(moving, str(folder / "moving.mha"))
        command = ["elastix", "-f", str(folder / "fixed.mha"), "-m", str(folder / "moving.mha"),
                   "-out", str(folder)]
        for index, parameters in enumerate(maps):
            command += ["-p", str(write_parameter_file(parameters, folder / f"p{index}.txt"))]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        executable = time.perf_counter() - started
        warped_cli = sitk.ReadImage(str(folder / f"result.{len(maps) - 1}.mha"))
        files = [folder / f"TransformParameters.{i}.txt" for i in range(len(maps))]
        tre_cli = tre(field_from_parameter_files(files, fixed, folder), points)
        version = subprocess.run(["elastix", "--version"], capture_output=True,
                                 text=True).stdout.strip()

    difference = float(np.abs(sitk.GetArrayViewFromImage(result.warped) -
                              sitk.GetArrayViewFromImage(warped_cli)).max())
    value_range = float(np.ptp(sitk.GetArrayViewFromImage(warped_cli)))
    before = float(np.linalg.norm(true_mapping(points, WARP_MM) - points, axis=1).mean())
    summary = {
        "preset": "rectal" + (" (100 iterations per level)" if args.quick else ""),
        "fixed": "96 x 80 x 26 @ 2.2 x 2.2 x 4 mm", "moving": "160 x 128 x 26 @ 1.3 x 1.3 x 4 mm",
        "in_process_s": round(in_process, 1), "executable_s": round(executable, 1),
        "time_ratio": round(in_process / executable, 3), "itk_first_load_s": round(itk_load, 1),
        "max_abs_difference": difference, "intensity_range": value_range,
        "tre_before_mm": round(before, 2), "tre_in_process_mm": round(tre_in_process, 2),
        "tre_executable_mm": round(tre_cli, 2), "elastix_executable": version,
    }
    report(summary, args.json, [
        f"registration, preset {summary['preset']}; fixed {summary['fixed']}, moving "
        f"{summary['moving']}",
        f"  time      in-process {in_process:7.1f} s   {version} executable "
        f"{executable:7.1f} s   ratio {summary['time_ratio']:.3f}",
        f"  itk's first load (once per process): {itk_load:.1f} s",
        f"  warped images: max abs difference {difference:.3g} (intensity range "
        f"{value_range:.3g})",
        f"  landmark TRE: before {before:.2f} mm, in-process {tre_in_process:.2f} mm, "
        f"executable {tre_cli:.2f} mm"])


if __name__ == "__main__":
    main()
