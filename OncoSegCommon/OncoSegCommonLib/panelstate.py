"""What a module panel's buttons do, without Qt: the run and the training as state machines.

The Qt panel (``panels.py``) only binds widgets: its timer calls :meth:`PanelController.tick`,
its buttons call :meth:`apply`, :meth:`cancel`, :meth:`train` and :meth:`stop_training`, the
scene's close event calls :meth:`scene_closing`, and it shows what the controller tells its
:class:`PanelView`. So every path a user can take, a failing start, a failing run, a result that
cannot be added, Cancel, File > Close Scene during a run, a training that stops, is tested
headless with fakes (``Testing/mrml/test_panel_state.py``), the way SlicerNNUNet tests its
widget logic. Whatever goes wrong, the panel ends ready for the next run and the error is shown
with its details.
"""

from __future__ import annotations

import enum
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oncoseg.errors import Cancelled, InputError
from OncoSegCommonLib.worker import LEND_SECONDS, TICK_MS, Worker


class PanelView(Protocol):
    """What the controller shows; the Qt panel implements it with its widgets."""

    def show_status(self, text: str) -> None: ...

    def show_progress(self, fraction: float) -> None: ...

    def show_running(self, running: bool) -> None:
        """Enable or disable the run buttons (Apply, Cancel, the result's own buttons)."""

    def show_error(self, message: str, details: str = "") -> None: ...

    def show_result(self, result: Any) -> None: ...

    def clear_result(self) -> None:
        """The result's nodes are gone (scene closed): empty the result widgets."""

    def training_started(self, title: str) -> None:
        """A new loss plot, the training buttons switched."""

    def show_training(self, status: Any) -> None:
        """The training's progress and losses so far."""

    def training_finished(self, model: Path | None, message: str) -> None: ...


class PanelHooks(Protocol):
    """What the module adds: its inputs turned into a run, and the run's result into nodes."""

    def prepare_run(self) -> tuple[Callable[..., Any], tuple]:
        """(compute, its arguments) for the worker; InputError / ValueError for the user."""

    def finish_run(self, prediction: Any) -> Any:
        """Main thread: add the result to the scene; returns the module's result object."""


class RunState(enum.Enum):
    READY = "ready"
    RUNNING = "running"
    CANCELLING = "cancelling"


@dataclass
class TrainingRequest:
    """The training panel's fields."""

    task: str
    dataset: str
    name: str
    layout: str
    device: str


