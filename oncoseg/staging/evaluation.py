"""The paper's evaluation of StagingCNN: P(T3) per case; AUC, accuracy and each stage's recall
over the data set; plus what the paper does not report, the calibration of P(T3): its expected
calibration error (:data:`~oncoseg.staging.calibration.BINNING`) before and after the model's
calibration, and a reliability diagram (``reliability.png``).

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
from oncoseg.plots import plot_reliability
from oncoseg.staging.calibration import (
    BINNING,
    ECE_BINS,
    Calibration,
    expected_calibration_error,
    reliability_table,
)
from oncoseg.staging.predict import probability, volume_scores
from oncoseg.staging.preprocessing import prepare_volume
from oncoseg.staging.training import STAGES, classification_figures

RELIABILITY_PNG = "reliability.png"


def calibration_figures(stages: np.ndarray, p_t3: np.ndarray, p_t3_uncalibrated: np.ndarray,
                        calibrated: bool) -> dict[str, Any]:
    """ECE of P(T3) as reported and of the network's own sigmoid, with the binning and the
    reliability table of the reported P(T3)."""
    is_t3 = np.asarray(stages) == 1
    return {"calibrated": calibrated, "binning": BINNING,
            "ece": expected_calibration_error(p_t3, is_t3),
            "ece_uncalibrated": expected_calibration_error(p_t3_uncalibrated, is_t3),
            "p_t3_range": [float(np.min(p_t3)), float(np.max(p_t3))],
            "reliability": reliability_table(p_t3, is_t3)}


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """P(T3) per case; AUC, accuracy, each stage's recall and the calibration error over the
    data set; ``reliability.png`` beside ``cases.csv``."""
    network, settings = prepared.network, prepared.settings
    calibration = Calibration.from_outputs(prepared.model.metadata.outputs,
                                           str(prepared.model.path))
    known: list[dict[str, Any]] = []

    def case_row(case) -> dict[str, Any]:
        volume = prepare_volume(case.read("t2w"), settings, roi_box=case.info.get("roi_lps_mm"),
                                automatic=True)
        scores = volume_scores(volume.array, network, settings, context.device, context.cancel)
        p_t3 = probability(scores, calibration)
        return {"stage": case.info.get("stage", ""), "p_t3": p_t3,
                "predicted": "T3" if p_t3 >= settings.threshold else "T2",
                "p_t3_uncalibrated": scores.p_t3, "volume_logit": scores.logit}

    def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
        known[:] = [r for r in rows if r["stage"] in STAGES]
        if not known:
            return {}
        stages = np.array([STAGES.index(r["stage"]) for r in known])
        p_t3 = np.array([r["p_t3"] for r in known])
        return {"classification": classification_figures(stages, p_t3, settings.threshold),
                "calibration": calibration_figures(
                    stages, p_t3, np.array([r["p_t3_uncalibrated"] for r in known]),
                    calibration is not None)}

    summary = evaluate_dataset(data, case_row, output, plotted=("p_t3",), overwrite=overwrite,
                               extra={"model": str(prepared.model.path),
                                      "threshold": settings.threshold,
                                      "model_calibration": calibration.as_dict()
                                      if calibration else "uncalibrated"},
                               totals=totals, progress=context.progress, cancel=context.cancel)
    if known:  # the folder is whole now; the diagram joins it (written atomically)
        figures = summary["calibration"]
        curves = [(f"P(T3) (ECE {figures['ece']:.3f})", figures["reliability"])]
        if calibration is not None:
            before = np.array([r["p_t3_uncalibrated"] for r in known])
            is_t3 = np.array([r["stage"] == "T3" for r in known])
            curves.append((f"before calibration (ECE {figures['ece_uncalibrated']:.3f})",
                           reliability_table(before, is_t3)))
        plot_reliability(curves, Path(output) / RELIABILITY_PNG,
                         title=f"{data.root.name}: {len(known)} cases, {ECE_BINS} bins")
    return summary
