"""The ``staging`` task's verbs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.phantoms import staging as staging_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, orientation: str = "LPS",
            tilt_degrees: float = 0.0) -> list[Path]:
    """Case folders with t2w (and the tumour label), plus the staging table staging.csv."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, staging_phantom.generate_case, "staging",
                            progress, cancel, finish=staging_phantom.write_table,
                            orientation=orientation, tilt_degrees=tilt_degrees)


def predict(images: Mapping[str, sitk.Image], model: str | os.PathLike[str] = "demo",
            device: str = "cpu", config: Mapping[str, Any] | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            roi_lps_mm: Sequence[float] | None = None) -> Prediction:
    """P(T3), the stage at the model's threshold, and slice-wise scores."""
    from oncoseg.staging.predict import predict_staging

    return predict_staging(images, model, device, config, progress, cancel, roi_lps_mm)


def train(dataset: str | os.PathLike[str], layout: str = "auto",
          output: str | os.PathLike[str] = "staging-model",
          config: Mapping[str, Any] | None = None, device: str = "cpu", resume: bool = False,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          description: str = "", demo: bool = False) -> Path:
    """One model, or with ``folds`` a k-fold cross-validation (cv_summary.json)."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import training_settings
    from oncoseg.staging.training import train_staging

    settings = training_settings("staging", config)
    data = read_dataset(dataset, layout, roles=["t2w"])
    return train_staging(data, Path(output), settings, device, resume, description, demo,
                         progress, cancel)


def evaluate(dataset: str | os.PathLike[str], layout: str = "auto",
             model: str | os.PathLike[str] = "demo",
             output: str | os.PathLike[str] = "evaluation", device: str = "cpu",
             overwrite: bool = False, config: Mapping[str, Any] | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """P(T3) per case; AUC, accuracy and each stage's recall over the data set."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.evaluation import evaluate_dataset
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.staging.predict import stage_probabilities
    from oncoseg.staging.preprocessing import prepare_volume
    from oncoseg.staging.training import STAGES, classification_figures

    data = read_dataset(dataset, layout, roles=["t2w"])
    loaded = load_task_model("staging", model, device)  # once, not once per case
    settings = model_settings("staging", loaded.metadata, config)

    def case_row(case) -> dict[str, Any]:
        prepared = prepare_volume(case.read("t2w"), settings, roi_box=case.info.get("roi_lps_mm"))
        p_t3, _ = stage_probabilities(prepared.array, loaded.network, settings, device, cancel)
        return {"stage": case.info.get("stage", ""), "p_t3": p_t3,
                "predicted": "T3" if p_t3 >= settings.threshold else "T2"}

    def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
        known = [r for r in rows if r["stage"] in STAGES]
        if not known:
            return {}
        return {"classification": classification_figures(
            np.array([STAGES.index(r["stage"]) for r in known]),
            np.array([r["p_t3"] for r in known]), settings.threshold)}

    return evaluate_dataset(data, case_row, Path(output), plotted=("p_t3",), overwrite=overwrite,
                            extra={"model": str(loaded.path), "threshold": settings.threshold},
                            totals=totals, progress=progress, cancel=cancel)