def details_of(error: BaseException) -> str:
    """The traceback a user can copy into a bug report (the message box's details)."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def default_training(request: TrainingRequest, output: Path) -> Any:
    """The training as a separate process (``python -m oncoseg train``)."""
    from OncoSegCommonLib.training_process import TrainingProcess, training_command

    return TrainingProcess(training_command(request.task, request.dataset, output,
                                            request.layout, request.device))


class PanelController:
    """One panel's run and training. ``tick`` is called by the panel's timer; it returns
    whether anything is still going on (the timer stops when not)."""

    # The timer's period and how long each tick lends the GIL to the worker thread. Slicer's
    # main thread holds the GIL outside Python, so the worker runs only while a tick waits for
    # it; the timer is shorter than the loan, so a tick follows each redraw. Measured in
    # Testing/benchmarks/bench_slicer_main_loop.py: 96-98 % of headless speed, redraws at
    # most 45 ms apart (a 50 ms timer with a 40 ms loan: 76-85 %, 74-82 ms).
    POLL_MS = TICK_MS
    LEND_S = LEND_SECONDS

    def __init__(self, view: PanelView, hooks: PanelHooks,
                 workers: Callable[..., Any] = Worker,
                 trainings: Callable[[TrainingRequest, Path], Any] = default_training,
                 models_folder: Callable[[str], Path] | None = None):
        self.view = view
        self.hooks = hooks
        self.workers = workers
        self.trainings = trainings
        self.models_folder = models_folder
        self.state = RunState.READY
        self.worker: Any = None
        self.result: Any = None
        self.training: Any = None
        self.training_output: Path | None = None
        self._discard = False  # the scene was closed during the run: add nothing

    # ------------------------------------------------------------------ run

    @property
    def running(self) -> bool:
        return self.worker is not None

    def apply(self) -> bool:
        """Start a run; False (and the reason shown) when it could not start."""
        if self.running:
            return False
        try:
            compute, args = self.hooks.prepare_run()
        except (InputError, ValueError) as error:  # the user's to fix: the message is enough
            self.view.show_error(str(error))
            return False
        except Exception as error:  # a defect: the details help to report it
            self.view.show_error(f"The run could not start: {error}", details_of(error))
            return False
        self.worker = self.workers(compute, *args)
        self.state = RunState.RUNNING
        self._discard = False
        self.view.show_status("Running...")
        self.view.show_progress(0.0)
        self.view.show_running(True)
        return True

    def cancel(self) -> None:
        if self.running and self.state is RunState.RUNNING:
            self.worker.cancel.cancel()
            self.state = RunState.CANCELLING
            self.view.show_status("Cancelling...")

    def scene_closing(self) -> None:
        """File > Close Scene: the result's nodes go with the scene, and a run still going is
        cancelled and, whenever it ends, adds nothing to the new scene."""
        if self.running:
            self.worker.cancel.cancel()
            self.state = RunState.CANCELLING
            self._discard = True
        self.forget_result()

    def forget_result(self) -> None:
        """The shown result no longer applies (its nodes are gone, or the panel switched to
        another task)."""
        if self.result is not None:
            self.result = None
            self.view.clear_result()

    def tick(self) -> bool:
        if self.worker is not None:
            self._tick_run()
        if self.training is not None:
            self._tick_training()
        return self.worker is not None or self.training is not None

    def _tick_run(self) -> None:
        lend = getattr(self.worker, "lend", None)
        if lend is not None:
            lend(self.LEND_S)
        event = self.worker.last_event
        if event is not None and event.fraction is not None and \
                self.state is RunState.RUNNING:
            self.view.show_progress(event.fraction)
            self.view.show_status(f"{event.stage} {event.message}".strip())
        if not self.worker.done:
            return
        worker, self.worker = self.worker, None
        self.state = RunState.READY
        try:
            self._end_run(worker)
        finally:
            self.view.show_running(False)

    def _end_run(self, worker: Any) -> None:
        if self._discard:
            self.view.show_status("The scene was closed; the run added nothing.")
            return
        if worker.error is not None:
            self.view.show_status(worker.status_text())
            if isinstance(worker.error, Cancelled):
                return
            if isinstance(worker.error, InputError):
                self.view.show_error(str(worker.error))
            else:
                self.view.show_error(f"The run failed: {worker.error}", details_of(worker.error))
            return
        try:
            result = self.hooks.finish_run(worker.result)
        except Exception as error:
            self.view.show_status(f"Failed: {error}")
            self.view.show_error(f"The result could not be added to the scene: {error}",
                                 details_of(error))
            return
        self.result = result
        prediction = getattr(result, "prediction", None)
        timings = getattr(prediction, "timings", {}) or {}
        seconds = sum(v for k, v in timings.items() if k != "total")
        self.view.show_progress(1.0)
        self.view.show_status("\n".join([f"Done in {seconds:.1f} s.",
                                         *getattr(prediction, "messages", [])]))
        self.view.show_result(result)

    # ------------------------------------------------------------------ training

    def train(self, request: TrainingRequest) -> bool:
        """Start a training process; False (and the reason shown) when it could not start."""
        if self.training is not None:
            return False
        if not request.dataset:
            self.view.show_error("Choose the data set folder first.")
            return False
        if not Path(request.dataset).is_dir():
            self.view.show_error(f"The data set folder {request.dataset} does not exist.")
            return False
        name = request.name.strip() or time.strftime(f"{request.task}-%Y%m%d-%H%M%S")
        folder = self.models_folder or _models_folder
        output = folder(request.task) / name
        if (output / "model.safetensors").exists():
            self.view.show_error(f"A model named '{name}' exists already ({output}); choose "
                                 "another run name.")
            return False
        try:
            self.training = self.trainings(request, output)
        except OSError as error:
            self.view.show_error(f"The training could not start: {error}", details_of(error))
            return False
        self.training_output = output
        self.view.training_started(f"{request.task} training")
        return True

    def stop_training(self) -> None:
        if self.training is not None:
            self.training.cancel()

    def _tick_training(self) -> None:
        status = self.training.poll()
        self.view.show_training(status)
        if self.training.returncode is None:
            return
        training, self.training = self.training, None
        model = training.model_path(self.training_output)
        message = (f"Model written to {model}" if model is not None else
                   "Training stopped: " + " ".join(status.other_output[-3:]))
        self.view.training_finished(model, message)

    def close(self) -> None:
        """The panel is destroyed (application exit, module reload)."""
        if self.worker is not None:
            self.worker.cancel.cancel()
            self._discard = True
        if self.training is not None:
            self.training.cancel()


def _models_folder(task: str) -> Path:
    from OncoSegCommonLib.models import models_folder

    return models_folder(task)
