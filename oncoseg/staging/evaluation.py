"""The paper's evaluation of StagingCNN: P(T3) per case; AUC, accuracy and each stage's recall
over the data set.

Each case is prepared and scored as ``oncoseg predict`` does, with the model read once for
every case; its ROI box is the ``roi_lps_mm`` column of the data set's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oncoseg.datasets.base import Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.method import Prepared, RunContext
from oncoseg.staging.predict import stage_probabilities
from oncoseg.staging.preprocessing import prepare_volume
from oncoseg.staging.training import STAGES, classification_figures


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """P(T3) per case; AUC, accuracy and each stage's recall over the data set."""
    network, settings = prepared.network, prepared.settings

    def case_row(case) -> dict[str, Any]:
        volume = prepare_volume(case.read("t2w"), settings, roi_box=case.info.get("roi_lps_mm"))
        p_t3, _ = stage_probabilities(volume.array, network, settings, context.device,
                                      context.cancel)
        return {"stage": case.info.get("stage", ""), "p_t3": p_t3,
                "predicted": "T3" if p_t3 >= settings.threshold else "T2"}

    def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
        known = [r for r in rows if r["stage"] in STAGES]
        if not known:
            return {}
        return {"classification": classification_figures(
            np.array([STAGES.index(r["stage"]) for r in known]),
            np.array([r["p_t3"] for r in known]), settings.threshold)}

    return evaluate_dataset(data, case_row, output, plotted=("p_t3",), overwrite=overwrite,
                            extra={"model": str(prepared.model.path),
                                   "threshold": settings.threshold},
                            totals=totals, progress=context.progress, cancel=context.cancel)
