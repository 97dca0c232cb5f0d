"""Evaluating the GI-tract model as the UW-Madison competition scores it (paper 001).

Per scan and organ: the mean per-slice Dice (a slice where both masks are empty scores 1), the
same Dice over the slices whose reference holds the organ (the paper's "non-empty" figures),
and the 3D Hausdorff score. The data set's Kaggle score is 0.4 x the Dice averaged over every
(slice, organ) row + 0.6 x the Hausdorff score averaged over every (scan, organ): slices, not
scans, weigh the Dice part, so it is computed from the rows' slice counts, not as a mean of
per-scan scores.

Each scan is segmented as ``oncoseg predict`` does (same slice stacks, tuned threshold and
gate), with the model read once for every scan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.method import Prepared, RunContext
from oncoseg.metrics import kaggle_hausdorff_score, slice_dice
from oncoseg.oar.mr.predict import organ_maps
from oncoseg.oar.mr.preprocessing import ORGANS, check_mr, network_view
from oncoseg.oar.mr.training import case_masks
from oncoseg.progress import CancelToken, ProgressCallback

# masks (3, z, y, x) bool in ORGANS order for a scan
Segmenter = Callable[[sitk.Image], np.ndarray]


def scan_figures(case: Case, segment: Segmenter) -> dict[str, Any]:
    image = network_view(case.read("mr"))
    truth = case_masks(case, image)
    predicted = segment(image)
    row: dict[str, Any] = {"slices": int(truth.shape[1])}
    for index, organ in enumerate(ORGANS):
        a, b = predicted[index], truth[index]
        per_slice = slice_dice(a, b)
        with_organ = b.reshape(len(b), -1).any(axis=1)
        row[f"dice_{organ}"] = float(per_slice.mean())
        row[f"nonempty_slices_{organ}"] = int(with_organ.sum())
        row[f"nonempty_dice_{organ}"] = float(per_slice[with_organ].mean()) \
            if with_organ.any() else None
        row[f"hausdorff_score_{organ}"] = kaggle_hausdorff_score(a, b)
    return row


def kaggle_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The data set's Dice, Hausdorff and Kaggle scores, weighted as the competition's."""
    slices = np.array([row["slices"] for row in rows], float)
    dice = np.mean([np.sum(slices * [row[f"dice_{o}"] for row in rows]) / slices.sum()
                    for o in ORGANS])
    hausdorff = float(np.mean([row[f"hausdorff_score_{o}"] for row in rows for o in ORGANS]))
    nonempty = {}
    for organ in ORGANS:
        counts = np.array([row[f"nonempty_slices_{organ}"] for row in rows], float)
        values = [row[f"nonempty_dice_{organ}"] or 0.0 for row in rows]
        nonempty[organ] = float(np.sum(counts * values) / counts.sum()) if counts.sum() else None
    return {"kaggle": {"dice": float(dice), "hausdorff_score": hausdorff,
                       "score": float(0.4 * dice + 0.6 * hausdorff),
                       "nonempty_slice_dice": nonempty}}


def evaluate_mr_cases(dataset: Dataset, segment: Segmenter, output: Path,
                      overwrite: bool = False, extra: dict[str, Any] | None = None,
                      progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> dict[str, Any]:
    return evaluate_dataset(dataset, lambda case: scan_figures(case, segment), output,
                            plotted=("dice_", "hausdorff_score_"), overwrite=overwrite,
                            extra=extra, totals=kaggle_totals, progress=progress, cancel=cancel)


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """Per-slice Dice, Hausdorff score and the Kaggle score per organ."""
    settings = prepared.settings

    def segment(image: sitk.Image) -> np.ndarray:
        check_mr(image)
        maps = organ_maps(sitk.GetArrayFromImage(image), prepared.network, settings,
                          context.device, cancel=context.cancel)
        return maps.masks(settings.threshold, settings.gate_threshold)

    return evaluate_mr_cases(data, segment, output, overwrite,
                             {"model": str(prepared.model.path), "threshold": settings.threshold},
                             context.progress, context.cancel)
