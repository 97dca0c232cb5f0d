"""A prediction inside Slicer's main loop, reproduced headless: how fast the worker thread runs
and how often the panel is redrawn, with and without lending it the GIL.

Slicer's main thread holds the GIL whenever it is not running Python: no ``PyEval_SaveThread``
in Slicer or CTK, so the Qt event loop, its timers and its repaints run with the GIL held. The
emulation does the same: the event loop is a small C function called through
``ctypes.PyDLL`` (a PyDLL call keeps the GIL) that sleeps in ``nanosleep`` until the timer is
due, calls the panel's tick (a Python callback, as PythonQt calls a slot) and sleeps once more
per repaint. Written in C, the loop itself runs no Python between callbacks, as in Slicer (a
loop in Python would give the worker the GIL at its own calls); without a C compiler the same
loop runs in Python, with ``nanosleep`` called through PyDLL, and the summary says so. The
timer follows QTimer's rule (Qt 5 ``qtimerinfo_unix.cpp``, ``calculateNextTimeout``: the next
timeout is one period after the last, or one period from now when that is past, set before the
callback runs). Each callback is the panel's tick (``OncoSegCommonLib.panelstate``: lend, read
the progress, check ``done``).

The work is a real prediction: the rectal task's demo model on a phantom case (registration
off, so the run is the network's), in an ``OncoSegCommonLib.worker.Worker`` thread. Measured:

- headless: the same prediction called on the main thread, nothing else running;
- old design: a 100 ms timer whose tick only reads the progress (no loan);
- new design: a ``--tick-ms`` timer whose tick first lends the worker ``--lend-ms``.

For each: the run's wall time from the worker's start until a tick sees it done, its speed as
a fraction of the headless speed (goal >= 0.9), and the longest gap between two repaints (goal
<= 50 ms). ``--redraw-ms`` is what a repaint costs the main thread (the GIL held meanwhile);
``--sweep`` measures a grid of periods, loans and repaint costs.

    python Testing/benchmarks/bench_slicer_main_loop.py [--slices N] [--runs R] [--sweep]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from report import report

from oncoseg.frontends import add_module_folders

add_module_folders()  # the Slicer modules' folders on sys.path, as Slicer puts them

from OncoSegCommonLib.worker import LEND_SECONDS, TICK_MS, Worker  # noqa: E402

_LIBC = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call, as in Qt's C++


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def hold_gil(seconds: float) -> None:
    """Sleep without releasing the GIL: Slicer's main thread outside Python."""
    if seconds <= 0:
        return
    whole = int(seconds)
    _LIBC.nanosleep(ctypes.byref(_Timespec(whole, int((seconds - whole) * 1e9))), None)


def panel_tick(worker: Worker, lend_s: float) -> bool:
    """What the panel's timer callback does (PanelController._tick_run): lend, then show the
    progress; returns whether the run is over."""
    if lend_s > 0:
        worker.lend(lend_s)
    event = worker.last_event
    if event is not None and event.fraction is not None:
        _ = int(100 * event.fraction), f"{event.stage} {event.message}".strip()
    return worker.done


@dataclass
class LoopRun:
    seconds: float  # from the worker's start until a tick saw it done
    max_gap_ms: float  # longest time between two repaints
    p95_gap_ms: float
    ticks: int


_LOOP_C = r"""
#include <time.h>
typedef int (*tick_fn)(void);
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
static void pause_for(double s) {
    if (s <= 0) return;
    struct timespec t; t.tv_sec = (time_t)s; t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
    nanosleep(&t, 0);
}
/* A repeating QTimer calling tick() and a repaint after each call; the repaint times (the
   first `capacity`) go to redraws; returns how many repaints there were. */
int main_loop(double tick_s, double redraw_s, tick_fn tick, double *start, double *redraws,
              int capacity) {
    double due; int n = 0;
    *start = now(); due = *start + tick_s;
    for (;;) {
        double t;
        pause_for(due - now());
        t = now(); due += tick_s; if (due < t) due = t + tick_s;
        int finished = tick();
        pause_for(redraw_s);
        if (n < capacity) redraws[n] = now();
        n++;
        if (finished) return n;
    }
}
"""
_TICK = ctypes.CFUNCTYPE(ctypes.c_int)
_compiled: list[Any] = []


