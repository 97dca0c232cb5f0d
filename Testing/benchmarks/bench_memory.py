"""Peak memory of `oncoseg predict oar-ct` against CT size, and what each MR task takes per
input voxel.

Sizes (default 256, 512, 768, 1024): an int16 CT of N^3 voxels over a 512 mm field of view
(0.5 mm voxels at 1024), the pelvic phantom in its middle and air around it, written slab by
slab as an uncompressed MetaImage in a temporary folder (2 GB at 1024; deleted afterwards). Each
command runs in its own process; its peak RSS comes from ``getrusage(RUSAGE_CHILDREN)`` of a
wrapper process that ran only it. The peer, in the same run: reading the same file whole with
``sitk.ReadImage`` (the least any tool holding the CT in memory needs); the ratio is OncoSeg's
peak over the peer's. Goal: peak RSS <= 6 GB at 1024^3.

``--tasks rectal brain ...``: each task's demo on one phantom case and on the same case
upsampled 2x per axis (8x the voxels): the peak RSS difference over the voxel difference is
what the task takes per input voxel (oncoseg.validation.METHOD_BYTES_PER_VOXEL).

    python Testing/benchmarks/bench_memory.py [--sizes 256 512 ...] [--tasks rectal ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

FIELD_OF_VIEW_MM = 512.0
# a wrapper that runs one command and reports only that command's peak RSS and wall time
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": result.returncode, "wall_s": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stderr": result.stderr[-3000:]}))
"""


def measure(command: list[str]) -> dict:
    output = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)],
                            capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result['stderr']}")
    return result


def phantom_ct(folder: Path) -> sitk.Image:
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms.pelvis_ct import generate_case

    generate_case(folder / "phantom", seed=123, case=0)
    return read_image(folder / "phantom")


def write_big_ct(phantom: sitk.Image, size: int, path: Path,
                 field_of_view: float = FIELD_OF_VIEW_MM) -> None:
    """An uncompressed MetaImage of size^3 int16 voxels, written slab by slab (the bench never
    holds the whole volume either)."""
    from oncoseg.errors import InputError
    from oncoseg.tiling import Geometry, VolumeSource, resample_onto

    spacing = field_of_view / size
    centre = np.asarray(phantom.TransformContinuousIndexToPhysicalPoint(
        (np.asarray(phantom.GetSize()) - 1) / 2.0))
    origin = centre - spacing * (size - 1) / 2.0
    grid = Geometry((size, size, size), (spacing,) * 3, tuple(float(o) for o in origin),
                    (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True",
        "BinaryDataByteOrderMSB = False", "CompressedData = False",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1", f"Offset = {' '.join(f'{o:.6f}' for o in origin)}",
        "AnatomicalOrientation = RAI", f"ElementSpacing = {spacing} {spacing} {spacing}",
        f"DimSize = {size} {size} {size}", "ElementType = MET_SHORT",
        "ElementDataFile = LOCAL"]) + "\n"
    source = VolumeSource(phantom)
    step = max(1, (32 << 20) // (4 * size * size))
    with path.open("wb") as handle:
        handle.write(header.encode("ascii"))
        for start in range(0, size, step):
            slab = grid.slab(start, min(size, start + step))
            try:
                hu = resample_onto(source, slab, "linear", default_value=-1000.0,
                                   names=("phantom", "slab"))
            except InputError:  # a slab above or below the phantom: air
                hu = np.full(slab.size[::-1], -1000.0, np.float32)
            handle.write(np.round(hu).astype("<i2").tobytes())


def run_size(size: int, phantom: sitk.Image, work: Path,
             field_of_view: float = FIELD_OF_VIEW_MM) -> dict:
    path = work / f"ct_{size}.mha"
    write_big_ct(phantom, size, path, field_of_view)
    peer = measure([sys.executable, "-c",
                    f"import SimpleITK as sitk; sitk.ReadImage({str(path)!r})"])
    out = work / f"out_{size}"
    ours = measure([sys.executable, "-m", "oncoseg", "predict", "oar-ct", "--input",
                    f"ct={path}", "--output", out, "--device", "cpu", "--progress", "none"])
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    row = {"size": size, "voxels": size ** 3, "file_mb": round(path.stat().st_size / 2**20, 1),
           "peer_read_peak_rss_mb": round(peer["peak_rss_mb"]),
           "peer_read_wall_s": round(peer["wall_s"], 2),
           "oncoseg_peak_rss_mb": round(ours["peak_rss_mb"]),
           "oncoseg_wall_s": round(ours["wall_s"], 1),
           "ratio_oncoseg_over_peer": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2),
           "timings_s": result["timings_s"],
           "probability_grid": result["details"].get("probability_grid"),
           "output_mb": round(written / 2**20, 1)}
    path.unlink()
    shutil.rmtree(out)
    return row


