"""The ``brain`` task's settings; defaults are paper 004's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import CommonTraining, prediction_only, training_only, with_defaults

SEQUENCES = ("t1", "t1c", "t2", "flair")
ORIENTATIONS = ("axial", "coronal", "sagittal")
SUBNETWORKS = ("unet", "shallow")  # 2D model 1 (reduced U-Nets), 2D model 2 (three layers)
IMPORTS = ("first", "final", "none")  # 2D-3D model A, B, and the plain 3D model
STAGES = ("2d-axial", "2d-coronal", "2d-sagittal", "2d3d", "all")


# normalised SGD (section 2.4) from learning_rate, halved down to learning_rate_min (below)
@dataclass(frozen=True)
class BrainConfig(with_defaults(CommonTraining, learning_rate=0.25)):
    TASK: ClassVar[str] = "brain"
    # pre-processing: each sequence / median of its non-zero voxels x a constant
    intensity_constant: float = 1.0
    # 2D model (one per orientation)
    subnetwork: str = training_only("unet")
    width_2d: int = training_only(16)  # feature maps of a subnetwork's first layer
    levels_2d: int = training_only(3)  # poolings in the main U-Net
    main_weight: float = training_only(0.75)  # c_main; every subnetwork gets (1 - c_main) / (K + 1)
    class_targets_2d: tuple[float, ...] = training_only((0.7, 0.1, 0.1, 0.1))
    # N: gradients of N batches summed, then normalised
    batches_per_iteration_2d: int = training_only(10)
    batch_size_2d: int = training_only(8)  # slices per batch
    # 2D-3D model(s): the ensemble's members, by where the 2D features enter
    members: tuple[str, ...] = training_only(("first", "final"))
    width_3d: int = training_only(16)
    levels_3d: int = training_only(2)
    patch: int = 70
    class_targets_3d: tuple[float, ...] = training_only((0.4, 0.2, 0.2, 0.2))
    batches_per_iteration_3d: int = training_only(5)
    batch_size_3d: int = training_only(1)
    # optimiser (section 2.4)
    learning_rate_min: float = training_only(0.001)
    momentum: float = training_only(0.9)
    halving_period: int = training_only(200)  # F iterations
    d_loss: float = training_only(0.98)
    # robustness to missing sequences at inference: during training a sequence is left out of
    # a sample (its subnetwork's features zeroed) with this probability
    sequence_dropout: float = training_only(0.25)
    # training
    # 2d-axial, 2d-coronal, 2d-sagittal, 2d3d (needs the three 2D), all
    stage: str = training_only("all")
    iterations_2d: int = training_only(400)
    iterations_3d: int = training_only(300)
    # an epoch: a checkpoint, a validation loss, a curve point
    iterations_per_epoch: int = training_only(20)
    # inference: sequences to leave out even when given ("flair", "t1,t2"), to measure how
    # the ensemble does without them
    drop_sequences: str = prediction_only("")
    # ensemble vote (section 2.3): P_tumour, P_core, P_enhancing
    vote_thresholds: tuple[float, float, float] = (0.4, 0.3, 0.4)
    overlap: float = prediction_only(0.5)  # sliding-window overlap of the 3D networks

    def __post_init__(self) -> None:
        from oncoseg.errors import InputError

        checks = (("subnetwork", self.subnetwork in SUBNETWORKS, SUBNETWORKS),
                  ("stage", self.stage in STAGES, STAGES),
                  ("members", bool(self.members) and all(m in IMPORTS for m in self.members),
                   IMPORTS))
        for key, ok, allowed in checks:
            if not ok:
                raise InputError(f"--set {key}", f"'{getattr(self, key)}' must be (made of) "
                                 f"{', '.join(allowed)}")
        unknown = [s for s in self.dropped if s not in SEQUENCES]
        if unknown:
            raise InputError("--set drop_sequences", f"{', '.join(unknown)} is not one of "
                             f"{', '.join(SEQUENCES)}")
        for key in ("class_targets_2d", "class_targets_3d"):
            targets = getattr(self, key)
            if len(targets) != 4 or abs(sum(targets) - 1) > 1e-6 or min(targets) < 0:
                raise InputError(f"--set {key}", "must be 4 non-negative weights summing to 1")

    @property
    def dropped(self) -> list[str]:
        return [s.strip() for s in self.drop_sequences.split(",") if s.strip()]

