"""The shape every task's evaluation shares: one row per case, a table, a summary, a plot.

A task supplies the per-case figures; this writes ``cases.csv``, ``summary.json`` and
``distribution.png`` into an output folder that appears whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from oncoseg.datasets.base import Case, Dataset
from oncoseg.io.atomic import atomic_directory
from oncoseg.metrics import write_case_table
from oncoseg.plots import plot_distribution
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report


def evaluate_dataset(dataset: Dataset, evaluate_case: Callable[[Case], dict[str, Any]],
                     output: Path, plotted: Sequence[str], overwrite: bool = False,
                     extra: Mapping[str, Any] | None = None,
                     totals: Callable[[list[dict[str, Any]]], Mapping[str, Any]] | None = None,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> dict[str, Any]:
    """Rows from ``evaluate_case``; columns starting with a ``plotted`` prefix are drawn.
    ``totals`` adds data-set figures that are not means of the rows (a score that weights
    slices, not cases)."""
    rows = []
    with atomic_directory(output, overwrite) as folder:
        for index, case in enumerate(dataset.cases):
            check_cancelled(cancel)
            report(progress, "Evaluating", index, len(dataset.cases), message=case.id)
            rows.append({"case": case.id, **evaluate_case(case)})
        report(progress, "Evaluating", len(dataset.cases), len(dataset.cases))
        write_case_table(rows, folder)
        columns = [k for k in dict.fromkeys(k for r in rows for k in r)
                   if k.startswith(tuple(plotted))]
        plot_distribution(rows, columns, folder / "distribution.png",
                          title=f"{dataset.root.name}: {len(rows)} cases")
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        summary.update(dataset=str(dataset.root), **model_configuration(extra or {}),
                       **(totals(rows) if totals else {}))
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n",
                                             encoding="utf-8")
    return summary


def model_configuration(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with the training settings its ``config`` (the run's settings) holds but the
    model file does not record named in ``config_not_in_model``: their values are the task's
    defaults, which the model may or may not have used (a run's settings take every recorded
    one from the model file: :func:`oncoseg.method.model_settings`)."""
    extra = dict(extra)
    if "config" not in extra or "model" not in extra:
        return extra
    from oncoseg.method import recorded_training_settings
    from oncoseg.modelfile import read_header

    metadata = read_header(extra["model"]).metadata
    _, missing = recorded_training_settings(metadata.task, metadata)
    missing = [key for key in missing if key in extra["config"]]
    if missing:
        extra["config_not_in_model"] = missing
    return extra
