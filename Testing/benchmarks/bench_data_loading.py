"""Data loading's share of a training step, per task, on CPU.

Trains each task that has a training verb for a few epochs on its phantoms and reads the
training loop's own measure (``history.csv`` column ``data_fraction``: time spent waiting for
batches over the epoch's time). Goal: at most 10 % for every task. The peer is the training
step itself, measured in the same run.

    python Testing/benchmarks/bench_data_loading.py [--tasks rectal ...] [--json]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from report import report

from oncoseg import verbs

# Per task: phantom cases and settings that make a few representative epochs on CPU.
SETTINGS = {
    "rectal": (6, {"registration": "none", "samples_per_class": 1000, "max_epochs": 2,
                   "patience": 10}),
    # the demo model's patches and network (docs/DEMO_MODELS.md)
    "oar-ct": (4, {"spacing_mm": [3, 3, 3], "patch_size": [32, 64, 64],
                   "filters": [8, 16, 32, 64], "batch_size": 4, "steps_per_epoch": 10,
                   "max_epochs": 2, "validation_patches_per_case": 2, "micro_batch": 4,
                   "hard_negative_rounds": 0}),
    # the demo model's slices and network (docs/DEMO_MODELS.md)
    "oar-mr": (6, {"size": 128, "width": 16, "max_epochs": 2}),
    # the paper's network and augmentation on the demo's 128 x 128 slices
    "staging": (6, {"size": 128, "max_epochs": 2, "samples_per_epoch": 32}),
    # the demo ensemble's networks and batches (docs/DEMO_MODELS.md), two epochs per stage
    "brain": (4, {"width_2d": 8, "width_3d": 8, "patch": 48, "batches_per_iteration_2d": 4,
                  "batches_per_iteration_3d": 4, "iterations_2d": 20, "iterations_3d": 20,
                  "iterations_per_epoch": 10, "members": ("first", "final"),
                  "subnetworks": ("unet",), "norm_3d": "instance"}),
}


def measure(task_name: str, folder: Path) -> dict:
    cases, overrides = SETTINGS[task_name]
    verbs.phantom(task_name, folder / "data", cases=cases, seed=0)
    started = time.perf_counter()
    verbs.train(task_name, folder / "data", folder / "run", overrides)
    rows = []  # staged methods (brain) write one history per stage
    for history in sorted((folder / "run").rglob("history.csv")):
        with open(history, encoding="utf-8") as stream:
            rows += list(csv.DictReader(stream))
    fractions = [float(r["data_fraction"]) for r in rows]
    return {"task": task_name, "epochs": len(rows),
            "epoch_seconds": [round(float(r["seconds"]), 2) for r in rows],
            "data_fraction_max": round(max(fractions), 4),
            "seconds_total": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=sorted(SETTINGS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for name in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(name, Path(tmp)))
    report(results, args.json, [
        f"{r['task']}: data loading {100 * r['data_fraction_max']:.2f} % of the training epoch "
        f"at most (goal <= 10 %, {'met' if r['data_fraction_max'] <= 0.10 else 'NOT met'}); "
        f"epochs {r['epoch_seconds']} s" for r in results])


if __name__ == "__main__":
    main()
