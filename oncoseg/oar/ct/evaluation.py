"""Evaluating the OAR CT model as paper 003 does: per organ Dice, mean surface distance and
HD95 (mm) on the CT grid, only for the organs each case annotated, and only on the voxels it
annotated (an nnU-Net data set's ignore label marks those it did not).

Mean surface distance comes twice, named apart: ``msd_paper_mm_<organ>`` is the paper's (2.6:
the average of the two directed mean distances, comparable with its Table 2),
``msd_pooled_mm_<organ>`` the mean over both surfaces' voxels pooled (MONAI's symmetric
average surface distance; what this column meant before it had a second). They differ when the
two surfaces differ in size.

Each case is segmented exactly as ``oncoseg predict`` does, with the model read once for every
case and no probability maps (evaluation scores the labels only, and the maps of a full CT take
a gigabyte).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import IGNORE_LABEL, Case, Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.metrics import dice, surface_figures
from oncoseg.oar.ct.predict import predict
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct
from oncoseg.prediction import Prediction, file_stem


def organ_figures(case: Case, segment: Callable[[sitk.Image], Prediction]) -> dict[str, Any]:
    ct = read_case_ct(case)
    truth, annotated = case_labels(case, ct)
    predicted = sitk.GetArrayFromImage(segment(ct).labels)
    spacing = ct.GetSpacing()[::-1]
    known = np.asarray(truth) != IGNORE_LABEL  # nnU-Net's evaluation leaves these out too
    row: dict[str, Any] = {}
    for spec in CT_SEGMENTS:
        stem = file_stem(spec.name).lower()
        if spec.name not in annotated:  # unknown, not zero: the case did not contour it
            row[f"dice_{stem}"] = None
            continue
        a, b = (predicted == spec.label) & known, np.asarray(truth) == spec.label
        row[f"dice_{stem}"] = dice(a, b)
        for name, value in surface_figures(a, b, spacing).items():  # msd_paper_mm, ...
            row[f"{name}_{stem}"] = value
    return row


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """Dice, mean surface distance (the paper's and the pooled one) and HD95 per organ, for
    the organs each case annotated."""
    labels_only = replace(prepared, settings=replace(prepared.settings, probabilities=False))
    # the data set's progress is reported per case; a case's own stages would interleave with it
    per_case = replace(context, progress=None)

    def segment(ct: sitk.Image) -> Prediction:
        return predict(labels_only, {"ct": ct}, per_case, Hints())

    return evaluate_dataset(data, lambda case: organ_figures(case, segment), output,
                            plotted=("dice_",), overwrite=overwrite, progress=context.progress,
                            cancel=context.cancel)
