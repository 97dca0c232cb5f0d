"""Sliding-window inference, OncoSeg vs MONAI (as written and channels-last), on a CT volume.

The pipeline each side runs is the one an organ-at-risk model needs: an int16 CT in HU ->
HU window [-800, 800] / 800 -> 3D network -> softmax probabilities for every class (float32).
MONAI's way: normalise the whole volume, ``sliding_window_inference`` (Gaussian blending),
``softmax``; once as a user writes it, once with the network and every window in channels-last
memory format (``net.to(memory_format=torch.channels_last_3d)`` and a predictor that makes each
batch channels-last: the best a MONAI user can do, and the peer the ratios are taken against,
issue 25). OncoSeg's way: ``SlidingWindow`` with the HU window as ``window_transform`` and the
softmax as ``finalize``. Same network, weights, window, overlap, batch size and blending; each
arm runs in its own process so peak RSS is its own (the OncoSeg process does not import MONAI).
The outputs are compared on a sample of voxels before any figure is printed.

Networks: ``project`` (the default: a small two-scale encoder-decoder, 6 classes, on
150 x 512 x 512, window 64 x 128 x 128, batch 2) and ``basicunet`` (MONAI's BasicUNet with its
default features, 8 classes, on 120 x 400 x 400, window 96^3, batch 4: a network and volume
nobody on the project chose). ``--low-precision`` adds OncoSeg arms with float16 and uint8
output, reported apart (they are not equal outputs).

    python Testing/benchmarks/bench_sliding_window.py                      # project network
    python Testing/benchmarks/bench_sliding_window.py --network basicunet  # MONAI's BasicUNet
    python Testing/benchmarks/bench_sliding_window.py --size 24 64 64      # quick check
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

NETWORKS = {  # name: (default volume, window, batch)
    "project": ((150, 512, 512), (64, 128, 128), 2),
    "basicunet": ((120, 400, 400), (96, 96, 96), 4),
}


def network(classes: int = 6, name: str = "project") -> torch.nn.Module:
    """A small 3D encoder-decoder (two scales), the size of a memory-lean OAR model; or
    MONAI's BasicUNet (default features, instance norm, 8 classes) with ``name="basicunet"``."""
    torch.manual_seed(0)
    if name == "basicunet":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=3, in_channels=1, out_channels=8).eval()
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


OUTPUT_TYPES = {"oncoseg": torch.float32, "oncoseg-float16": torch.float16,
                "oncoseg-uint8": torch.uint8}


