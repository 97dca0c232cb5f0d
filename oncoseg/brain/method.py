"""The brain tumour method of Mlynarski et al. 2018 (paper 004: 2D-3D networks for BraTS 2017,
an ensemble voting hierarchically) behind the contract of :mod:`oncoseg.method`."""

from __future__ import annotations

import functools
from pathlib import Path

from oncoseg.brain.config import BrainConfig
from oncoseg.brain.evaluation import evaluate
from oncoseg.brain.predict import predict
from oncoseg.datasets.base import Dataset
from oncoseg.method import PhantomOptions, RunContext, TrainOptions
from oncoseg.phantoms import brain as brain_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset

__all__ = ["evaluate", "phantom", "predict", "train"]

PHANTOM_NAMINGS = {"native": "brats2021", "brats2021": "brats2021", "brats2023": "brats2023"}


def phantom(output: Path, options: PhantomOptions, context: RunContext) -> list[Path]:
    """BraTS case folders with the 2017-2021 file names (native) or the 2023+ ones."""
    check_phantom_layout(options.layout, list(PHANTOM_NAMINGS))
    naming = PHANTOM_NAMINGS[options.layout]
    return generate_dataset(
        output, options.cases, options.seed,
        functools.partial(brain_phantom.generate_case, naming=naming), "brain",
        context.progress, context.cancel,
        names=functools.partial(brain_phantom.case_folder_name, naming=naming),
        orientation=options.orientation, tilt_degrees=options.tilt_degrees)


def train(data: Dataset, output: Path, settings: BrainConfig, context: RunContext,
          options: TrainOptions) -> Path:
    """The paper's stages: 2D models per orientation, then the 2D-3D members and the
    ensemble file (``--stage`` runs one)."""
    from oncoseg.brain.training import train_brain

    return train_brain(data, output, settings, context.device, options.resume,
                       options.statement, context.progress, context.cancel)
