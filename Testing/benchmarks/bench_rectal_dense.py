"""RectalSeg inference: dense (a trous) evaluation vs classifying each voxel's patch.

Both give every voxel's tumour probability on a DWI-sized volume (3 channels); the patch
classifier runs in batches of 256 patches, its fastest on the development CPU (20 x 80 x 80:
9.1 s in batches of 256, 9.6 s of 128, 10.0 s of 64, 11.4-11.6 s of 512-1024, 14.0-14.9 s of
2048-4096, where each layer's output is a fresh mapping the kernel zeroes again at every
batch), so that the speed-up is against the peer at its best. Prints the
speed-up of dense over per-patch, their agreement, and the GFLOP/s the dense form reaches.
``--paper`` also times the paper's network (``network=paper``: 'full' padding, no dense form),
which the shipped code classifies voxel by voxel from unfolded patches.

    python Testing/benchmarks/bench_rectal_dense.py [--size Z Y X] [--paper]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from report import dims, report

from oncoseg.rectal.dense import probability_map
from oncoseg.rectal.network import PAPER_LAYOUT, RectalPaperCNN, RectalPatchCNN, paper_map_sizes
from oncoseg.rectal.sampling import extract_patches


def dense_flops(network: RectalPatchCNN, z: int, h: int, w: int) -> float:
    """Multiply-adds x 2 of the dense form, layer by layer (valid sizes after padding)."""
    half = network.patch_size // 2
    sizes = [(h + 2 * half - 2, w + 2 * half - 2), (h + 2 * half - 4, w + 2 * half - 4),
             (h + 2 * half - 10, w + 2 * half - 10), (h, w)]
    total = 0.0
    for conv, (oh, ow) in zip(network.convs, sizes, strict=True):
        total += 2 * conv.weight.numel() * oh * ow
    total += 2 * (network.fc1.weight.numel() + network.fc2.weight.numel()) * h * w
    return total * z


def patch_flops(network: RectalPatchCNN, voxels: int) -> float:
    """Multiply-adds x 2 of classifying ``voxels`` patches one by one (valid convolutions)."""
    sizes = [19 * 19, 17 * 17, 6 * 6, 1]
    per_patch = sum(2 * conv.weight.numel() * n for conv, n in zip(network.convs, sizes,
                                                                    strict=True))
    per_patch += 2 * (network.fc1.weight.numel() + network.fc2.weight.numel())
    return per_patch * voxels


def paper_flops(network: RectalPaperCNN, voxels: int) -> float:
    """Multiply-adds x 2 of the paper's network on ``voxels`` patches ('full' padding)."""
    sizes = paper_map_sizes(network.patch_size)
    outputs = [sizes[i + 1] for i, (kind, _, _) in enumerate(PAPER_LAYOUT) if kind == "conv"]
    per_patch = sum(2 * conv.weight.numel() * n * n for conv, n in zip(network.convs, outputs,
                                                                       strict=True))
    per_patch += 2 * (network.fc1.weight.numel() + network.fc2.weight.numel())
    return per_patch * voxels


def time_paper(channels: np.ndarray) -> dict:
    """Seconds and GFLOP/s of the paper network's per-voxel probability map (shipped path)."""
    network = RectalPaperCNN().eval()
    voxels = int(np.prod(channels.shape[1:]))
    probability_map(network, channels[:, :1, :8])  # warm-up
    started = time.perf_counter()
    probability_map(network, channels)
    seconds = time.perf_counter() - started
    return {"paper_s": round(seconds, 2),
            "paper_gflops": round(paper_flops(network, voxels) / seconds / 1e9, 1),
            "paper_mflop_per_voxel": round(paper_flops(network, 1) / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[20, 80, 80], help="z y x")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch")
    parser.add_argument("--paper", action="store_true",
                        help="also time the paper's network (per-voxel patches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    # both forms channels-last: the faster memory format for either on this hardware
    fmt = torch.channels_last
    network = RectalPatchCNN().eval().to(memory_format=fmt)
    z, h, w = args.size
    channels = np.random.default_rng(0).normal(size=(3, z, h, w)).astype(np.float32)
    grid = np.stack(np.meshgrid(range(z), range(h), range(w), indexing="ij"), -1).reshape(-1, 3)

    with torch.inference_mode():
        probability_map(network, channels[:, :1])  # warm-up
        started = time.perf_counter()
        dense = torch.from_numpy(probability_map(network, channels))  # the shipped code path
        dense_s = time.perf_counter() - started

        started = time.perf_counter()
        outputs = []
        for first in range(0, len(grid), args.batch):
            patches = extract_patches(channels, grid[first:first + args.batch], 21)
            batch = torch.from_numpy(patches).contiguous(memory_format=fmt)
            outputs.append(torch.softmax(network(batch), 1)[:, 1])
        per_patch_s = time.perf_counter() - started
    per_patch = torch.cat(outputs).reshape(z, h, w)
    difference = float((dense - per_patch).abs().max())
    gflops = dense_flops(network, z, h, w) / dense_s / 1e9
    summary = {"volume": args.size, "voxels": len(grid), "dense_s": round(dense_s, 3),
               "per_patch_s": round(per_patch_s, 2), "speedup": round(per_patch_s / dense_s, 1),
               "max_abs_difference": difference, "dense_gflops": round(gflops, 1),
               "flop_ratio": round(patch_flops(network, len(grid))
                                   / dense_flops(network, z, h, w), 1),
               "threads": torch.get_num_threads()}
    lines = []
    if args.paper:
        summary.update(time_paper(channels))
        summary["paper_vs_dense"] = round(summary["paper_s"] / dense_s, 1)
        lines = [f"  paper network ('full' padding, per voxel): {summary['paper_s']:.2f} s, "
                 f"{summary['paper_gflops']} GFLOP/s, {summary['paper_mflop_per_voxel']} MFLOP "
                 f"per voxel -> {summary['paper_vs_dense']}x the dense form's time"]
    report(summary, args.json, [
        f"RectalSeg inference on {dims(args.size)} voxels, 3 channels, "
        f"{torch.get_num_threads()} threads",
        f"  per-patch (batches of {args.batch}, channels-last): {per_patch_s:.2f} s",
        f"  dense (a trous, channels-last): {dense_s:.3f} s  -> speed-up "
        f"{summary['speedup']}x, {gflops:.1f} GFLOP/s",
        f"  probabilities agree: max abs difference {difference:.1e}",
        f"  per-patch needs {summary['flop_ratio']}x the arithmetic of dense: the rest of the "
        "speed-up is efficiency", *lines])


if __name__ == "__main__":
    main()
