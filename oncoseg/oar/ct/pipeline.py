"""The ``oar-ct`` task's verbs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from oncoseg.phantoms import pelvis_ct
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, orientation: str = "LPS",
            tilt_degrees: float = 0.0) -> list[Path]:
    """Patient folders with a CT series (DICOM) and an RT structure set each."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, pelvis_ct.generate_case, "oarct", progress,
                            cancel, orientation=orientation, axial_only=True,
                            tilt_degrees=tilt_degrees)


def predict(images: Mapping[str, sitk.Image], model: str | os.PathLike[str] = "demo",
            device: str = "cpu", config: Mapping[str, Any] | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> Prediction:
    """Femoral heads, bladder, bowel bag and nodal CTV on one CT."""
    from oncoseg.oar.ct.predict import predict_ct

    return predict_ct(images, model, device, config, progress, cancel)


def train(dataset: str | os.PathLike[str], layout: str = "auto",
          output: str | os.PathLike[str] = "oar-ct-model",
          config: Mapping[str, Any] | None = None, device: str = "cpu", resume: bool = False,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          description: str = "", demo: bool = False) -> Path:
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import training_settings
    from oncoseg.oar.ct.training import train_oar_ct

    settings = training_settings("oar-ct", config)
    data = read_dataset(dataset, layout, roles=["ct"])
    return train_oar_ct(data, Path(output), settings, device, resume, description, demo,
                        progress, cancel)


def evaluate(dataset: str | os.PathLike[str], layout: str = "auto",
             model: str | os.PathLike[str] = "demo",
             output: str | os.PathLike[str] = "evaluation", device: str = "cpu",
             overwrite: bool = False, config: Mapping[str, Any] | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """Dice, mean surface distance and HD95 per organ, for the organs each case annotated."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import load_task_model
    from oncoseg.oar.ct.evaluation import evaluate_ct_cases
    from oncoseg.oar.ct.predict import predict_ct

    data = read_dataset(dataset, layout, roles=["ct"])
    loaded = load_task_model("oar-ct", model, device)  # once, not once per case
    settings = {**(config or {}), "probabilities": False}

    def segment(ct: sitk.Image) -> Prediction:
        return predict_ct({"ct": ct}, loaded, device, settings, cancel=cancel)

    return evaluate_ct_cases(data, segment, Path(output), overwrite, progress, cancel)
