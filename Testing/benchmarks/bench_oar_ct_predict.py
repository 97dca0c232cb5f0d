"""`oncoseg predict oar-ct` end to end on a clinical-size CT (512 x 512 x 150), 2 CPU cores.

Load (NIfTI), resample to the model's working grid, sliding-window inference, per-organ
clean-up, resampling back, writing every output file: wall time and peak RSS of the command's
process (goal, issue 25: under 15 s and 1 GB on two cores). The peer, in the same run: MONAI's
``sliding_window_inference`` with the same network, weights, window, overlap and blending on the
same working-grid volume; the ratio compares the inference stage alone (OncoSeg's
``timings_s.inference``).

Writing the five probability maps, timed apart on the same prediction (made once more in this
process): each format of ``oncoseg.prediction.PROBABILITY_FORMATS`` from the maps as the task
hands them over (kept on the working grid, resampled while written), against the way before
issue 25 as the peer: every map resampled with ``sitk.Resample`` and written as gzip-compressed
float32 by SimpleITK. Seconds, megabytes on disk and the ratio to the peer.

    python Testing/benchmarks/bench_oar_ct_predict.py [--size Z Y X] [--model FILE|demo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk
import torch
from report import dims, report, versus


def clinical_ct(folder: Path, size_zyx: tuple[int, int, int]) -> Path:
    """A pelvic phantom CT resampled to a clinical matrix (int16 HU), as a NIfTI file."""
    from oncoseg.io.volumes import read_image
    from oncoseg.phantoms.pelvis_ct import generate_case

    generate_case(folder / "phantom", seed=123, case=0)
    ct = read_image(folder / "phantom")
    z, y, x = size_zyx
    extent = np.asarray(ct.GetSize()) * np.asarray(ct.GetSpacing())
    reference = sitk.Image([x, y, z], sitk.sitkInt16)
    reference.SetSpacing(tuple(extent / np.array([x, y, z])))
    reference.SetOrigin(ct.GetOrigin())
    reference.SetDirection(ct.GetDirection())
    big = sitk.Resample(ct, reference, sitk.Transform(), sitk.sitkLinear, -1024, sitk.sitkInt16)
    path = folder / "ct.nii.gz"
    sitk.WriteImage(big, str(path))
    return path


def peak_rss_of(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds and peak RSS (MB) of a child process, sampled every 50 ms."""
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return time.perf_counter() - started, peak / 2**20, process.returncode