def c_main_loop() -> Any | None:
    """The C event loop (compiled once into a temporary folder), or None without a compiler."""
    if not _compiled:
        compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        loop = None
        if compiler is not None:
            folder = Path(tempfile.mkdtemp(prefix="oncoseg-mainloop-"))
            (folder / "loop.c").write_text(_LOOP_C)
            built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o",
                                    str(folder / "loop.so"), str(folder / "loop.c")],
                                   capture_output=True, check=False)
            if built.returncode == 0:
                loop = ctypes.PyDLL(str(folder / "loop.so")).main_loop  # keeps the GIL
                loop.argtypes = [ctypes.c_double, ctypes.c_double, _TICK,
                                 ctypes.POINTER(ctypes.c_double),
                                 ctypes.POINTER(ctypes.c_double), ctypes.c_int]
                loop.restype = ctypes.c_int
            # loaded, the library needs no file (each run left one in the temporary folder);
            # where the system keeps a loaded library's file open, it stays
            shutil.rmtree(folder, ignore_errors=True)
        _compiled.append(loop)
    return _compiled[0]


def slicer_main_loop(compute: Callable[..., Any], tick_s: float, lend_s: float,
                     redraw_s: float) -> LoopRun:
    """One run in a Worker thread under the emulated main loop."""
    loop = c_main_loop()
    worker = Worker(compute)
    if loop is not None:
        failures: list[BaseException] = []

        def tick() -> int:
            try:
                return int(panel_tick(worker, lend_s))
            except BaseException as error:  # a C caller cannot take an exception
                failures.append(error)
                return 1

        capacity = 1_000_000
        start, redraws = ctypes.c_double(), (ctypes.c_double * capacity)()
        count = loop(tick_s, redraw_s, _TICK(tick), ctypes.byref(start), redraws, capacity)
        if failures:
            raise failures[0]
        times = [start.value, *redraws[:min(count, capacity)]]
    else:
        times = python_main_loop(worker, tick_s, lend_s, redraw_s)
    if worker.error is not None:
        raise worker.error
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return LoopRun(times[-1] - times[0], 1000 * gaps[-1],
                   1000 * gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))], len(gaps))


def python_main_loop(worker: Worker, tick_s: float, lend_s: float, redraw_s: float
                     ) -> list[float]:
    """The same loop in Python (no C compiler): the start and the repaint times."""
    started = time.monotonic()
    due, times = started + tick_s, [started]
    while True:
        hold_gil(due - time.monotonic())  # the event loop waits for the timer, the GIL held
        now = time.monotonic()
        due += tick_s  # QTimer: the next timeout is set before the callback
        if due < now:
            due = now + tick_s
        finished = panel_tick(worker, lend_s)
        hold_gil(redraw_s)  # the progress bar and the status label repaint
        times.append(time.monotonic())
        if finished:
            return times


def rectal_run(slices: int) -> Callable[..., Any]:
    """compute(progress=, cancel=): the rectal demo model on a phantom's first ``slices``
    b0 slices, the model read once beforehand (as a panel reads it before the run)."""
    from oncoseg import verbs
    from oncoseg.io.volumes import read_image
    from oncoseg.method import RunContext

    with tempfile.TemporaryDirectory() as folder:
        [case] = verbs.phantom("rectal", Path(folder), cases=1, seed=5)
        images = {role: read_image(case / f"{role}.nii.gz")
                  for role in ("t2w", "dwi_b0", "dwi_b1000")}
    for role in ("dwi_b0", "dwi_b1000"):
        images[role] = images[role][:, :, :slices]
    prepared = verbs.prepare("rectal", "demo", {"registration": "none"})

    def compute(progress: Any = None, cancel: Any = None) -> Any:
        return verbs.predict("rectal", images, prepared,
                             context=RunContext("cpu", progress, cancel))

    return compute


def headless_seconds(compute: Callable[..., Any]) -> float:
    started = time.perf_counter()
    compute()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Design:
    tick_ms: float  # the panel timer's period
    lend_ms: float  # the loan of each tick (0: none)
    redraw_ms: float  # what a repaint costs the main thread


