"""The ``oar-ct`` task's settings. Defaults are paper 003's (Sartor et al. 2020, section 2.3)
where it states them; the comments mark each one that is OncoSeg's own, and why.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.errors import InputError
from oncoseg.settings import EpochTraining, prediction_only, training_only, with_defaults
from oncoseg.spacing import NATIVE, parse_spacing


# NAdam (Adam with Nesterov momentum), learning rate 1e-4 reduced on plateau, batch 50, 50
# epochs per cycle (paper 2.3). The paper names no early stopping: patience 50 never stops a
# 50-epoch cycle early (the weights kept are the best validation epoch's; the paper is silent).
@dataclass(frozen=True)
class OarCtConfig(with_defaults(EpochTraining, learning_rate=1e-4, batch_size=50, max_epochs=50,
                                patience=50, min_delta=1e-4)):
    TASK: ClassVar[str] = "oar-ct"
    # pre-processing: HU clipped to [-800, 800] and divided by 800 (paper 2.2)
    hu_low: float = -800.0
    hu_high: float = 800.0
    # the grid the network reads: 'native' = the CT's own voxels (the paper: 0.977 mm pixels,
    # 2.5-3 mm slices, no resampling stated); three spacings (x, y, z mm) = a working grid, an
    # OncoSeg option (the demo model's 3 mm grid). A model file fixes it.
    spacing_mm: tuple[float, float, float] | str = NATIVE
    # network: OncoSeg's memory-lean U-Net (paper: "a fully-convolutional 3D segmentation network
    # described in [18]", whose filters are not given in paper 003)
    filters: tuple[int, ...] = training_only((16, 32, 64, 128))
    # training patches (z, y, x); the paper's 136 x 136 x 72
    patch_size: tuple[int, int, int] = (72, 136, 136)
    # patches centred on an annotated organ voxel (OncoSeg's: the paper gives no share)
    foreground_fraction: float = training_only(0.33)
    rotation_rad: float = training_only(0.15)
    scale: float = training_only(0.10)
    shift_hu: float = training_only(100.0)
    # the learning rate's reduction on plateau (the paper gives neither factor nor patience)
    plateau_patience: int = training_only(5)
    plateau_factor: float = training_only(0.5)
    steps_per_epoch: int = training_only(500)
    # patches drawn per batch at once; the gradients of a batch's micro-batches are summed
    # before the step, so the effective batch stays batch_size. 0 = automatic (on a GPU, what
    # fits in its free memory; on a CPU, 1)
    micro_batch: int = training_only(0)
    validation_patches_per_case: int = training_only(4)
    # processes drawing patches beside the training process (0: none). Drawing one augmented
    # 136 x 136 x 72 patch takes about a second of one CPU core, so at the paper's batch of 50 a
    # GPU waits for the patches unless several processes draw them
    data_workers: int = training_only(0)
    # restart cycles (paper: 50 cycles; each after the first restarts from the previous model
    # with 10 % of the patches centred on its false positives over the training group)
    hard_negative_rounds: int = training_only(49)
    hard_negative_fraction: float = training_only(0.10)
    # each cycle holds out another fifth of the patients, so that every scan trains (paper)
    rotate_validation: bool = training_only(True)
    # inference and post-processing
    overlap: float = prediction_only(0.5)
    inference_batch: int = prediction_only(2)
    # clean-up (paper 2.2): the largest 26-connected component of each organ, then holes filled
    keep_largest: bool = prediction_only(True)
    # the organs kept as their largest piece: the paper applies it to every label; OncoSeg's
    # default spares the nodal CTV, whose left and right sides need not meet inside a scan
    # (the step then drops a whole side), and removes only its pieces under smallest_piece_ml
    largest_component_organs: tuple[str, ...] = prediction_only((
        "Femoral head L", "Femoral head R", "Bladder", "Bowel bag"))
    # noise, for the organs above spared: TotalSegmentator's small-blob threshold (200 mm^3)
    smallest_piece_ml: float = prediction_only(0.2)
    probabilities: bool = prediction_only(True)  # write one probability map per organ

    def __post_init__(self) -> None:
        """Normalise ``spacing_mm`` (a string when it came through ``--set`` or a model file)
        to :data:`NATIVE` or a tuple, which the shared value checks then see."""
        object.__setattr__(self, "spacing_mm", parse_spacing(self.spacing_mm))
        for name in ("micro_batch", "hard_negative_rounds", "data_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"--set {name}", f"is {value!r}: it must be a whole number, "
                                 "0 or more")
        if self.micro_batch > self.batch_size:
            raise InputError("--set micro_batch", f"is {self.micro_batch}: it must not exceed "
                             f"batch_size ({self.batch_size})")

    @property
    def grid_spacing(self) -> tuple[float, float, float] | None:
        """The working grid's spacing (x, y, z mm), or None: the CT's own resolution."""
        return None if isinstance(self.spacing_mm, str) else self.spacing_mm

    @property
    def cycles(self) -> int:
        """Training cycles in all: the first, then one per hard-negative restart."""
        return self.hard_negative_rounds + 1
