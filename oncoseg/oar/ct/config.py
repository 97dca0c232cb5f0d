"""The ``oar-ct`` task's settings; defaults are paper 003's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import EpochTraining, prediction_only, training_only, with_defaults


# NAdam (Adam with Nesterov momentum), reduced on plateau; early stopping after 15 epochs
@dataclass(frozen=True)
class OarCtConfig(with_defaults(EpochTraining, learning_rate=1e-4, batch_size=2, max_epochs=50,
                                patience=15, min_delta=1e-4)):
    TASK: ClassVar[str] = "oar-ct"
    # pre-processing: HU clipped to [-800, 800] and divided by 800; a working grid
    hu_low: float = -800.0
    hu_high: float = 800.0
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 3.0)  # x, y, z of the working grid
    # network
    filters: tuple[int, ...] = training_only((16, 32, 64, 128))
    # training patches (z, y, x); the paper's 136 x 136 x 72
    patch_size: tuple[int, int, int] = (72, 136, 136)
    foreground_fraction: float = training_only(0.33)  # patches centred on an annotated organ voxel
    rotation_rad: float = training_only(0.15)
    scale: float = training_only(0.10)
    shift_hu: float = training_only(100.0)
    # the learning rate's reduction on plateau
    plateau_patience: int = training_only(5)
    plateau_factor: float = training_only(0.5)
    steps_per_epoch: int = training_only(500)
    validation_patches_per_case: int = training_only(4)
    # paper: restart cycles with false-positive-centred patches
    hard_negative_rounds: int = training_only(0)
    hard_negative_fraction: float = training_only(0.10)
    # inference and post-processing
    overlap: float = prediction_only(0.5)
    inference_batch: int = prediction_only(2)
    # largest 26-connected component per organ, then hole filling
    keep_largest: bool = prediction_only(True)
    # the organs that post-processing applies to (paper: all; a bilateral target such as the
    # nodal CTV loses one side to it)
    largest_component_organs: tuple[str, ...] = prediction_only((
        "Femoral head L", "Femoral head R", "Bladder", "Bowel bag", "Nodal CTV"))
    probabilities: bool = prediction_only(True)  # write one probability map per organ

