"""The ``staging`` task's settings; defaults are paper 002's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import Settings

VARIANTS = ("f-R2D", "f-R3D", "f-R(2+1)D", "f-MC2", "f-MC3", "f-MC4", "f-MC5", "f-rMC2",
            "f-rMC3", "f-rMC4", "f-rMC5")
AGGREGATIONS = ("average", "max", "attention", "bilinear")
LOSSES = ("focal", "focal+triplet", "focal+center")


@dataclass(frozen=True)
class StagingConfig(Settings):
    TASK: ClassVar[str] = "staging"
    TRAINING_ONLY: ClassVar[frozenset[str]] = frozenset({
        "variant", "aggregation", "filters", "loss", "focal_gamma", "triplet_margin",
        "center_weight", "slice_weight", "learning_rate", "momentum", "weight_decay",
        "batch_size", "max_epochs", "patience", "select_by", "min_delta", "oversample",
        "samples_per_epoch", "augment", "elastic", "validation_fraction", "folds", "seed"})
    PREDICTION_ONLY: ClassVar[frozenset[str]] = frozenset()
    # pre-processing: N4, x-y crop around rectum and tumour, resize to size x size x N
    n4: bool = True
    size: int = 256
    roi_margin_mm: float = 0.0  # added around a given ROI box or mask
    auto_roi_mm: float = 80.0  # no ROI given: a centred square of this side (the result says so)
    # network (Table 2: variants; Table 4: aggregation)
    variant: str = "f-rMC5"
    aggregation: str = "bilinear"
    filters: int = 32
    # training
    loss: str = "focal+triplet"
    focal_gamma: float = 2.0  # Lin et al.
    triplet_margin: float = 0.2  # Schroff et al., on l2-normalised volume features
    center_weight: float = 0.003  # Wen et al.
    slice_weight: float = 1.0  # focal loss of the slice-wise scores on representative slices
    learning_rate: float = 0.01  # SGD
    momentum: float = 0.9
    weight_decay: float = 0.01
    batch_size: int = 8
    max_epochs: int = 60
    patience: int = 10
    select_by: str = "auc"  # early stopping and the kept weights: validation AUC (the paper's
    # model selection) or loss
    min_delta: float = 1e-3
    oversample: bool = True  # the minority stage is repeated until the classes balance
    samples_per_epoch: int = 0  # 0 = every case once (after oversampling); more repeats them
    augment: bool = True
    elastic: bool = True  # training augmentation includes the smooth elastic displacement
    # (the paper's elastic, grid and optical distortions)
    validation_fraction: float = 0.2  # of the training patients, for early stopping
    folds: int = 0  # k-fold cross-validation by patient (paper: 10); 0 = one model
    seed: int = 0
    # inference
    tta: int = 8  # test-time augmentation passes (1 = none)
    threshold: float = 0.5  # P(T3) at or above it reads T3

    def __post_init__(self) -> None:
        from oncoseg.errors import InputError

        for key, allowed in (("variant", VARIANTS), ("aggregation", AGGREGATIONS),
                             ("loss", LOSSES), ("select_by", ("auc", "loss"))):
            if getattr(self, key) not in allowed:
                raise InputError(f"--set {key}", f"'{getattr(self, key)}' is not one of "
                                 f"{', '.join(allowed)}")

