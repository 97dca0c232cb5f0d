import io
import json
import threading

import pytest

from oncoseg.errors import Cancelled, InputError
from oncoseg.io import atomic_directory
from oncoseg.progress import (
    CancelToken,
    JsonLinesProgress,
    ProgressEvent,
    TqdmProgress,
    check_cancelled,
    report,
)


def test_cancel_token_crosses_threads():
    token = CancelToken()
    check_cancelled(token)
    check_cancelled(None)
    threading.Thread(target=token.cancel).start()
    token._event.wait(5)
    with pytest.raises(Cancelled):
        check_cancelled(token)


def test_report_and_front_ends():
    events = []
    report(events.append, "Registering", 3, 10, loss=0.5)
    report(None, "ignored", 1)
    assert events == [ProgressEvent("Registering", 3, 10, "", {"loss": 0.5})]
    assert events[0].fraction == pytest.approx(0.3)

    stream = io.StringIO()
    JsonLinesProgress(stream)(events[0])
    assert json.loads(stream.getvalue()) == {
        "progress": {"stage": "Registering", "done": 3, "total": 10, "values": {"loss": 0.5}}}

    stream = io.StringIO()
    bars = TqdmProgress(stream, disable=False)
    bars(ProgressEvent("Stage A", 1, 2))
    bars(ProgressEvent("Stage B", 5, 5))
    bars.close()
    text = stream.getvalue()
    assert "Stage A" in text and "Stage B" in text and "5/5" in text


def test_atomic_directory_leaves_nothing_when_cancelled(tmp_path):
    target = tmp_path / "result"
    with pytest.raises(Cancelled), atomic_directory(target) as folder:
        (folder / "half.nii.gz").write_bytes(b"partial")
        raise Cancelled()
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(target) as folder:
        (folder / "done.txt").write_text("ok", encoding="utf-8")
    assert (target / "done.txt").read_text(encoding="utf-8") == "ok"
    with pytest.raises(InputError, match="not empty"), atomic_directory(target):
        pass
    with atomic_directory(target, overwrite=True) as folder:
        (folder / "new.txt").write_text("new", encoding="utf-8")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_timed_adds_a_stage_and_leaves_no_figure_for_a_failed_one():
    from oncoseg.progress import timed

    timings: dict[str, float] = {}
    with timed(timings, "inference"):
        pass
    first = timings["inference"]
    with timed(timings, "inference"):
        sum(range(1000))
    assert timings["inference"] >= first >= 0.0  # two blocks under one key add up
    try:
        with timed(timings, "postprocess"):
            raise RuntimeError("stopped")
    except RuntimeError:
        pass
    assert "postprocess" not in timings