def measure(compute: Callable[..., Any], designs: list[Design], runs: int
            ) -> list[dict[str, Any]]:
    """Each design ``runs`` times, each run right after a headless run (the machine's load
    drifts; neighbours drift less): the speed fraction over all pairs (headless seconds over
    seconds in the loop), the worst gaps."""
    loops: dict[Design, list[tuple[float, LoopRun]]] = {d: [] for d in designs}
    for _ in range(runs):
        for design in designs:
            headless = headless_seconds(compute)
            loop = slicer_main_loop(compute, design.tick_ms / 1000, design.lend_ms / 1000,
                                    design.redraw_ms / 1000)
            loops[design].append((headless, loop))
    rows = []
    for design, pairs in loops.items():
        rows.append({**asdict(design),
                     "headless_s": round(statistics.median(h for h, _ in pairs), 3),
                     "seconds": round(statistics.median(lp.seconds for _, lp in pairs), 3),
                     "speed_fraction": round(sum(h for h, _ in pairs)
                                             / sum(lp.seconds for _, lp in pairs), 3),
                     "max_gap_ms": round(max(lp.max_gap_ms for _, lp in pairs), 1),
                     "p95_gap_ms": round(max(lp.p95_gap_ms for _, lp in pairs), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20, help="b0 slices predicted (<= 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs per design (median)")
    parser.add_argument("--tick-ms", type=float, default=TICK_MS)
    parser.add_argument("--lend-ms", type=float, default=1000 * LEND_SECONDS)
    parser.add_argument("--redraw-ms", type=float, default=2.0)
    parser.add_argument("--old-runs", type=int, default=1, help="the old design is slow")
    parser.add_argument("--sweep", action="store_true", help="a grid of periods and loans")
    parser.add_argument("--quick", action="store_true", help="4 slices, one run each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.runs = 4, 1
    compute = rectal_run(args.slices)
    compute()  # warm-up: first calls allocate and pick kernels
    [old] = measure(compute, [Design(100.0, 0.0, args.redraw_ms)], args.old_runs)
    designs = [Design(args.tick_ms, args.lend_ms, args.redraw_ms)]
    if args.sweep:
        designs += [Design(tick, lend, redraw) for redraw in (2.0, 5.0)
                    for tick in (10.0, 20.0, 50.0) for lend in (35.0, 40.0, 45.0)
                    if Design(tick, lend, redraw) != designs[0]]
    new, *sweep = measure(compute, designs, args.runs)
    summary = {"work": f"rectal demo, phantom, {args.slices} b0 slices, registration off",
               "threads": torch.get_num_threads(),
               "main_loop": "C" if c_main_loop() is not None else "Python (no C compiler)",
               "old": old, "new": new, "sweep": sweep,
               "speed_fraction_new": new["speed_fraction"], "max_gap_ms_new": new["max_gap_ms"],
               "p95_gap_ms_new": new["p95_gap_ms"],
               "speed_fraction_old": old["speed_fraction"], "max_gap_ms_old": old["max_gap_ms"],
               "p95_gap_ms_old": old["p95_gap_ms"]}
    rows = [("old: 100 ms poll, no loan", old),
            (f"new: {args.tick_ms:g} ms timer, {args.lend_ms:g} ms loan", new),
            *((f"  timer {r['tick_ms']:g} ms, loan {r['lend_ms']:g} ms, repaint "
               f"{r['redraw_ms']:g} ms", r) for r in sweep)]
    report(summary, args.json, [
        f"{summary['work']}, {summary['threads']} torch threads, main loop in "
        f"{summary['main_loop']}; speed: headless time over time in the loop, {args.runs} "
        "pairs (goal >= 90 %); repaints: the longest and the 95th-percentile gap (goal <= 50 ms)",
        *(f"{name}: {row['seconds']:.2f} s vs {row['headless_s']:.2f} s headless, "
          f"{100 * row['speed_fraction']:.0f} % of headless speed, gaps "
          f"{row['max_gap_ms']:.0f} / {row['p95_gap_ms']:.0f} ms" for name, row in rows)])

if __name__ == "__main__":
    main()