def monai_inference_seconds(ct_path: Path, model: str, channels_last: bool = False) -> float:
    """MONAI's sliding window over the same network and working grid; ``channels_last``: the
    network and each window in channels-last, the best a MONAI user can do (the fair peer)."""
    from monai.inferers import sliding_window_inference

    from oncoseg.method import load_task_model, model_settings
    from oncoseg.oar.ct.preprocessing import to_working_grid, working_grid

    loaded = load_task_model("oar-ct", model)
    network, metadata = loaded.network, loaded.metadata
    network.eval()
    predictor = network
    if channels_last:
        network.to(memory_format=torch.channels_last_3d)

        def predictor(x: torch.Tensor) -> torch.Tensor:
            return network(x.contiguous(memory_format=torch.channels_last_3d))
    ct = sitk.ReadImage(str(ct_path))
    # the model's grid: its working grid, or the CT's own voxels (spacing_mm null)
    spacing = model_settings("oar-ct", metadata).grid_spacing
    hu = to_working_grid(ct, working_grid(ct, spacing))
    started = time.perf_counter()
    with torch.inference_mode():
        x = torch.from_numpy(np.clip(hu, -800, 800) / 800.0)[None, None].float()
        logits = sliding_window_inference(x, tuple(metadata.preprocessing["patch_size"]), 2,
                                          predictor, overlap=0.5, mode="gaussian")
        torch.softmax(logits, 1)
    return time.perf_counter() - started


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def writing_figures(ct_path: Path, model: str, folder: Path) -> dict[str, dict[str, float]]:
    """Seconds and MB to write the five maps in each format, and the peer's (the pre-issue-25
    way: sitk.Resample of every map, then gzip float32 through SimpleITK)."""
    from oncoseg import verbs
    from oncoseg.geometry import resample_to_reference
    from oncoseg.prediction import PROBABILITY_FORMATS, ResampledMaps, write_probability_map

    ct = sitk.ReadImage(str(ct_path))
    maps = verbs.predict("oar-ct", {"ct": ct}, model).probabilities
    figures = {}
    for name in PROBABILITY_FORMATS:
        out = folder / name
        out.mkdir()
        started = time.perf_counter()
        for organ in maps:
            write_probability_map(maps, organ, out / f"{organ}{PROBABILITY_FORMATS[name]}", name)
        figures[name] = {"s": time.perf_counter() - started, "mb": folder_mb(out)}
    out = folder / "peer"
    out.mkdir()
    sources = maps.sources if isinstance(maps, ResampledMaps) else maps
    started = time.perf_counter()
    for organ, source in sources.items():
        image = resample_to_reference(source, ct, "linear")
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(out / f"{organ}.nii.gz"),
                        useCompression=True)
    figures["peer_resample_and_float32_gzip"] = {"s": time.perf_counter() - started,
                                                 "mb": folder_mb(out)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[150, 512, 512], help="z y x")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ct = clinical_ct(folder, tuple(args.size))
        command = [sys.executable, "-m", "oncoseg", "predict", "oar-ct", "--input", f"ct={ct}",
                   "--model", args.model, "--output", str(folder / "out"), "--device", "cpu",
                   "--progress", "none"]
        wall, rss, code = peak_rss_of(command)
        if code != 0:
            raise SystemExit(f"oncoseg predict failed with exit code {code}")
        result = json.loads((folder / "out" / "result.json").read_text())
        monai_s = monai_inference_seconds(ct, args.model)
        monai_cl_s = monai_inference_seconds(ct, args.model, channels_last=True)
        writing = writing_figures(ct, args.model, folder)
    peer = writing["peer_resample_and_float32_gzip"]
    writing_ratios = {name: round(f["s"] / peer["s"], 3) for name, f in writing.items()
                      if name != "peer_resample_and_float32_gzip"}
    inference = result["timings_s"]["inference"]
    summary = {"size_zyx": args.size, "wall_s": round(wall, 1), "peak_rss_mb": round(rss),
               "timings_s": result["timings_s"], "working_grid": result["details"][
                   "working_grid"], "monai_inference_s": round(monai_s, 2),
               "inference_ratio_oncoseg_over_monai": round(inference / monai_s, 2),
               "monai_channels_last_inference_s": round(monai_cl_s, 2),
               "inference_ratio_oncoseg_over_monai_channels_last": round(
                   inference / monai_cl_s, 2),
               "writing": {name: {"s": round(f["s"], 2), "mb": round(f["mb"], 1)}
                           for name, f in writing.items()},
               "writing_ratio_over_peer": writing_ratios,
               "threads": torch.get_num_threads()}
    report(summary, args.json, [
        f"oncoseg predict oar-ct on {dims(args.size)} (z y x): {wall:.1f} s wall (goal < 15 s), "
        f"peak RSS {rss:.0f} MB (goal < 1024 MB)",
        f"  stages: {result['timings_s']}",
        versus("inference stage", inference, "MONAI sliding_window_inference", monai_s,
               summary["inference_ratio_oncoseg_over_monai"]),
        versus("inference stage", inference, "MONAI, network and windows channels-last",
               monai_cl_s, summary["inference_ratio_oncoseg_over_monai_channels_last"]),
        *(versus(f"writing 5 maps as {name} ({writing[name]['mb']:.1f} MB)", writing[name]["s"],
                 f"sitk.Resample + float32 gzip ({peer['mb']:.1f} MB)", peer["s"], ratio)
          for name, ratio in writing_ratios.items())])


if __name__ == "__main__":
    main()
