"""The training loop every task shares.

Epochs over a seeded sampler, validation, early stopping (the papers' stopping rules are
settings of it), a checkpoint written atomically after every epoch, resuming from it, progress
as JSON lines or tqdm, cancellation between steps, loss curves as CSV and PNG, and the final
model file with its provenance.

Determinism is by construction: the sample order of epoch ``e`` depends only on ``seed + e``
(a :class:`~torch.utils.data.DistributedSampler`, even in one process), and so does the random
state of the step code; a run resumed at an epoch boundary therefore repeats the run that was
interrupted. Because the sampler is the distributed one, ``torchrun`` with N processes of batch
b walks through exactly the batches of one process with batch N x b.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from oncoseg.distributed import Distributed, setup, teardown
from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path, unfinished_parts, write_text_atomic
from oncoseg.modelfile import ModelMetadata, provenance, save_model
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report

CHECKPOINT = "checkpoint.pt"
HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"
MODEL_FILE = "model.safetensors"

# step(model, batch, device) -> (mean loss over the batch, number of samples)
StepFunction = Callable[[torch.nn.Module, Any, str], tuple[torch.Tensor, int]]
# criterion(model) -> a validation figure to minimise (e.g. 1 - AUC), model in eval mode
Criterion = Callable[[torch.nn.Module], float]


@dataclass
class TrainingConfig:
    max_epochs: int = 100
    batch_size: int = 32  # global batch: split over the processes of a torchrun job
    patience: int = 5  # epochs without an improvement of at least min_delta, then stop
    min_delta: float = 1e-3
    seed: int = 0
    num_workers: int = 0
    max_steps_per_epoch: int | None = None  # for sampled data sets that have no natural end


@dataclass
class EarlyStopping:
    """Stop when the validation loss has not fallen by more than ``min_delta`` for
    ``patience`` epochs (the RectalSeg paper: 1e-3 and 5 epochs)."""

    patience: int
    min_delta: float
    best: float = math.inf
    best_epoch: int = -1
    waited: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return True
        self.waited += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.waited >= self.patience


@dataclass
class TrainingResult:
    model_path: Path | None  # None on ranks other than 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    step_losses: list[float] = field(default_factory=list)  # this run's steps, global batch


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train(
    *,
    make_model: Callable[[], torch.nn.Module],
    step: StepFunction,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    train_data: Dataset,
    val_data: Dataset | None,
    config: TrainingConfig,
    output: Path,
    metadata: ModelMetadata,
    device: str = "cpu",
    resume: bool = False,
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    collate: Callable | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    criterion: Criterion | None = None,
) -> TrainingResult:
    """Train the network ``make_model`` builds and write ``output/model.safetensors`` with
    curves and a checkpoint.

    The network is built after seeding, so its initial weights are part of the reproducible
    run (and equal on every process of a torchrun job). A scheduler with ``step(value)``
    (ReduceLROnPlateau) receives the validation loss; one marked ``per_iteration`` receives
    every iteration's training loss (paper 004's halving); others are stepped once per epoch.
    Early stopping and the kept weights follow the validation loss, or ``criterion`` when
    given (a paper that selects models by validation AUC passes 1 - AUC).
    """
    output = Path(output)
    context = setup(device)
    try:
        return _Loop(make_model, step, make_optimizer, train_data, val_data, config, output,
                     metadata, device, make_scheduler, collate, progress, cancel,
                     context, criterion).run(resume)
    finally:
        teardown(context)


class _Loop:
    def __init__(self, make_model, step, make_optimizer, train_data, val_data, config, output,
                 metadata, device, make_scheduler, collate, progress, cancel,
                 context: Distributed, criterion: Criterion | None = None):
        self.config, self.output, self.metadata = config, output, metadata
        self.criterion = criterion
        self.device, self.progress, self.cancel, self.context = device, progress, cancel, context
        self.step = step
        if config.batch_size % context.world_size:
            raise InputError("batch_size", f"{config.batch_size} does not split evenly over "
                             f"{context.world_size} processes")
        seed_everything(config.seed)
        self.model = make_model().to(device)
        self.network = self.model
        if context.active:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[context.local_rank] if device.startswith("cuda")
                else None)
        self.optimizer = make_optimizer(self.model.parameters())
        self.scheduler = make_scheduler(self.optimizer) if make_scheduler else None
        self.sampler = DistributedSampler(train_data, num_replicas=context.world_size,
                                          rank=context.rank, shuffle=True, seed=config.seed,
                                          drop_last=False)
        local_batch = config.batch_size // context.world_size
        self.train_loader = DataLoader(train_data, batch_size=local_batch, sampler=self.sampler,
                                       num_workers=config.num_workers, collate_fn=collate)
        self.val_loader = None
        if val_data is not None:
            val_sampler = DistributedSampler(val_data, num_replicas=context.world_size,
                                             rank=context.rank, shuffle=False)
            self.val_loader = DataLoader(val_data, batch_size=local_batch, sampler=val_sampler,
                                         num_workers=config.num_workers, collate_fn=collate)
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.first_epoch = 0
        self.step_losses: list[float] = []

    # -------------------------------------------------------------- checkpoint

    def _checkpoint_path(self) -> Path:
        return self.output / CHECKPOINT

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.context.is_main:
            return
        state = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": self.history,
            "stopper": asdict(self.stopper),
            "best_state": self.best_state,
            "config": asdict(self.config),
        }
        with atomic_path(self._checkpoint_path(), overwrite=True) as tmp:
            torch.save(state, tmp)

    def _load_checkpoint(self) -> None:
        path = self._checkpoint_path()
        if not path.is_file():
            raise InputError(str(path), "no checkpoint to resume from")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # weights_only refuses anything but tensors and plain data
            raise InputError(str(path), f"is not a readable checkpoint ({error})") from None
        saved = state.get("config", {})
        if saved.get("seed") != self.config.seed or \
                saved.get("batch_size") != self.config.batch_size:
            raise InputError(str(path), "was written with another seed or batch size; resume "
                             "with the same settings or start a new output folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        self.stopper = EarlyStopping(**state["stopper"])
        self.best_state = state["best_state"]
        self.first_epoch = int(state["epoch"]) + 1

    # -------------------------------------------------------------- loop

    def run(self, resume: bool) -> TrainingResult:
        if self.context.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            for leftover in unfinished_parts(self.output / CHECKPOINT):
                leftover.unlink()  # temporaries of a run killed while saving
        self.context.barrier()
        if resume:
            self._load_checkpoint()
        elif self._checkpoint_path().exists():
            raise InputError(str(self.output), "holds a checkpoint of an earlier run; pass "
                             "--resume to continue it, or choose another output folder")
        stopped_early = self.stopper.should_stop
        epoch = self.first_epoch
        while epoch < self.config.max_epochs and not stopped_early:
            record = self._epoch(epoch)
            self.history.append(record)
            value = record.get("val_criterion", math.nan)
            if not math.isfinite(value):  # no criterion, or undefined (one class in validation)
                value = record["val_loss"]
            if self.stopper.update(value, epoch):
                self.best_state = {k: v.detach().clone()
                                   for k, v in self.model.state_dict().items()}
            stopped_early = self.stopper.should_stop
            self._save_checkpoint(epoch)
            self._write_curves()
            report(self.progress, "Training", epoch + 1, self.config.max_epochs,
                   train_loss=record["train_loss"], val_loss=record["val_loss"])
            epoch += 1
        model_path = self._write_model(stopped_early)
        self.context.barrier()
        return TrainingResult(model_path, self.history, stopped_early, self.step_losses)

    def _epoch(self, epoch: int) -> dict[str, float]:
        started = time.perf_counter()
        self.sampler.set_epoch(epoch)
        seed_everything(self.config.seed * 1000 + epoch * 10 + self.context.rank)
        self.network.train()
        total, count = 0.0, 0
        steps = len(self.train_loader)
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        waiting = 0.0  # time spent waiting for batches: data loading's share of the epoch
        fetch_started = time.perf_counter()
        for index, batch in enumerate(self.train_loader):
            waiting += time.perf_counter() - fetch_started
            if index >= steps:
                break
            check_cancelled(self.cancel)
            self.optimizer.zero_grad(set_to_none=True)
            loss, n = self.step(self.network, batch, self.device)
            loss.backward()
            self.optimizer.step()
            value = self.context.mean(float(loss.detach()))
            if getattr(self.scheduler, "per_iteration", False):
                self.scheduler.step(value)
            self.step_losses.append(value)
            total += value * n
            count += n
            report(self.progress, f"Epoch {epoch + 1}", index + 1, steps, loss=value)
            fetch_started = time.perf_counter()
        training_seconds = time.perf_counter() - started
        train_loss = total / max(count, 1)
        val_loss = self._validate() if self.val_loader is not None else train_loss
        if self.scheduler is not None and not getattr(self.scheduler, "per_iteration", False):
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_loss)
            else:
                self.scheduler.step()
        extra = {}
        if self.criterion is not None:
            self.model.eval()
            with torch.no_grad():
                extra["val_criterion"] = float(self.criterion(self.model))
        return {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, **extra,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - started,
                "data_fraction": waiting / training_seconds if training_seconds > 0 else 0.0}

    def _validate(self) -> float:
        self.network.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.val_loader:
                check_cancelled(self.cancel)
                loss, n = self.step(self.model, batch, self.device)
                total += float(loss) * n
                count += n
        return self.context.sum(total) / max(self.context.sum(count), 1)

    # -------------------------------------------------------------- outputs

    def _write_curves(self) -> None:
        if not self.context.is_main or not self.history:
            return
        buffer = io.StringIO()
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        write_text_atomic(self.output / HISTORY_CSV, buffer.getvalue(), overwrite=True)
        plot_curves(self.history, self.output / CURVES_PNG)

    def _write_model(self, stopped_early: bool) -> Path | None:
        if not self.context.is_main:
            return None
        state = self.best_state or self.model.state_dict()
        best = self.stopper.best_epoch
        meta = self.metadata
        meta.provenance = provenance(**{
            **meta.provenance,
            "training": {
                "config": asdict(self.config),
                "epochs_run": len(self.history),
                "best_epoch": best + 1 if best >= 0 else None,
                "stopped_early": stopped_early,
                "processes": self.context.world_size,
                "validation_loss": self.stopper.best if best >= 0 else None,
                "selected_by": "validation criterion" if self.criterion else "validation loss",
            },
        })
        return save_model(self.output / MODEL_FILE, state, meta, overwrite=True)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    from oncoseg.plots import pyplot, save_figure

    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [row["train_loss"] for row in history], marker="o", label="training")
    ax.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
