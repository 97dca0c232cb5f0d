"""The ``oar-ct`` task's settings; defaults are paper 003's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import Settings


@dataclass(frozen=True)
class OarCtConfig(Settings):
    TASK: ClassVar[str] = "oar-ct"
    TRAINING_ONLY: ClassVar[frozenset[str]] = frozenset({
        "filters", "batch_size", "foreground_fraction", "rotation_rad", "scale",
        "shift_hu", "learning_rate", "plateau_patience", "plateau_factor", "max_epochs",
        "steps_per_epoch", "patience", "min_delta", "validation_fraction",
        "validation_patches_per_case", "hard_negative_rounds", "hard_negative_fraction",
        "seed"})
    PREDICTION_ONLY: ClassVar[frozenset[str]] = frozenset({
        "overlap", "inference_batch", "keep_largest", "largest_component_organs",
        "probabilities"})
    # pre-processing: HU clipped to [-800, 800] and divided by 800; a working grid
    hu_low: float = -800.0
    hu_high: float = 800.0
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 3.0)  # x, y, z of the working grid
    # network
    filters: tuple[int, ...] = (16, 32, 64, 128)
    # training patches (z, y, x); the paper's 136 x 136 x 72
    patch_size: tuple[int, int, int] = (72, 136, 136)
    batch_size: int = 2
    foreground_fraction: float = 0.33  # patches centred on an annotated organ voxel
    rotation_rad: float = 0.15
    scale: float = 0.10
    shift_hu: float = 100.0
    learning_rate: float = 1e-4  # NAdam (Adam with Nesterov momentum), reduced on plateau
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    max_epochs: int = 50
    steps_per_epoch: int = 500
    patience: int = 15  # early stopping (epochs without a validation improvement of min_delta)
    min_delta: float = 1e-4
    validation_fraction: float = 0.2
    validation_patches_per_case: int = 4
    hard_negative_rounds: int = 0  # paper: restart cycles with false-positive-centred patches
    hard_negative_fraction: float = 0.10
    seed: int = 0
    # inference and post-processing
    overlap: float = 0.5
    inference_batch: int = 2
    keep_largest: bool = True  # largest 26-connected component per organ, then hole filling
    # the organs that post-processing applies to (paper: all; a bilateral target such as the
    # nodal CTV loses one side to it)
    largest_component_organs: tuple[str, ...] = (
        "Femoral head L", "Femoral head R", "Bladder", "Bowel bag", "Nodal CTV")
    probabilities: bool = True  # write one probability map per organ

