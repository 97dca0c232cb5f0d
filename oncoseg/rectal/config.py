"""The rectal task's settings; the defaults are the paper's (Trebeschi et al. 2017).

One dataclass for both phases, each field's phase declared (``TRAINING_ONLY``,
``PREDICTION_ONLY``, the rest both): ``--set KEY=VALUE`` on the command line and the Slicer
panel's fields change these. Light on purpose (no torch): task declarations read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import Settings


@dataclass(frozen=True)
class RectalConfig(Settings):
    TASK: ClassVar[str] = "rectal"
    TRAINING_ONLY: ClassVar[frozenset[str]] = frozenset({
        "samples_per_class", "ring_mm", "bright_threshold", "patch_size", "learning_rate",
        "rho", "l2", "batch_size", "max_epochs", "patience", "min_delta",
        "validation_fraction", "seed", "repeats", "label"})
    PREDICTION_ONLY: ClassVar[frozenset[str]] = frozenset({
        "threshold", "keep", "connectivity"})
    # pre-processing
    registration: str = "rectal"  # elastix preset for T2w (and a high-b on its own grid); none
    # inference and post-processing
    threshold: float = 0.5
    keep: str = "largest"  # largest | all (a seed point overrides both)
    connectivity: int = 26
    # sampling (per case: N tumour and N background voxels, background RB1/RB2/RB3 = 1/4, 1/2,
    # 1/4; RB1 a ring of ring_mm, RB2 standardised high b above bright_threshold)
    samples_per_class: int = 5000
    ring_mm: float = 10.0
    bright_threshold: float = 2.0
    patch_size: int = 21
    # optimisation: Adadelta, cross-entropy with a small L2 penalty, early stopping
    learning_rate: float = 0.001
    rho: float = 0.9
    l2: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 5
    min_delta: float = 1e-3
    validation_fraction: float = 0.2
    seed: int = 0
    repeats: int = 1  # > 1: the paper's stability analysis (ICC of per-case DSC over repeats)
    label: str = "label"  # which reader's label file trains the model

