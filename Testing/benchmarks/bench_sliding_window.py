"""Sliding-window inference, OncoSeg vs MONAI, on a CT-sized volume.

The pipeline each side runs is the one an organ-at-risk model needs: an int16 CT in HU ->
HU window [-800, 800] / 800 -> 3D network -> softmax probabilities for every class (float32).
MONAI's way: normalise the whole volume, ``sliding_window_inference`` (Gaussian blending),
``softmax``. OncoSeg's way: ``SlidingWindow`` with the HU window as ``window_transform`` and the
softmax as ``finalize``. Same network, weights, window, overlap, batch size and blending; each
side runs in its own process so peak RSS is its own. The outputs are compared on a sample of
voxels before any figure is printed.

    python Testing/benchmarks/bench_sliding_window.py                 # 150 x 512 x 512
    python Testing/benchmarks/bench_sliding_window.py --size 24 64 64 # quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import dims, report


def network(classes: int = 6) -> torch.nn.Module:
    """A small 3D encoder-decoder (two scales), the size of a memory-lean OAR model."""
    torch.manual_seed(0)
    c = torch.nn
    return c.Sequential(
        c.Conv3d(1, 16, 3, padding=1), c.ReLU(),
        c.Conv3d(16, 32, 3, stride=2, padding=1), c.ReLU(),
        c.Conv3d(32, 32, 3, padding=1), c.ReLU(),
        c.ConvTranspose3d(32, 16, 2, stride=2), c.ReLU(),
        c.Conv3d(16, classes, 1),
    ).eval()


def ct_volume(size: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 1500, size=size, dtype=np.int16)


def hu_window(x: torch.Tensor) -> torch.Tensor:
    return x.float().clamp_(-800, 800).div_(800)


def run_one(impl: str, size, window, overlap, batch, sample_path: str) -> dict:
    from monai.inferers import sliding_window_inference

    from oncoseg.inference import SlidingWindow

    net = network()
    ct = ct_volume(size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if impl == "monai":
        with torch.inference_mode():
            x = hu_window(torch.from_numpy(ct))[None, None]
            logits = sliding_window_inference(x, window, batch, net, overlap=overlap,
                                              mode="gaussian")
            probabilities = torch.softmax(logits, dim=1)[0]
    else:
        probabilities = SlidingWindow(window, overlap=overlap, batch_size=batch)(
            torch.from_numpy(ct)[None], net, window_transform=hu_window,
            finalize=lambda rows: torch.softmax(rows, dim=0))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(sample_path, probabilities.reshape(probabilities.shape[0], -1)[:, ::97].numpy())
    return {"impl": impl, "seconds": seconds, "peak_rss_mb": peak,
            "rss_before_inference_mb": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[150, 512, 512], help="z y x")
    parser.add_argument("--window", type=int, nargs=3, default=[64, 128, 128], help="z y x")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--impl", choices=["monai", "oncoseg"], help=argparse.SUPPRESS)
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_one(args.impl, tuple(args.size), tuple(args.window), args.overlap,
                                 args.batch, args.sample)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("monai", "oncoseg"):
            sample = str(Path(tmp) / f"{impl}.npy")
            out = subprocess.run(
                [sys.executable, __file__, "--impl", impl, "--sample", sample,
                 "--size", *map(str, args.size), "--window", *map(str, args.window),
                 "--overlap", str(args.overlap), "--batch", str(args.batch)],
                check=True, capture_output=True, text=True)
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            results[impl]["sample"] = np.load(sample)
        difference = float(np.abs(results["monai"]["sample"] -
                                  results["oncoseg"]["sample"]).max())
    m, o = results["monai"], results["oncoseg"]
    summary = {
        "volume": args.size, "window": args.window, "overlap": args.overlap,
        "batch": args.batch, "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                   f"threads, torch {torch.__version__}",
        "max_abs_difference": difference,
        "monai_seconds": round(m["seconds"], 2), "oncoseg_seconds": round(o["seconds"], 2),
        "time_ratio": round(o["seconds"] / m["seconds"], 3),
        "monai_peak_rss_mb": round(m["peak_rss_mb"]), "oncoseg_peak_rss_mb":
            round(o["peak_rss_mb"]),
        "peak_rss_ratio": round(o["peak_rss_mb"] / m["peak_rss_mb"], 3),
        "monai_added_mb": round(m["peak_rss_mb"] - m["rss_before_inference_mb"]),
        "oncoseg_added_mb": round(o["peak_rss_mb"] - o["rss_before_inference_mb"]),
    }
    summary["added_memory_ratio"] = round(summary["oncoseg_added_mb"] /
                                          max(summary["monai_added_mb"], 1), 3)
    if difference > 1e-4:
        raise SystemExit(f"outputs differ by {difference:g}: not a fair comparison")
    report(summary, args.json, [
        f"sliding window, {dims(args.size)} voxels, window {dims(args.window)}, overlap "
        f"{args.overlap}, batch {args.batch}",
        f"  outputs agree: max abs difference {difference:.2e}",
        f"  time      MONAI {m['seconds']:8.2f} s   OncoSeg {o['seconds']:8.2f} s   "
        f"ratio {summary['time_ratio']:.3f}",
        f"  peak RSS  MONAI {m['peak_rss_mb']:8.0f} MB  OncoSeg {o['peak_rss_mb']:8.0f} MB  "
        f"ratio {summary['peak_rss_ratio']:.3f}",
        f"  added by inference  MONAI {summary['monai_added_mb']} MB  OncoSeg "
        f"{summary['oncoseg_added_mb']} MB  ratio {summary['added_memory_ratio']:.3f}"])


if __name__ == "__main__":
    main()
