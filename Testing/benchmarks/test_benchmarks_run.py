"""The benchmark scripts keep working: tiny runs in the suite, full runs opt-in."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run(script, *args, timeout=600, env=None):
    result = subprocess.run([sys.executable, str(HERE / script), *args, "--json"],
                            capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sliding_window_benchmark_runs_and_agrees_with_monai():
    summary = run("bench_sliding_window.py", "--size", "12", "40", "36", "--window", "8", "16",
                  "16")
    assert summary["max_abs_difference"] <= 1e-4
    assert summary["time_ratio"] > 0 and summary["peak_rss_ratio"] > 0


@pytest.mark.benchmark
def test_sliding_window_benchmark_full_size():
    print(run("bench_sliding_window.py"))


@pytest.mark.benchmark
@pytest.mark.skipif(shutil.which("elastix") is None,
                    reason="needs the elastix executable (apt-get install elastix)")
def test_registration_benchmark():
    summary = run("bench_registration.py", "--quick")
    assert summary["tre_in_process_mm"] < 1.5
    assert summary["tre_executable_mm"] < 1.5


def test_rectal_dense_benchmark_runs_and_agrees():
    summary = run("bench_rectal_dense.py", "--size", "2", "24", "20", "--batch", "512")
    assert summary["max_abs_difference"] <= 1e-5
    assert summary["speedup"] > 1


@pytest.mark.benchmark
def test_data_loading_benchmark():
    [summary] = run("bench_data_loading.py", "--tasks", "rectal")
    assert 0.0 <= summary["data_fraction_max"] < 1.0


def test_phantom_registration_benchmark_measures_against_the_truth():
    rows = run("bench_phantom_registration.py", "--settings", "none", "rigid")
    none, rigid = rows
    assert 1.0 < none["mean_error_mm"] < 5.0  # the phantom's misalignment, seen unregistered
    assert rigid["mean_error_mm"] < 1.5 * none["mean_error_mm"]


def test_oar_ct_predict_benchmark_runs():
    summary = run("bench_oar_ct_predict.py", "--size", "24", "96", "96")
    assert summary["wall_s"] > 0 and summary["peak_rss_mb"] > 0
    assert summary["inference_ratio_oncoseg_over_monai"] > 0


@pytest.mark.benchmark
def test_oar_ct_predict_benchmark_full_size():
    print(run("bench_oar_ct_predict.py"))


def test_brain_pipeline_benchmark_runs():
    summary = run("bench_brain_pipeline.py", "--size", "40", "48", "40")
    assert summary["members_ratio_oncoseg_over_monai"] > 0
    assert set(summary["inference_stages_s"]) == {"models_2d", "models_2d3d", "vote"}


@pytest.mark.benchmark
def test_brain_pipeline_benchmark_full_size():
    print(run("bench_brain_pipeline.py"))


def test_slicer_main_loop_benchmark_runs(tmp_path):
    """Quick mode: 4 slices, one run of each design. It runs and reports both designs; the
    figures (goal: >= 90 % of headless speed, a repaint every <= 50 ms) come from the full run
    and go to docs/RESULTS.md, not into an assertion: on this shared machine one quick run's
    speed fell to 0.21 of headless while another process took the cores (tests never assert
    timings)."""
    summary = run("bench_slicer_main_loop.py", "--quick",
                  env={**os.environ, "TMPDIR": str(tmp_path)})
    for design in ("new", "old"):
        assert summary[f"speed_fraction_{design}"] > 0
        assert 0 < summary[f"p95_gap_ms_{design}"] <= summary[f"max_gap_ms_{design}"]
    assert list(tmp_path.iterdir()) == [], "the compiled event loop is not left behind"


@pytest.mark.benchmark
def test_slicer_main_loop_benchmark_full():
    summary = run("bench_slicer_main_loop.py")
    assert summary["speed_fraction_new"] >= 0.9
    assert summary["p95_gap_ms_new"] <= 50


def test_cohort_throughput_benchmark_runs():
    summary = run("bench_cohort_throughput.py", "--tasks", "oar-mr", "--cases", "1")
    [row] = summary["rows"]
    assert row["cases"] >= 1 and row["cohort_s"] > 0 and row["one_by_one_s"] > 0


@pytest.mark.benchmark
def test_cohort_throughput_benchmark_full():
    print(run("bench_cohort_throughput.py"))


# every task's stage with the demo models; the default widths (which differ for oar-ct, oar-mr
# and brain only) through one task: the same script and stages, wider networks (the suite is
# near its 20-minute budget; the full benchmark runs every task at both widths)
@pytest.mark.parametrize(("widths", "tasks"), [
    ("demo", ["rectal", "oar-ct", "oar-mr", "staging", "brain-2d", "brain-3d"]),
    ("default", ["oar-mr"])])
def test_network_peak_benchmark_runs(widths, tasks):
    summary = run("bench_network_peak.py", "--quick", "--widths", widths, "--tasks", *tasks)
    assert summary["peak_gflops"] > 0 and summary["widths"] == widths
    assert [t["task"] for t in summary["tasks"]] == tasks
    for task in summary["tasks"]:
        assert task["seconds"] > 0 and task["gflop"] > 0 and task["fraction_of_peak"] > 0
        assert task["peak_gflops"] > 0 and task["fraction_of_run_peak"] > 0


def test_predict_startup_benchmark_runs():
    summary = run("bench_predict_startup.py", "--quick")
    assert summary["console_main_s"] > 0 and summary["ordinary_exit_s"] > 0


@pytest.mark.benchmark
def test_sliding_window_benchmark_basicunet_full_size():
    print(run("bench_sliding_window.py", "--network", "basicunet"))


def test_refine_benchmark_runs_and_refine_is_not_worse_than_the_brush():
    summary = run("bench_refine.py", "--quick")
    [row] = summary["rows"]
    assert len(row["refine"]) == 4 and len(summary["refine_256x256x40_s"]) == 3
    assert row["refine"][-1] >= row["refine"][0] and row["refine"][-1] >= row["brush"][-1]
    [entry] = summary["session"]  # the rectal case's one segment, corrected in its session
    assert len(entry["session"]) == 4 and entry["session"][0] == entry["model"]


@pytest.mark.benchmark
def test_refine_benchmark_full():
    print(run("bench_refine.py"))


def test_refine_slicer_benchmark_runs_on_the_linked_sequences():
    """The Slicer logic's clicks on slicer-core, every sequence the model read linked."""
    summary = run("bench_refine_slicer.py", "--quick")
    [row] = summary["rows"]
    assert row["task"] == "rectal" and row["clicks"] == 3 and len(row["paint_s"]) == 3
    assert row["channels"] == ["t2w", "dwi_b0", "dwi_b1000"]
    # clicks do not wreck the segment: the rectal demo trained on 2026-12-08 starts this case at
    # 0.946, its error a thin boundary, where three clicks move Dice by -0.03 to +0.01 (here
    # 0.946 -> 0.919; the 5 mm brush too loses on such cases: docs/RESULTS.md, "Click
    # refinement"); the demo before it started at 0.90 with a rim that refine took
    assert row["dice_after"] >= row["dice_before"] - 0.04 and row["ratio_refine_over_paint"] > 0
