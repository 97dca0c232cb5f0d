"""Every method's training under ``torchrun`` with two processes (gloo on the CPU).

A paper-scale run is this command on GPUs (docs/FIDELITY.md, "Paper-scale runs"); the tiny
settings keep each run to seconds, while the code path is the default one: the paper's rectal
network, OAR-CT's native grid, micro-batches and a restart cycle, the GI default input, and
the brain's two 2D models with 2D-3D models A and C. Rank 0 alone writes the model.
"""

from __future__ import annotations

import os
import sys

import pytest
from cli_runs import run_process_tree

from oncoseg import verbs
from oncoseg.modelfile import read_header

ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}

# task: (phantom cases, tiny settings on top of the task's defaults)
RUNS = {
    "rectal": (3, {"registration": "none", "samples_per_class": "40", "max_epochs": "1"}),
    "oar-ct": (3, {"patch_size": "[16,32,32]", "filters": "[4,8,8,8]", "batch_size": "4",
                   "micro_batch": "1", "steps_per_epoch": "2", "max_epochs": "1",
                   "validation_patches_per_case": "1", "hard_negative_rounds": "1"}),
    "oar-mr": (3, {"size": "64", "width": "4", "max_epochs": "1", "batch_size": "16"}),
    "staging": (6, {"size": "48", "filters": "4", "max_epochs": "1", "batch_size": "4",
                    "tta": "2", "n4": "false"}),
    "brain": (3, {"members": "first:unet,streams:shallow", "width_2d": "2", "width_3d": "2",
                  "levels_2d": "2", "patch": "48", "iterations_2d": "2", "iterations_3d": "2",
                  "iterations_per_epoch": "2", "batches_per_iteration_2d": "2",
                  "batch_size_2d": "2", "batches_per_iteration_3d": "2"}),
}


@pytest.mark.parametrize("task", sorted(RUNS))
def test_training_runs_under_torchrun_with_two_processes(task, tmp_path):
    cases, settings = RUNS[task]
    verbs.phantom(task, tmp_path / "data", cases=cases, seed=0)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--log-dir", str(tmp_path / "torchrun-logs"),
               "--nproc_per_node", "2", "-m", "oncoseg", "train", task,
               "--dataset", str(tmp_path / "data"), "--output", str(tmp_path / "run"),
               "--progress", "none", "--device", "cpu"]
    if task == "oar-ct":
        command += ["--layout", "rtstruct"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    result = run_process_tree(command, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    metadata = read_header(tmp_path / "run" / "model.safetensors").metadata
    assert metadata.task == task
    training = metadata.provenance.get("training", {})
    if task != "brain":  # the brain ensemble file records its stages' runs, not one of its own
        assert training.get("processes") == 2, metadata.provenance
    # one job, one report: the second process neither announces the model nor the licence
    assert result.stdout.count("Model written to") == 1, result.stdout
    assert result.stderr.count("states no licence") == 1
