"""Evaluating the OAR CT model as paper 003 does: per organ Dice, symmetric mean surface
distance and HD95 (mm) on the CT grid, only for the organs each case annotated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.metrics import dice, hd95, mean_surface_distance
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct
from oncoseg.prediction import Prediction, file_stem
from oncoseg.progress import CancelToken, ProgressCallback


def organ_figures(case: Case, predict: Callable[[sitk.Image], Prediction]) -> dict[str, Any]:
    ct = read_case_ct(case)
    truth, annotated = case_labels(case, ct)
    predicted = sitk.GetArrayFromImage(predict(ct).labels)
    spacing = ct.GetSpacing()[::-1]
    row: dict[str, Any] = {}
    for spec in CT_SEGMENTS:
        stem = file_stem(spec.name).lower()
        if spec.name not in annotated:  # unknown, not zero: the case did not contour it
            row[f"dice_{stem}"] = None
            continue
        a, b = predicted == spec.label, np.asarray(truth) == spec.label
        row[f"dice_{stem}"] = dice(a, b)
        row[f"msd_mm_{stem}"] = mean_surface_distance(a, b, spacing)
        row[f"hd95_mm_{stem}"] = hd95(a, b, spacing)
    return row


def evaluate_ct_cases(dataset: Dataset, predict: Callable[[sitk.Image], Prediction],
                      output: Path, overwrite: bool = False,
                      progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> dict[str, Any]:
    return evaluate_dataset(dataset, lambda case: organ_figures(case, predict), output,
                            plotted=("dice_",), overwrite=overwrite, progress=progress,
                            cancel=cancel)
