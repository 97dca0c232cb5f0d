"""`oncoseg predict brain` end to end on a BraTS-size case (240 x 240 x 155, 1 mm), 2 CPU cores.

Reading four NIfTI files, median normalisation, the three 2D models over every axial, coronal
and sagittal slice, the 2D-3D members tiled in patches, the hierarchical vote, resampling back
and writing every output: wall time and peak RSS of the command's process. The peer, in the
same run: MONAI's ``sliding_window_inference`` running the same 2D-3D members (same weights,
window, overlap and Gaussian blending) on the same 16-channel input; the ratio compares that
stage alone.

    python Testing/benchmarks/bench_brain_pipeline.py [--size Z Y X] [--model FILE|demo]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from bench_oar_ct_predict import peak_rss_of
from report import dims, report, versus

from oncoseg.brain.config import SEQUENCES


def brats_size_case(folder: Path, size_zyx: tuple[int, int, int]) -> dict[str, Path]:
    """A brain phantom resampled onto a BraTS matrix, one NIfTI file per sequence: at 1 mm,
    or coarser along an axis where the matrix is smaller than the phantom's field of view (a
    whole brain, as the method reads it, not a crop inside one)."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.verbs import phantom

    phantom("brain", folder / "phantom", cases=1, seed=77)
    case = read_dataset(folder / "phantom").cases[0]
    z, y, x = size_zyx
    paths = {}
    for role in SEQUENCES:
        image = case.read(role)
        centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(
            [(s - 1) / 2 for s in image.GetSize()]))
        extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
        spacing = np.maximum(1.0, extent / np.array([x, y, z]))
        reference = sitk.Image([x, y, z], sitk.sitkFloat32)
        reference.SetDirection(image.GetDirection())
        reference.SetSpacing(spacing.tolist())
        reference.SetOrigin(tuple(centre - np.asarray(image.GetDirection()).reshape(3, 3)
                                  @ (spacing * (np.array([x, y, z]) - 1)) / 2))
        big = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                            sitk.sitkFloat32)
        paths[role] = folder / f"{role}.nii.gz"
        sitk.WriteImage(big, str(paths[role]))
    return paths


def monai_members_seconds(paths: dict[str, Path], model: str, device: str = "cpu",
                          channels_last: bool = False) -> float:
    """MONAI's sliding window over the same members and input as OncoSeg's 2D-3D stage;
    ``channels_last``: each member and window in channels-last (the fair peer)."""
    from monai.inferers import sliding_window_inference

    from oncoseg.brain.predict import features_2d
    from oncoseg.brain.preprocessing import prepare_volume
    from oncoseg.verbs import RunContext, prepare

    prepared = prepare("brain", model, context=RunContext(device))
    ensemble, config = prepared.network, prepared.settings
    volume = prepare_volume({r: sitk.ReadImage(str(p)) for r, p in paths.items()},
                            config.intensity_constant)
    data = {kind: torch.from_numpy(np.concatenate([
        volume.array, features_2d(ensemble.models_2d(kind), volume.array, volume.present,
                                  device)]))[None].to(device)
            for kind in dict.fromkeys(n.features_from for n in ensemble.nets3d)}
    k = volume.array.shape[0]
    synchronise = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    synchronise()
    started = time.perf_counter()
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    with torch.inference_mode():
        for network in ensemble.nets3d:  # each member on its 2D model's features
            if channels_last:
                network.to(memory_format=layout)
            logits = sliding_window_inference(
                data[network.features_from], (config.patch,) * 3, 1,
                lambda x, n=network: n(x[:, :k].contiguous(memory_format=layout),
                                       x[:, k:].contiguous(memory_format=layout)),
                overlap=config.overlap, mode="gaussian")
            torch.softmax(logits, 1)
    synchronise()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[155, 240, 240], help="z y x")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = brats_size_case(folder, tuple(args.size))
        command = [sys.executable, "-m", "oncoseg", "predict", "brain", "--model", args.model,
                   "--output", str(folder / "out"), "--device", args.device, "--progress", "none"]
        for role, path in paths.items():
            command += ["--input", f"{role}={path}"]
        wall, rss, code = peak_rss_of(command)
        if code != 0:
            raise SystemExit(f"oncoseg predict failed with exit code {code}")
        result = json.loads((folder / "out" / "result.json").read_text())
        monai_s = monai_members_seconds(paths, args.model, args.device)
        monai_cl_s = monai_members_seconds(paths, args.model, args.device, channels_last=True)
    stages = result["details"]["inference_stages_s"]
    summary = {"size_zyx": args.size, "wall_s": round(wall, 1), "peak_rss_mb": round(rss),
               "timings_s": result["timings_s"], "inference_stages_s": stages,
               "monai_members_s": round(monai_s, 2),
               "members_ratio_oncoseg_over_monai": round(stages["models_2d3d"] / monai_s, 2),
               "monai_channels_last_members_s": round(monai_cl_s, 2),
               "members_ratio_oncoseg_over_monai_channels_last": round(
                   stages["models_2d3d"] / monai_cl_s, 2),
               "threads": torch.get_num_threads(), "device": args.device}
    report(summary, args.json, [
        f"oncoseg predict brain on {dims(args.size)} (z y x): {wall:.1f} s wall, peak RSS "
        f"{rss:.0f} MB",
        f"  stages: {result['timings_s']}; inside inference: {stages}",
        versus("2D-3D members", stages["models_2d3d"], "MONAI sliding_window_inference", monai_s,
               summary["members_ratio_oncoseg_over_monai"]),
        versus("2D-3D members", stages["models_2d3d"], "MONAI, members and windows "
               "channels-last", monai_cl_s,
               summary["members_ratio_oncoseg_over_monai_channels_last"])])


if __name__ == "__main__":
    main()
