"""The shared training loop: determinism, torchrun, crash and resume, outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tinynet  # noqa: F401  (registers the test architectures)
import torch
from cli_runs import run_process_tree
from safetensors.torch import load_file

from oncoseg.modelfile import load_network, read_header
from oncoseg.training import CHECKPOINT, CURVES_PNG, HISTORY_CSV, MODEL_FILE, EarlyStopping

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "train_tiny.py"
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def run(*args, torchrun=None, timeout=300):
    """``torchrun``: a folder for torchrun's logs (else one process, no torchrun)."""
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--log-dir", str(torchrun), "--nproc_per_node", "2"] if torchrun else \
        [sys.executable]
    result = run_process_tree([*prefix, str(SCRIPT), *map(str, args)], timeout, ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_processes_follow_the_one_process_loss_sequence(tmp_path):
    single = run("--output", tmp_path / "one", "--epochs", "2", "--batch", "8")
    double = run("--output", tmp_path / "two", "--epochs", "2", "--batch", "8",
                 torchrun=tmp_path / "torchrun-logs")
    assert len(single["step_losses"]) == len(double["step_losses"]) == 16
    for a, b in zip(single["step_losses"], double["step_losses"], strict=True):
        assert abs(a - b) <= 1e-5
    one = load_file(str(tmp_path / "one" / MODEL_FILE))
    two = load_file(str(tmp_path / "two" / MODEL_FILE))
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=1e-5, rtol=0)
    assert read_header(tmp_path / "two" / MODEL_FILE).metadata.provenance["training"][
        "processes"] == 2


def test_killed_run_resumes_to_the_same_model(tmp_path):
    reference = run("--output", tmp_path / "reference", "--epochs", "5")
    out = tmp_path / "killed"
    kills = 0
    while kills < 3:
        process = subprocess.Popen([sys.executable, str(SCRIPT), "--output", str(out),
                                    "--epochs", "5", "--sleep", "0.05",
                                    *(["--resume"] if (out / CHECKPOINT).exists() else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        deadline = time.time() + 60
        # kill mid-epoch, at a different moment each time
        while time.time() < deadline and not (out / CHECKPOINT).exists():
            time.sleep(0.02)
        time.sleep(0.13 + 0.17 * kills)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        state = torch.load(out / CHECKPOINT, weights_only=True)  # never half-written
        assert state["epoch"] >= 0
    resumed = run("--output", out, "--epochs", "5", "--resume")
    assert [h["epoch"] for h in json.loads(json.dumps(resumed["history"]))] == [1, 2, 3, 4, 5]
    network, metadata = load_network(out / MODEL_FILE, expected_task="test-threshold")
    assert metadata.provenance["training"]["epochs_run"] == 5
    expected = load_file(str(tmp_path / "reference" / MODEL_FILE))
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(tensor, expected[name])
    assert not list(out.glob("*.part*"))
    assert reference["history"][-1]["val_loss"] == pytest.approx(
        resumed["history"][-1]["val_loss"])


def test_outputs_and_refusals(tmp_path):
    out = tmp_path / "run"
    run("--output", out, "--epochs", "2")
    assert (out / HISTORY_CSV).read_text(encoding="utf-8").splitlines()[0] == \
        "epoch,train_loss,val_loss,lr,seconds,data_fraction"
    assert (out / CURVES_PNG).read_bytes()[:4] == b"\x89PNG"
    # a second run must not silently restart over an earlier one
    result = subprocess.run([sys.executable, str(SCRIPT), "--output", str(out)],
                            capture_output=True, text=True, env=ENV)
    assert result.returncode != 0 and "--resume" in result.stderr


def test_early_stopping_rule():
    stopper = EarlyStopping(patience=2, min_delta=1e-3)
    assert stopper.update(1.0, 0)
    assert not stopper.update(0.9995, 1)  # not better by more than 1e-3
    assert not stopper.should_stop
    assert not stopper.update(0.9991, 2)
    assert stopper.should_stop and stopper.best_epoch == 0


def test_a_validation_criterion_chooses_the_kept_weights(tmp_path):
    """With ``criterion`` (1 - AUC for staging), early stopping and the written model follow
    it, not the validation loss."""
    from torch.utils.data import TensorDataset

    from oncoseg.modelfile import ModelMetadata
    from oncoseg.training import TrainingConfig, train

    data = TensorDataset(torch.randn(16, 3), torch.randn(16))

    def step(model, batch, device):
        x, y = batch
        return ((model(x)[:, 0] - y) ** 2).mean(), len(y)

    scripted = iter([0.5, 0.1, 0.4, 0.3, 0.2])  # best at epoch 2, then no improvement
    weights = []

    def criterion(model):
        weights.append(model.weight.detach().clone())
        return next(scripted)

    meta = ModelMetadata(task="test", architecture="none", architecture_args={}, inputs=["x"],
                         preprocessing={}, outputs={})
    result = train(make_model=lambda: torch.nn.Linear(3, 1), step=step,
                   make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1), train_data=data,
                   val_data=data, config=TrainingConfig(max_epochs=5, batch_size=4, patience=3),
                   output=tmp_path, metadata=meta, criterion=criterion)
    assert [row["val_criterion"] for row in result.history] == [0.5, 0.1, 0.4, 0.3, 0.2]
    assert result.stopped_early and len(result.history) == 5
    kept = load_file(str(tmp_path / MODEL_FILE))["weight"]
    assert torch.equal(kept, weights[1])
    provenance = read_header(tmp_path / MODEL_FILE).metadata.provenance["training"]
    assert provenance["selected_by"] == "validation criterion"
    assert provenance["best_epoch"] == 2


DEALT_OUT = """
import json, os
import torch.distributed as dist
import oncoseg.distributed as distributed
dist.init_process_group("gloo")
work = lambda index, item: (int(os.environ["RANK"]), index, item * item)
done = [distributed.dealt_out(work, [3, 1, 4, 1, 5])]
# under NCCL the objects travel over a gloo group of their own, made once
default_backend = dist.get_backend
dist.get_backend = lambda group=None: "nccl"
done += [distributed.dealt_out(work, [3, 1, 4, 1, 5]) for _ in range(2)]
assert len(distributed._CPU_GROUP) == 1
dist.get_backend = default_backend
if dist.get_rank() == 1:
    print(json.dumps(done))
dist.destroy_process_group()
"""


def test_work_dealt_out_among_processes_comes_back_whole_and_in_order(tmp_path):
    from oncoseg.distributed import dealt_out

    script = tmp_path / "dealt_out.py"
    script.write_text(DEALT_OUT)
    result = run_process_tree([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--log-dir", str(tmp_path / "torchrun-logs"),
                               "--nproc_per_node", "2", str(script)], 120, ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    # every item once, in order, on the rank whose turn it was (rank 1 saw rank 0's too)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        [[0, 0, 9], [1, 1, 1], [0, 2, 16], [1, 3, 1], [0, 4, 25]]] * 3
    assert dealt_out(lambda index, item: (index, item), "ab") == [(0, "a"), (1, "b")]
