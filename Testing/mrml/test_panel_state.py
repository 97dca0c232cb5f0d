"""What the panels' buttons do, tested without Qt: OncoSegCommonLib/panelstate.py's controller
with a fake view, real worker threads and, at the end, the real task logic on a slicer-core
scene (the toy method of the tests).

Each path ends with the panel ready for another run and, where something went wrong, the error
shown with its details (issue 19: "An exception in finish_run leaves the panel Running...
forever; a run finishing after File > Close Scene adds nodes")."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from oncoseg.errors import InputError
from oncoseg.io.volumes import read_image
from oncoseg.progress import ProgressEvent, check_cancelled
from OncoSegCommonLib.panelstate import PanelController, RunState, TrainingRequest
from OncoSegCommonLib.tasklogic import RunRequest, logic_for
from OncoSegCommonLib.volumes import volume_node_from_image


class FakeView:
    """Records what the panel would show."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []
        self.running = False
        self.status = ""
        self.progress = 0.0
        self.errors: list[tuple[str, str]] = []
        self.results: list = []

    def __getattr__(self, name):  # any other view method: recorded
        return lambda *args: self.calls.append((name, args))

    def show_status(self, text):
        self.status = text

    def show_progress(self, fraction):
        self.progress = fraction

    def show_running(self, running):
        self.running = running

    def show_error(self, message, details=""):
        self.errors.append((message, details))

    def show_result(self, result):
        self.results.append(result)


class Hooks:
    """A module's two hooks around any compute function."""

    def __init__(self, compute, finish=lambda prediction: SimpleNamespace(
            prediction=SimpleNamespace(timings={"predict": 0.5}, messages=["note"]),
            value=prediction), prepare_error=None):
        self.compute, self.finish, self.prepare_error = compute, finish, prepare_error
        self.finished = []

    def prepare_run(self):
        if self.prepare_error is not None:
            raise self.prepare_error
        return self.compute, ()

    def finish_run(self, prediction):
        self.finished.append(prediction)
        return self.finish(prediction)


def _run_until_ready(controller, seconds=30.0):
    end = time.monotonic() + seconds
    while controller.tick():
        assert time.monotonic() < end, "the run never ended"
    assert controller.state is RunState.READY and not controller.running


def _steps(n=5, seconds=0.01):
    def compute(progress=None, cancel=None):
        for i in range(n):
            check_cancelled(cancel)
            time.sleep(seconds)
            progress(ProgressEvent("predict", i + 1, n, "slices"))
        return "labels"
    return compute


def test_a_run_shows_progress_then_its_result_and_ends_ready():
    view = FakeView()
    controller = PanelController(view, Hooks(_steps()))
    assert controller.apply()
    assert view.running and view.status == "Running..." and controller.state is RunState.RUNNING
    assert not controller.apply(), "a second Apply during a run started another"
    _run_until_ready(controller)
    assert not view.running and view.progress == 1.0
    assert view.status.startswith("Done in 0.5 s.") and "note" in view.status
    assert [r.value for r in view.results] == ["labels"] and view.errors == []


@pytest.mark.parametrize("error, shown, with_details", [
    (InputError("t2w", "the volume has 2 slices, fewer than 3"), "t2w: the volume has 2", False),
    (ValueError("Tick at least one organ."), "Tick at least one organ.", False),
    (KeyError("spacing"), "The run could not start: 'spacing'", True),
])
def test_a_run_that_cannot_start_shows_why_and_changes_nothing(error, shown, with_details):
    view = FakeView()
    controller = PanelController(view, Hooks(_steps(), prepare_error=error))
    assert not controller.apply()
    (message, details), = view.errors
    assert message.startswith(shown) and bool(details) == with_details
    assert controller.state is RunState.READY and not view.running and not controller.tick()


