"""The ``oar-mr`` task's settings; defaults are paper 001's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import EpochTraining, prediction_only, training_only, with_defaults


# Adam; early stopping on the validation loss; validation by patient (paper: 29 / 5 / 5)
@dataclass(frozen=True)
class OarMrConfig(with_defaults(EpochTraining, learning_rate=1e-4, batch_size=32, max_epochs=50,
                                patience=5, min_delta=1e-4, validation_fraction=0.15)):
    TASK: ClassVar[str] = "oar-mr"
    # every slice resized to size x size. The blog feeds one slice at a time ("using 3D
    # convolutions on multiple slices rather than a single slice at a time" is its future
    # work), hence context=0; context=k adds k neighbours on each side (`context_stride`
    # slices apart) as extra channels: the 2.5D stack (the demo model was trained with k=1,
    # which its model file fixes)
    size: int = 266
    context: int = 0
    context_stride: int = 1
    # intensities: each scan scaled to [0, 1] by its 99.5th percentile, then the mean and
    # standard deviation the paper normalises to
    mean: float = 0.458
    std: float = 0.229
    # network: ResNet-50 topology; width 64 is the standard ResNet-50 (a demo may be narrower)
    width: int = training_only(64)
    # training
    crop_max_px: int = training_only(10)  # random crop of 0-10 px from each border, resized back
    # each 3 x 3 neighbour of an organ pixel joins it
    smoothing_probability: float = training_only(0.4)
    # comma-separated patients or scans flagged bad: the whole patient goes
    exclude: str = training_only("")
    # train on all slices (the paper's best) or only non-empty ones
    empty_slices: bool = training_only(True)
    # a slice classifier decides, per organ, whether to segment
    two_stage: bool = training_only(False)
    # inference
    threshold: float = 0.4  # used only when the model file stores none
    gate_threshold: float = 0.5
    inference_batch: int = prediction_only(8)
    probabilities: bool = prediction_only(True)  # write one probability map per organ


    @property
    def channels(self) -> int:
        return 2 * self.context + 1

    def excluded(self) -> set[str]:
        return {name.strip() for name in self.exclude.split(",") if name.strip()}