def run_one(impl: str, name: str, size, window, overlap, batch, sample_path: str) -> dict:
    """One arm in this process: seconds, peak RSS and a sample of its output (saved)."""
    net = network(name=name)
    ct = ct_volume(size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    if impl.startswith("monai"):
        from monai.inferers import sliding_window_inference

        predictor = net
        if impl == "monai-cl":  # the best a MONAI user can do: weights and windows channels-last
            net.to(memory_format=torch.channels_last_3d)

            def predictor(x: torch.Tensor) -> torch.Tensor:
                return net(x.contiguous(memory_format=torch.channels_last_3d))

        with torch.inference_mode():
            x = hu_window(torch.from_numpy(ct))[None, None]
            logits = sliding_window_inference(x, window, batch, predictor, overlap=overlap,
                                              mode="gaussian")
            probabilities = torch.softmax(logits, dim=1)[0]
    else:
        from oncoseg.inference import SlidingWindow

        probabilities = SlidingWindow(window, overlap=overlap, batch_size=batch,
                                      output_dtype=OUTPUT_TYPES[impl], prepare_network=True)(
            torch.from_numpy(ct)[None], net, window_transform=hu_window,
            finalize=lambda rows: torch.softmax(rows, dim=0))
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # all threads: less sensitive to other load
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sample = probabilities.reshape(probabilities.shape[0], -1)[:, ::97].float()
    if probabilities.dtype == torch.uint8:
        sample /= 255
    np.save(sample_path, sample.numpy())
    return {"impl": impl, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak,
            "rss_before_inference_mb": baseline,
            "output_mb": probabilities.element_size() * probabilities.numel() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(NETWORKS), default="project")
    parser.add_argument("--size", type=int, nargs=3, help="z y x (default: the network's)")
    parser.add_argument("--window", type=int, nargs=3, help="z y x (default: the network's)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, help="windows per batch (default: the network's)")
    parser.add_argument("--low-precision", action="store_true",
                        help="also OncoSeg with float16 and uint8 output (reported apart)")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    size, window, batch = NETWORKS[args.network]
    size = tuple(args.size or size)
    window = tuple(args.window or window)
    batch = args.batch or batch
    if args.impl:
        print(json.dumps(run_one(args.impl, args.network, size, window, args.overlap, batch,
                                 args.sample)))
        return

    arms = ["monai", "monai-cl", "oncoseg"]
    if args.low_precision:
        arms += ["oncoseg-float16", "oncoseg-uint8"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in arms:
            sample = str(Path(tmp) / f"{impl}.npy")
            out = subprocess.run(
                [sys.executable, __file__, "--impl", impl, "--sample", sample,
                 "--network", args.network, "--size", *map(str, size),
                 "--window", *map(str, window), "--overlap", str(args.overlap),
                 "--batch", str(batch)],
                check=True, capture_output=True, text=True)
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            results[impl]["sample"] = np.load(sample)
    peer = results["monai-cl"]["sample"]
    for impl in arms:
        results[impl]["difference"] = float(np.abs(results[impl].pop("sample") - peer).max())
    difference = max(results["oncoseg"]["difference"], results["monai"]["difference"])
    m, c, o = results["monai"], results["monai-cl"], results["oncoseg"]
    summary = {
        "network": args.network, "volume": list(size), "window": list(window),
        "overlap": args.overlap, "batch": batch, "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                   f"threads, torch {torch.__version__}",
        "max_abs_difference": difference,
        "monai_seconds": round(m["seconds"], 2),
        "monai_cl_seconds": round(c["seconds"], 2),
        "oncoseg_seconds": round(o["seconds"], 2),
        "time_ratio": round(o["seconds"] / c["seconds"], 3),
        "time_ratio_vs_monai_as_written": round(o["seconds"] / m["seconds"], 3),
        "monai_cl_cpu_seconds": round(c["cpu_seconds"], 2),
        "oncoseg_cpu_seconds": round(o["cpu_seconds"], 2),
        "cpu_time_ratio": round(o["cpu_seconds"] / c["cpu_seconds"], 3),
        "monai_peak_rss_mb": round(m["peak_rss_mb"]),
        "monai_cl_peak_rss_mb": round(c["peak_rss_mb"]),
        "oncoseg_peak_rss_mb": round(o["peak_rss_mb"]),
        "peak_rss_ratio": round(o["peak_rss_mb"] / c["peak_rss_mb"], 3),
        "monai_cl_added_mb": round(c["peak_rss_mb"] - c["rss_before_inference_mb"]),
        "oncoseg_added_mb": round(o["peak_rss_mb"] - o["rss_before_inference_mb"]),
        "oncoseg_output_mb": round(o["output_mb"]),
    }
    summary["added_memory_ratio"] = round(summary["oncoseg_added_mb"] /
                                          max(summary["monai_cl_added_mb"], 1), 3)
    if difference > 1e-5:
        raise SystemExit(f"outputs differ by {difference:g}: not a fair comparison")
    lines = [
        f"sliding window, {args.network} network, {dims(size)} voxels, window {dims(window)}, "
        f"overlap {args.overlap}, batch {batch}; ratios against MONAI channels-last",
        f"  outputs agree with MONAI channels-last: max abs difference {difference:.2e}",
        f"  time      MONAI {m['seconds']:8.2f} s   MONAI-cl {c['seconds']:8.2f} s   OncoSeg "
        f"{o['seconds']:8.2f} s   ratio {summary['time_ratio']:.3f}",
        f"  CPU time (all threads)  MONAI-cl {c['cpu_seconds']:.2f} s   OncoSeg "
        f"{o['cpu_seconds']:.2f} s   ratio {summary['cpu_time_ratio']:.3f}",
        f"  peak RSS  MONAI {m['peak_rss_mb']:8.0f} MB  MONAI-cl {c['peak_rss_mb']:8.0f} MB  "
        f"OncoSeg {o['peak_rss_mb']:8.0f} MB  ratio {summary['peak_rss_ratio']:.3f}",
        f"  added by inference  MONAI-cl {summary['monai_cl_added_mb']} MB  OncoSeg "
        f"{summary['oncoseg_added_mb']} MB (output {summary['oncoseg_output_mb']} MB)  ratio "
        f"{summary['added_memory_ratio']:.3f}"]
    for impl in arms[3:]:
        r = results[impl]
        summary[impl] = {"seconds": round(r["seconds"], 2), "peak_rss_mb": round(r["peak_rss_mb"]),
                         "output_mb": round(r["output_mb"]),
                         "max_abs_difference": r["difference"],
                         "time_ratio": round(r["seconds"] / c["seconds"], 3),
                         "peak_rss_ratio": round(r["peak_rss_mb"] / c["peak_rss_mb"], 3)}
        lines.append(f"  {impl} (not equal outputs): {r['seconds']:.2f} s, peak RSS "
                     f"{r['peak_rss_mb']:.0f} MB (output {r['output_mb']:.0f} MB), ratios "
                     f"{summary[impl]['time_ratio']:.3f} / {summary[impl]['peak_rss_ratio']:.3f}"
                     f", max abs difference {r['difference']:.1e}")
    report(summary, args.json, lines)


if __name__ == "__main__":
    main()