def test_a_failing_run_shows_the_error_with_its_traceback():
    def compute(progress=None, cancel=None):
        raise RuntimeError("CUDA out of memory")

    view = FakeView()
    controller = PanelController(view, Hooks(compute))
    controller.apply()
    _run_until_ready(controller)
    (message, details), = view.errors
    assert message == "The run failed: CUDA out of memory"
    assert "Traceback" in details and "compute" in details
    assert view.status == "Failed: CUDA out of memory" and not view.running
    assert view.results == []


def test_an_input_error_found_during_the_run_is_shown_without_a_traceback():
    def compute(progress=None, cancel=None):
        raise InputError("dwi", "no b-value above 500 s/mm2")

    view = FakeView()
    controller = PanelController(view, Hooks(compute))
    controller.apply()
    _run_until_ready(controller)
    assert view.errors == [("dwi: no b-value above 500 s/mm2", "")]


def test_an_error_while_adding_the_result_leaves_the_panel_ready():
    def finish(prediction):
        raise RuntimeError("vtkMRMLSegmentationNode: no reference geometry")

    view = FakeView()
    controller = PanelController(view, Hooks(_steps(), finish=finish))
    controller.apply()
    _run_until_ready(controller)
    (message, details), = view.errors
    assert message.startswith("The result could not be added to the scene: vtkMRML")
    assert "finish" in details and not view.running and controller.result is None
    assert controller.apply(), "the panel did not return to ready"
    _run_until_ready(controller)


def test_cancel_stops_the_run_and_adds_nothing():
    hooks = Hooks(_steps(n=1000, seconds=0.01))
    view = FakeView()
    controller = PanelController(view, hooks)
    controller.apply()
    controller.tick()
    controller.cancel()
    assert view.status == "Cancelling..." and controller.state is RunState.CANCELLING
    _run_until_ready(controller, seconds=10)
    assert view.status == "Cancelled; nothing was added to the scene."
    assert hooks.finished == [] and view.errors == [] and not view.running


def test_closing_the_scene_during_a_run_cancels_it_and_adds_nothing_when_it_ends():
    release = threading.Event()

    def compute(progress=None, cancel=None):  # ignores cancel until released: a slow step
        release.wait(10)
        return "labels"

    hooks = Hooks(compute)
    view = FakeView()
    controller = PanelController(view, hooks)
    controller.apply()
    controller.scene_closing()
    release.set()
    _run_until_ready(controller)
    assert hooks.finished == [], "a run finishing after the scene closed added its result"
    assert view.status == "The scene was closed; the run added nothing."


def test_closing_the_scene_forgets_the_shown_result():
    view = FakeView()
    controller = PanelController(view, Hooks(_steps(n=1)))
    controller.apply()
    _run_until_ready(controller)
    assert controller.result is not None
    controller.scene_closing()
    assert controller.result is None and ("clear_result", ()) in view.calls


def test_the_worker_is_lent_the_gil_on_every_tick():
    """Slicer's main thread holds the GIL outside Python: the tick must wait for the worker
    (Worker.lend) rather than only look at it."""
    lent = []

    class LendingWorker:
        def __init__(self, compute, *args):
            self.cancel = SimpleNamespace(cancel=lambda: None)
            self.last_event, self.error, self.result = None, None, "labels"
            self.ticks = 0

        def lend(self, seconds):
            lent.append(seconds)
            self.ticks += 1

        @property
        def done(self):
            return self.ticks >= 3

    view = FakeView()
    controller = PanelController(view, Hooks(None), workers=LendingWorker)
    controller.apply()
    _run_until_ready(controller)
    assert lent == [PanelController.LEND_S] * 3
    # a tick after each redraw, and a redraw at least every 50 ms
    assert PanelController.POLL_MS < PanelController.LEND_S * 1000 <= 50


