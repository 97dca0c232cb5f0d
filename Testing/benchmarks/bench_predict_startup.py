"""Whole-command wall time of ``oncoseg predict rectal`` on one phantom case, in fresh processes.

What a user waits for, start-up and teardown included (issue 25: itk's loading, torch's import,
the interpreter's exit). Two ways out of the same command, measured in the same run, each
repeated: the console entry point (``oncoseg.cli.console_main``: ``os._exit`` once every output
is written) and the ordinary interpreter exit (``sys.exit(main())``, the peer). The case is
phantom seed 1000 case 3, as in docs/RESULTS.md; the registration is the demo model's (rigid)
unless ``--registration`` says otherwise.

    python Testing/benchmarks/bench_predict_startup.py [--registration none] [--repeats 3]
    python Testing/benchmarks/bench_predict_startup.py --quick   # registration none, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import report

from oncoseg.phantoms.rectal import generate_case

EXITS = {
    "console_main (os._exit)": "from oncoseg.cli import console_main; console_main()",
    "ordinary exit": "import sys; from oncoseg.cli import main; sys.exit(main())",
}


def run_once(code: str, case: Path, output: Path, registration: str | None) -> float:
    command = [sys.executable, "-c", code, "predict", "rectal", "--output", str(output),
               "--progress", "none"]
    command += [f"--input={role}={case / f'{role}.nii.gz'}"
                for role in ("t2w", "dwi_b0", "dwi_b1000")]
    if registration is not None:
        command += ["--set", f"registration={registration}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registration", default=None,
                        help="override the model's registration (default: the demo's rigid)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="registration none, one repeat")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    registration = "none" if args.quick else args.registration
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="oncoseg-bench-startup-") as tmp:
        folder = Path(tmp)
        case = folder / "case"
        generate_case(case, 1000, 3)
        seconds: dict[str, list[float]] = {name: [] for name in EXITS}
        for repeat in range(repeats):
            for index, (name, code) in enumerate(EXITS.items()):  # interleaved
                output = folder / f"out-{repeat}-{index}"
                seconds[name].append(run_once(code, case, output, registration))
                result = json.loads((output / "result.json").read_text(encoding="utf-8"))
        fast, ordinary = (statistics.median(seconds[name]) for name in EXITS)
    summary = {
        "case": "rectal phantom seed 1000 case 3",
        "registration": registration or "the model's (rigid)", "repeats": repeats,
        "console_main_s": round(fast, 2), "ordinary_exit_s": round(ordinary, 2),
        "time_ratio": round(fast / ordinary, 3),
        "in_command_total_s": result["timings_s"]["total"],
        "all_s": {name: [round(s, 2) for s in values] for name, values in seconds.items()},
    }
    report(summary, args.json, [
        f"oncoseg predict rectal, {summary['case']}, registration {summary['registration']}, "
        f"median of {repeats}",
        f"  wall  console_main {fast:6.2f} s   ordinary exit {ordinary:6.2f} s   ratio "
        f"{summary['time_ratio']:.3f}",
        f"  the command's own stages (result.json timings_s total): "
        f"{summary['in_command_total_s']} s"])


if __name__ == "__main__":
    main()
