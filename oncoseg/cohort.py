"""Predicting a whole cohort: the model read once, every case written as ``predict`` writes it.

Cohorts are run for hours, on one machine or as many array jobs, and get killed. So the state of
a cohort lives only in its output folder, never in memory: a case is finished when its folder
``cases/<case_id>/`` exists (folders are built aside and moved into place whole, so an existing
one is complete), and a case that failed has ``failed/<case_id>.json`` with its error. A re-run
skips finished cases and retries failed ones; one killed with SIGKILL leaves at most a hidden
``.part`` folder, which the shard that owns the case removes when it starts again.

Cases are shared out by position in the sorted case list (case ``i`` belongs to shard
``i mod N``), so any number of independent processes - SLURM or Kubernetes array jobs with
``--shard K/N``, or the ranks of one ``torchrun`` job - each predict their own share into the
same output folder without talking to each other.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from oncoseg import quality
from oncoseg.cohort_report import REPORT, THUMBNAILS, write_report
from oncoseg.datasets.base import Case, Dataset
from oncoseg.errors import Cancelled, InputError
from oncoseg.io.atomic import unfinished_parts, write_text_atomic
from oncoseg.io.volumes import input_series, reading_notes
from oncoseg.method import Hints, RunContext, prepare
from oncoseg.tasks import Task, get_task

CASES = "cases"
FAILED = "failed"
TABLE = "cohort.csv"
SUMMARY = "cohort.json"

Status = Literal["done", "failed", "finished before"]


@dataclass(frozen=True)
class Shard:
    """Which share of a cohort one process predicts: ``index`` (from 0) of ``count``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` as a user writes it, K counted from 1 (``--shard 3/8``)."""
        k, sep, n = text.partition("/")
        if not (sep and k.strip().isdigit() and n.strip().isdigit()):
            raise InputError(f"--shard {text}", "must be K/N, e.g. 1/4 (K from 1 to N)")
        index, count = int(k) - 1, int(n)
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard {text}", f"needs 1 <= K <= N (got K={k}, N={n})")
        return cls(index, count)

    @classmethod
    def from_torchrun(cls) -> Shard:
        """Each rank of a ``torchrun`` job its own share (one shard when run alone)."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    def cases(self, cases: Sequence[Case]) -> list[Case]:
        ordered = sorted(cases, key=lambda c: c.id)
        return [c for i, c in enumerate(ordered) if i % self.count == self.index]

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class Outcome:
    """What became of one case in this run."""

    case_id: str
    status: Status
    seconds: float = 0.0
    error: str = ""


def check_output(output: str | os.PathLike[str], task: str) -> None:
    """A cohort's output folder is new, empty, or this task's earlier run of a cohort (which
    is resumed); anything else is refused before the model is read."""
    output = Path(output)
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not output.is_dir():
        raise InputError(str(output), "exists and is not a folder")
    known = {CASES, FAILED, THUMBNAILS, TABLE, SUMMARY, REPORT}
    if not (output / CASES).is_dir() or any(p.name not in known and not p.name.startswith(".")
                                            for p in output.iterdir()):
        raise InputError(str(output), "exists and is not a cohort's output folder; choose "
                         "a new folder")
    for folder in (output / CASES).iterdir():
        result = folder / "result.json"
        if result.is_file():
            ran = json.loads(result.read_text(encoding="utf-8")).get("task")
            if ran != task:
                raise InputError(str(output), f"holds a cohort of task '{ran}', not "
                                 f"'{task}'; choose a new folder")
            break


def case_folder(output: Path, case_id: str) -> Path:
    return output / CASES / case_id


def failure_file(output: Path, case_id: str) -> Path:
    return output / FAILED / f"{case_id}.json"


def is_finished(output: Path, case_id: str) -> bool:
    return case_folder(output, case_id).is_dir()


def remove_unfinished(output: Path, cases: Sequence[Case]) -> None:
    """The hidden ``.part`` folders a killed run of these cases left behind (only these
    cases': other shards may be writing theirs right now)."""
    for case in cases:
        for part in unfinished_parts(case_folder(output, case.id)):
            shutil.rmtree(part, ignore_errors=True)


def case_hints(task: Task, case: Case) -> Hints:
    """What a data set says about a case that the task reads as a hint (the staging layout's
    ROI box)."""
    roi = case.info.get("roi_lps_mm") if "roi_lps_mm" in task.hints else None
    return Hints(roi_lps_mm=roi)


class CohortProgress:
    """Plain lines, one per case: cases done, failed, finished before, and the rate (a cohort
    runs under nohup, SLURM or a CI log, not on a terminal)."""

    def __init__(self, total: int, write: Callable[[str], None], shard: Shard):
        self.total, self.write, self.shard = total, write, shard
        self.counts = {"done": 0, "failed": 0, "finished before": 0}
        self.started = time.perf_counter()

    def __call__(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        seen = sum(self.counts.values())
        worked = self.counts["done"] + self.counts["failed"]
        elapsed = time.perf_counter() - self.started
        rate = f"{3600 * worked / elapsed:.0f} cases/h" if worked and elapsed > 0 else "-"
        where = "" if self.shard.count == 1 else f"shard {self.shard}: "
        detail = f" ({outcome.seconds:.1f} s)" if outcome.status == "done" else \
            f": {outcome.error}" if outcome.status == "failed" else ""
        self.write(f"{where}[{seen}/{self.total}] {outcome.case_id} {outcome.status}{detail}"
                   f" | done {self.counts['done']}, failed {self.counts['failed']}, "
                   f"finished before {self.counts['finished before']} | {rate}")


def predict_cohort(task: str | Task, dataset: Dataset, output: str | os.PathLike[str],
                   model: Any = "demo", overrides: dict[str, Any] | None = None,
                   context: RunContext | None = None, shard: Shard | None = None,
                   write: Callable[[str], None] = print,
                   probability_format: str = "uint8") -> list[Outcome]:
    """Predict this shard's cases of ``dataset`` into ``output/cases/<case_id>/``; the model is
    read once. A case that fails is recorded in ``output/failed/`` and the cohort goes on;
    cancelling (or Ctrl-C) stops it between cases' files, never inside one."""
    from oncoseg.overview import save_thumbnail
    from oncoseg.prediction import write_prediction
    from oncoseg.verbs import predict

    task = get_task(task)
    context = context or RunContext()
    shard = shard or Shard()
    output = Path(output)
    mine = shard.cases(dataset.cases)
    remove_unfinished(output, mine)
    prepared = prepare(task, model, overrides, context)  # once for the whole cohort
    geometry = quality.model_training_geometry(prepared)
    progress = CohortProgress(len(mine), write, shard)
    outcomes = []
    for case in mine:
        if is_finished(output, case.id):
            outcome = Outcome(case.id, "finished before")
            failure_file(output, case.id).unlink(missing_ok=True)
        else:
            started = time.perf_counter()
            try:
                volumes = {role: case.read_input(role) for role in case.images}
                images = {role: volume.image for role, volume in volumes.items()}
                prediction = predict(task, images, prepared, context=context,
                                     hints=case_hints(task, case))
                prediction.timings.setdefault("total", time.perf_counter() - started)
                prediction.messages[:0] = reading_notes(volumes)  # as predict keeps them
                flags = quality.check_inputs(task, images, case.info, geometry) + \
                    quality.check_prediction(task, prediction, images)
                prediction.details["quality"] = [f.as_dict() for f in flags]
                # the picture first: a finished case (its folder) always has one
                save_thumbnail(prediction, output / THUMBNAILS / f"{case.id}.png")
                write_prediction(prediction, case_folder(output, case.id),
                                 {r: str(p) for r, p in case.images.items()},
                                 probability_format=probability_format,
                                 input_series=input_series(volumes))
                failure_file(output, case.id).unlink(missing_ok=True)
                outcome = Outcome(case.id, "done", time.perf_counter() - started)
            except (Cancelled, KeyboardInterrupt):
                raise
            except Exception as error:  # recorded per case; the cohort goes on
                outcome = Outcome(case.id, "failed", time.perf_counter() - started,
                                  _describe(error))
                _record_failure(output, case, outcome, error)
        outcomes.append(outcome)
        progress(outcome)
    return outcomes


def _describe(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text if isinstance(error, InputError) else f"{type(error).__name__}: {text}"


def _record_failure(output: Path, case: Case, outcome: Outcome, error: Exception) -> None:
    document = {"case_id": case.id, "error": outcome.error, "seconds": round(outcome.seconds, 3),
                "inputs": {r: str(p) for r, p in case.images.items()},
                "traceback": traceback.format_exception(error)}
    write_text_atomic(failure_file(output, case.id), json.dumps(document, indent=2) + "\n",
                      overwrite=True)


# ---------------------------------------------------------------------------- the cohort's table

def case_row(output: Path, case_id: str) -> dict[str, Any]:
    """One row of the cohort table: what the case's result.json (or failure record) says."""
    folder = case_folder(output, case_id)
    row: dict[str, Any] = {"case_id": case_id, "folder": f"{CASES}/{case_id}"}
    if folder.is_dir():
        document = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        row["status"] = "done"
        for segment in document["segments"]:
            row[f"volume_ml:{segment['name']}"] = segment["volume_ml"]
        for name, value in document.get("class_probabilities", {}).items():
            row[f"probability:{name}"] = value
        for stage, seconds in document.get("timings_s", {}).items():
            row[f"seconds:{stage}"] = seconds
        flags = document.get("details", {}).get("quality", [])
        row["flags"] = len(flags)
        row["flag_reasons"] = " | ".join(f["reason"] for f in flags)
        row["messages"] = " | ".join(document.get("messages", []))
    elif failure_file(output, case_id).is_file():
        record = json.loads(failure_file(output, case_id).read_text(encoding="utf-8"))
        row.update(status="failed", error=record["error"], folder="")
    else:
        row.update(status="not run", folder="")
    return row


def write_summary(task: str | Task, dataset: Dataset, output: str | os.PathLike[str]) -> dict:
    """``cohort.csv`` (one row per case of the whole data set, whichever shard ran it),
    ``cohort.json`` (counts, each measurement's distribution, flagged and failed cases) and
    ``report.html``; returns the summary. Written from the folder alone, so any process can
    write them once the shards are done."""
    import csv
    import io

    import numpy as np

    task = get_task(task)
    output = Path(output)
    rows = [case_row(output, c.id) for c in sorted(dataset.cases, key=lambda c: c.id)]
    columns = ["case_id", "status", "flags"]
    last = ["flag_reasons", "messages", "error", "folder"]
    for row in rows:
        columns += [k for k in row if k not in columns and k not in last]
    columns += last
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(output / TABLE, buffer.getvalue(), overwrite=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "not run")}
    distributions = {}
    for column in columns:
        if column.startswith(("volume_ml:", "probability:", "seconds:")):
            values = np.array([r[column] for r in rows if column in r], float)
            if values.size:
                distributions[column] = {
                    "n": int(values.size), "mean": float(values.mean()),
                    **{f"p{q}": float(np.percentile(values, q)) for q in (0, 5, 50, 95, 100)}}
    flagged = {r["case_id"]: r["flag_reasons"] for r in rows if r.get("flags")}
    summary = {"task": task.name, "dataset": str(dataset.root), "layout": dataset.layout,
               "cases": len(rows), **counts, "flagged": len(flagged),
               "distributions": distributions, "flagged_cases": flagged,
               "failed_cases": {r["case_id"]: r["error"] for r in rows
                                if r["status"] == "failed"}}
    write_text_atomic(output / SUMMARY, json.dumps(summary, indent=2) + "\n", overwrite=True)
    write_report(output, task, summary, rows)
    return summary


# ---------------------------------------------------------------------------- reading a case back


def stored_prediction(folder: str | os.PathLike[str]) -> Any:
    """A case folder as ``predict`` wrote it, read back as a :class:`Prediction` (labels,
    probability maps as floats, the inputs as stored, figures and messages), so a reviewer can
    open a cohort's result and correct it without running the model again. What only the
    method's own objects held (``extra``: rectal candidates, staging slice scores) is not
    kept in the folder and comes back empty."""
    import SimpleITK as sitk

    from oncoseg.io.volumes import read_image
    from oncoseg.prediction import Prediction

    folder = Path(folder)
    document = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    task = get_task(document["task"])
    files = document["files"]
    series = {role: found.get("series_uid") or None
              for role, found in document.get("input_series", {}).items()}
    # a DICOM input by the series it was read from (its folder may hold several)
    images = {role: read_image(path, series.get(role))
              for role, path in document["inputs"].items()}
    labels = sitk.ReadImage(str(folder / files["labels"])) if "labels" in files else None
    probabilities = {name: sitk.Cast(sitk.ReadImage(str(folder / relative)), sitk.sitkFloat32)
                     for name, relative in files.get("probabilities", {}).items()}
    display = task.reference_role if task.reference_role in images else next(iter(images))
    return Prediction(task=task.name, model=document["model"], images=images,
                      display_role=display, segments=task.segments, labels=labels,
                      probabilities=probabilities,
                      class_probabilities=document.get("class_probabilities", {}),
                      timings=document.get("timings_s", {}), details=document.get("details", {}),
                      messages=document.get("messages", []))