class FakeTraining:
    def __init__(self, request, output, exit_code=0, polls=2):
        self.request, self.output, self.exit_code, self.polls = request, output, exit_code, polls
        self.cancelled = False
        self.status = SimpleNamespace(epochs=[], other_output=["error: no cases found"])

    def poll(self):
        self.polls -= 1
        self.status.epochs.append({"epoch": len(self.status.epochs) + 1, "train_loss": 0.5})
        return self.status

    @property
    def returncode(self):
        if self.cancelled:
            return -15
        return self.exit_code if self.polls <= 0 else None

    def cancel(self):
        self.cancelled = True

    def model_path(self, output):
        if self.returncode != 0:
            return None
        path = Path(output) / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"model")
        return path


def _training_controller(tmp_path, view, **fake):
    made = []

    def trainings(request, output):
        made.append(FakeTraining(request, output, **fake))
        return made[-1]

    controller = PanelController(view, Hooks(None), trainings=trainings,
                                 models_folder=lambda task: tmp_path / "models" / task)
    return controller, made


def test_a_training_reports_its_losses_and_its_model(tmp_path):
    view = FakeView()
    controller, _ = _training_controller(tmp_path, view)
    request = TrainingRequest("rectal", str(tmp_path), "run-1", "auto", "cpu")
    assert controller.train(request)
    assert not controller.train(request), "a second training started beside the first"
    while controller.tick():
        pass
    names = [name for name, _ in view.calls]
    assert names[0] == "training_started" and names.count("show_training") == 2
    model = tmp_path / "models/rectal/run-1/model.safetensors"
    assert view.calls[-1] == ("training_finished", (model, f"Model written to {model}"))
    assert not controller.train(request) and "exists already" in view.errors[-1][0]


def test_a_stopped_training_says_so_and_offers_no_model(tmp_path):
    view = FakeView()
    controller, made = _training_controller(tmp_path, view, polls=100)
    controller.train(TrainingRequest("rectal", str(tmp_path), "run-2", "auto", "cpu"))
    controller.tick()
    controller.stop_training()
    while controller.tick():
        pass
    assert made[0].cancelled
    assert view.calls[-1] == ("training_finished", (None, "Training stopped: error: no cases "
                                                     "found"))


@pytest.mark.parametrize("dataset, message", [("", "Choose the data set folder first."),
                                              ("/no/such/folder", "does not exist")])
def test_a_training_without_its_data_set_does_not_start(tmp_path, dataset, message):
    view = FakeView()
    controller, made = _training_controller(tmp_path, view)
    assert not controller.train(TrainingRequest("rectal", dataset, "", "auto", "cpu"))
    assert message in view.errors[0][0] and made == [] and not controller.tick()



class LogicHooks:
    """What a module's panel hooks do, on a real logic."""

    def __init__(self, logic, inputs, model):
        self.logic, self.inputs, self.model = logic, inputs, model

    def prepare_run(self):
        self.started = self.logic.start(self.inputs, RunRequest(model=str(self.model),
                                                                device="cpu"))
        return self.logic.compute, (self.started,)

    def finish_run(self, prediction):
        return self.logic.finish(prediction, self.started)


def test_the_real_logic_through_the_controller_adds_its_nodes(toy, mrml):
    task, image, model = toy
    node = volume_node_from_image(mrml.scene, read_image(image), "image")
    view = FakeView()
    controller = PanelController(view, LogicHooks(logic_for(mrml, task.name),
                                                  {"image": node}, model))
    before = len(mrml.node_names())
    controller.apply()
    _run_until_ready(controller)
    assert view.errors == [] and controller.result.nodes.segmentation.GetScene() is mrml.scene
    assert len(mrml.node_names()) > before


def test_the_real_logic_adds_nothing_after_the_scene_is_closed(toy, mrml):
    task, image, model = toy
    node = volume_node_from_image(mrml.scene, read_image(image), "image")
    hooks = LogicHooks(logic_for(mrml, task.name), {"image": node}, model)
    view = FakeView()
    controller = PanelController(view, hooks)
    controller.apply()
    mrml.scene.Clear(0)  # File > Close Scene
    controller.scene_closing()
    _run_until_ready(controller)
    assert mrml.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert view.errors == [] and controller.result is None