def upsampled(source: Path, target: Path) -> None:
    from oncoseg.io.volumes import read_image

    image = read_image(source)
    size = [2 * n for n in image.GetSize()]
    spacing = [s / 2 for s in image.GetSpacing()]
    origin = image.TransformContinuousIndexToPhysicalPoint([-0.25, -0.25, -0.25])
    sitk.WriteImage(sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin,
                                  spacing, image.GetDirection(), 0.0, image.GetPixelID()),
                    str(target))


def task_inputs(task: str, work: Path) -> dict[str, Path]:
    from oncoseg.verbs import phantom

    root = work / f"phantom_{task}"
    phantom(task, root, cases=1, seed=0)
    if task == "rectal":
        case = next(root.iterdir())
        return {r: case / f"{r}.nii.gz" for r in ("t2w", "dwi_b0", "dwi_b1000")}
    if task == "staging":
        case = next(p for p in root.iterdir() if p.is_dir())
        return {"t2w": case / "t2w.nii.gz"}
    if task == "brain":
        case = next(p for p in root.iterdir() if p.is_dir())
        names = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
        return {r: next(case.glob(f"*_{n}.nii.gz")) for r, n in names.items()}
    raise SystemExit(f"--tasks: {task} has no per-voxel measurement here")


def run_task(task: str, work: Path) -> dict:
    inputs = task_inputs(task, work)
    peaks, voxels = [], []
    for factor in (1, 2):
        paths = dict(inputs)
        if factor == 2:
            paths = {r: work / f"{task}_{r}_x2.nrrd" for r in inputs}
            for role, path in paths.items():
                upsampled(inputs[role], path)
        count = 0
        for path in paths.values():
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            count += int(np.prod(reader.GetSize()))
        args = [a for r, p in paths.items() for a in ("--input", f"{r}={p}")]
        if task == "staging":  # the same crop's size as the phantom's ROI box, at the centre
            args += ["--set", "without_roi=centre"]
        run = measure([sys.executable, "-m", "oncoseg", "predict", task, *args, "--output",
                       work / f"{task}_out_{factor}", "--device", "cpu", "--progress", "none"])
        peaks.append(run["peak_rss_mb"])
        voxels.append(count)
    per_voxel = (peaks[1] - peaks[0]) * 2**20 / (voxels[1] - voxels[0])
    return {"task": task, "input_voxels": voxels, "peak_rss_mb": [round(p) for p in peaks],
            "bytes_per_input_voxel": round(per_voxel, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 768, 1024])
    parser.add_argument("--field-of-view", type=float, default=FIELD_OF_VIEW_MM,
                        help="mm covered by every CT (the working grid's size does not change "
                        "with N)")
    parser.add_argument("--tasks", nargs="*", default=[])
    parser.add_argument("--json", action="store_true", help="one JSON line at the end")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oncoseg-bench-memory-"))
    try:
        needed = max(args.sizes, default=0) ** 3 * 2
        free = shutil.disk_usage(work).free
        if needed * 1.5 > free:
            raise SystemExit(f"{work}: {free / 2**30:.1f} GB free, the largest CT needs "
                             f"{needed / 2**30:.1f} GB")
        rows = []
        phantom = phantom_ct(work) if args.sizes else None
        for size in args.sizes:
            rows.append(run_size(size, phantom, work, args.field_of_view))
            if not args.json:
                print(json.dumps(rows[-1]), flush=True)
        tasks = []
        for task in args.tasks:
            tasks.append(run_task(task, work))
            if not args.json:
                print(json.dumps(tasks[-1]), flush=True)
        if not args.json and rows:
            print("\n| CT (int16) | file | sitk.ReadImage peak | oncoseg predict oar-ct peak | "
                  "ratio | wall |")
            print("|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['size']}^3 | {r['file_mb']:.0f} MB | {r['peer_read_peak_rss_mb']} MB "
                      f"| {r['oncoseg_peak_rss_mb']} MB | {r['ratio_oncoseg_over_peer']} | "
                      f"{r['oncoseg_wall_s']} s |")
        if args.json:
            print(json.dumps({"sizes": rows, "tasks": tasks}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
