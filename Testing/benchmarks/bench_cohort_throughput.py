"""Cohort throughput: ``oncoseg predict TASK --dataset`` against ``oncoseg predict`` once per
case (the model loaded each time, as a loop over TotalSegmentator calls does), in one run.

Both sides are whole commands timed from process start to exit, on the same phantom cases,
with the same model (the task's demo) and device; the cohort side also writes its quality
flags, thumbnails, cohort.csv/json and report.html.

    python Testing/benchmarks/bench_cohort_throughput.py                  # every task, 6 cases
    python Testing/benchmarks/bench_cohort_throughput.py --tasks oar-mr --cases 2   # quick
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import report

TASKS = ("rectal", "oar-ct", "oar-mr", "staging", "brain")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def measure(task: str, cases: int, device: str, folder: Path) -> dict:
    from oncoseg import verbs
    from oncoseg.datasets import read_dataset
    from oncoseg.tasks import get_task

    data = folder / task / "data"
    verbs.phantom(task, data, cases=cases, seed=1000)  # seeds the demos never saw
    roles = [r.name for r in get_task(task).inputs]
    dataset = read_dataset(data, roles=roles, partial=True)
    oncoseg = [sys.executable, "-m", "oncoseg", "predict", task, "--device", device]
    cohort_s = timed([*oncoseg, "--dataset", str(data), "--output", str(folder / task / "c")])
    single_s = 0.0
    for case in dataset.cases:
        inputs = [f"--input={role}={path}" for role, path in case.images.items()]
        if "roi_lps_mm" in case.info:  # staging: the box the cohort reads from staging.csv
            inputs.append("--roi=" + ",".join(f"{v:g}" for v in case.info["roi_lps_mm"]))
        single_s += timed([*oncoseg, *inputs, "--progress", "none", "--output",
                           str(folder / task / "single" / case.id)])
    n = len(dataset.cases)
    return {"task": task, "cases": n, "cohort_s": round(cohort_s, 2),
            "one_by_one_s": round(single_s, 2),
            "cohort_cases_per_hour": round(3600 * n / cohort_s),
            "one_by_one_cases_per_hour": round(3600 * n / single_s),
            "speedup": round(single_s / cohort_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--cases", type=int, default=6, help="phantom cases per task")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(task, args.cases, args.device, Path(tmp)) for task in args.tasks]
    machine = f"{platform.machine()}, device {args.device}"
    report({"machine": machine, "rows": rows}, args.json, [
        f"cohort throughput ({machine}): one cohort command vs one predict per case",
        *(f"  {r['task']:8} {r['cases']:3} cases  cohort {r['cohort_s']:7.1f} s "
          f"({r['cohort_cases_per_hour']} cases/h)  one by one {r['one_by_one_s']:7.1f} s "
          f"({r['one_by_one_cases_per_hour']} cases/h)  ratio {r['speedup']}x" for r in rows)])


if __name__ == "__main__":
    main()
