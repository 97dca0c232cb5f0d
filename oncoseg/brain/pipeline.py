"""The ``brain`` task's verbs."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from oncoseg.phantoms import brain as brain_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback

REGION_KEYS = {"whole tumour": "wt", "tumour core": "tc", "enhancing tumour": "et"}
PHANTOM_NAMINGS = {"native": "brats2021", "brats2021": "brats2021", "brats2023": "brats2023"}


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, orientation: str = "LPS",
            tilt_degrees: float = 0.0) -> list[Path]:
    """BraTS case folders with the 2017-2021 file names (native) or the 2023+ ones."""
    check_phantom_layout(layout, list(PHANTOM_NAMINGS))
    naming = PHANTOM_NAMINGS[layout]
    return generate_dataset(
        output, cases, seed, functools.partial(brain_phantom.generate_case, naming=naming),
        "brain", progress, cancel,
        names=functools.partial(brain_phantom.case_folder_name, naming=naming),
        orientation=orientation, tilt_degrees=tilt_degrees)


def predict(images: Mapping[str, sitk.Image | None], model: str | os.PathLike[str] = "demo",
            device: str = "cpu", config: Mapping[str, Any] | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None
            ) -> Prediction:
    """Necrotic / non-enhancing core, oedema and enhancing tumour from any of the four
    sequences."""
    from oncoseg.brain.predict import predict_brain

    return predict_brain(images, model, device, config, progress, cancel)


def train(dataset: str | os.PathLike[str], layout: str = "auto",
          output: str | os.PathLike[str] = "brain-model",
          config: Mapping[str, Any] | None = None, device: str = "cpu", resume: bool = False,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          description: str = "", demo: bool = False) -> Path:
    """The paper's stages: 2D models per orientation, then the 2D-3D members and the
    ensemble file (``--stage`` runs one)."""
    from oncoseg.brain.training import train_brain
    from oncoseg.method import training_settings

    return train_brain(dataset, output, layout, training_settings("brain", config), device,
                       resume, description, demo, progress, cancel)


def evaluate(dataset: str | os.PathLike[str], layout: str = "auto",
             model: str | os.PathLike[str] = "demo",
             output: str | os.PathLike[str] = "evaluation", device: str = "cpu",
             overwrite: bool = False, config: Mapping[str, Any] | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """Dice and HD95 of whole tumour, tumour core and enhancing tumour per case (BraTS
    regions; the reference read as BraTS writes it)."""
    from oncoseg.brain.config import SEQUENCES
    from oncoseg.brain.predict import segment
    from oncoseg.brain.preprocessing import back_to_grid, prepare_volume
    from oncoseg.brain.training import case_labels
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.evaluation import evaluate_dataset
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.metrics import brats_regions, dice, hd95

    data = read_dataset(dataset, layout, roles=list(SEQUENCES))
    loaded = load_task_model("brain", model, device)
    settings = model_settings("brain", loaded.metadata, config)

    def case_row(case) -> dict[str, Any]:
        volume = prepare_volume({role: case.read(role) for role in case.images},
                                settings.intensity_constant, settings.dropped)
        labels, _, _ = segment(loaded.network, volume, settings, device, cancel=cancel)
        predicted = sitk.GetArrayFromImage(back_to_grid(labels, volume))
        reference = sitk.GetArrayFromImage(back_to_grid(case_labels(case, volume), volume))
        spacing = volume.grid.GetSpacing()[::-1]
        row: dict[str, Any] = {}
        truths = brats_regions(reference)
        for region, mask in brats_regions(predicted).items():
            short, truth = REGION_KEYS[region], truths[region]
            row[f"dice_{short}"] = dice(mask, truth)
            row[f"hd95_{short}_mm"] = hd95(mask, truth, spacing) if mask.any() and truth.any() \
                else float("nan")
        return row

    return evaluate_dataset(data, case_row, Path(output), plotted=("dice_",),
                            overwrite=overwrite,
                            extra={"model": str(loaded.path),
                                   "sequences_dropped": settings.dropped},
                            progress=progress, cancel=cancel)
