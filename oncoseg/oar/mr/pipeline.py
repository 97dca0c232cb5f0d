"""The ``oar-mr`` task's verbs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.phantoms import gi
from oncoseg.phantoms.common import check_phantom_layout
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, orientation: str = "LPS",
            tilt_degrees: float = 0.0) -> list[Path]:
    """Patients in the UW-Madison Kaggle layout (train.csv, train/caseN/caseN_dayN/scans)."""
    check_phantom_layout(layout, ["native"])
    if orientation.upper() != "LPS" or tilt_degrees:
        raise InputError("--orientation", "the GI tract phantoms are written in the Kaggle "
                         "layout, whose PNG slices carry no orientation (read as LPS axial "
                         "slices); only upright LPS is possible")
    return gi.generate(output, cases, seed, progress, cancel)


def predict(images: Mapping[str, sitk.Image], model: str | os.PathLike[str] = "demo",
            device: str = "cpu", config: Mapping[str, Any] | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> Prediction:
    """Stomach, small and large bowel on an abdominal MR volume or a Kaggle scans folder."""
    from oncoseg.oar.mr.predict import predict_mr

    return predict_mr(images, model, device, config, progress, cancel)


def train(dataset: str | os.PathLike[str], layout: str = "auto",
          output: str | os.PathLike[str] = "oar-mr-model",
          config: Mapping[str, Any] | None = None, device: str = "cpu", resume: bool = False,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          description: str = "", demo: bool = False) -> Path:
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import training_settings
    from oncoseg.oar.mr.training import train_oar_mr

    settings = training_settings("oar-mr", config)
    data = read_dataset(dataset, layout, roles=["mr"])
    return train_oar_mr(data, Path(output), settings, device, resume, description, demo,
                        progress, cancel)


def evaluate(dataset: str | os.PathLike[str], layout: str = "auto",
             model: str | os.PathLike[str] = "demo",
             output: str | os.PathLike[str] = "evaluation", device: str = "cpu",
             overwrite: bool = False, config: Mapping[str, Any] | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """Per-slice Dice, Hausdorff score and the Kaggle score per organ."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.oar.mr.evaluation import evaluate_mr_cases
    from oncoseg.oar.mr.predict import organ_maps
    from oncoseg.oar.mr.slices import check_mr

    data = read_dataset(dataset, layout, roles=["mr"])
    loaded = load_task_model("oar-mr", model, device)  # once, not once per scan
    settings = model_settings("oar-mr", loaded.metadata, config)

    def segment(image: sitk.Image):
        check_mr(image)
        maps = organ_maps(sitk.GetArrayFromImage(image), loaded.network, settings, device,
                          cancel=cancel)
        return maps.masks(settings.threshold, settings.gate_threshold)

    return evaluate_mr_cases(data, segment, Path(output), overwrite,
                             {"model": str(loaded.path), "threshold": settings.threshold},
                             progress, cancel)
