"""The ``staging`` task's settings; defaults are paper 002's where it states them (section 2.5:
SGD, initial learning rate 0.01, weight decay 0.01, oversampling, test-time augmentation;
Tables 2-4: f-rMC5, focal + triplet loss, bilinear pooling). Where it states nothing (batch,
epochs, momentum, how the weights were chosen, the threshold) the comment says the value is
OncoSeg's.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.errors import InputError
from oncoseg.settings import EpochTraining, prediction_only, training_only, with_defaults
from oncoseg.spacing import MEDIAN, parse_length

# crop_mm's word for the paper's reading: the ROI as drawn, whatever its size
BOX = "box"
# without_roi: a run given no ROI is refused, or reads a square at the T2w's centre
WITHOUT_ROI = ("refuse", "centre")

VARIANTS = ("f-R2D", "f-R3D", "f-R(2+1)D", "f-MC2", "f-MC3", "f-MC4", "f-MC5", "f-rMC2",
            "f-rMC3", "f-rMC4", "f-rMC5")
AGGREGATIONS = ("average", "max", "attention", "bilinear")
LOSSES = ("focal", "focal+triplet", "focal+center")


def parse_crop(value: object) -> float | str:
    """``crop_mm`` as given: :data:`BOX`, ``median`` or a side in mm."""
    return parse_length(value, "crop_mm", {BOX: "the ROI as drawn",
                                           MEDIAN: "the training ROIs' median side"})


# SGD (momentum and weight decay below); early stopping by validation AUC or loss (select_by).
# batch 8, 60 epochs, patience 10: OncoSeg's (the paper gives no batch size or schedule)
@dataclass(frozen=True)
class StagingConfig(with_defaults(EpochTraining, learning_rate=0.01, batch_size=8,
                                  max_epochs=60, patience=10, min_delta=1e-3)):
    TASK: ClassVar[str] = "staging"
    # pre-processing: N4, x-y crop around rectum and tumour, resize to size x size x N
    n4: bool = True
    size: int = 256
    roi_margin_mm: float = 0.0  # added around a given ROI box or mask
    auto_roi_mm: float = 80.0  # no ROI given: a centred square of this side (the result says so)
    # a run given no ROI (box or mask): 'refuse' (exit 2, saying how to give one), or 'centre':
    # a square at the T2w's centre, for a small field of view centred on the tumour. A square
    # at a pelvic scan's centre misses rectum and tumour: the demo called every T2 phantom T3
    # so (docs/RESULTS.md). Data sets (training, evaluation) crop a case without one so.
    without_roi: str = prediction_only("refuse")
    # the crop the network reads around a given ROI (box or mask): 'box' = the ROI as drawn,
    # resized to size x size whatever its size (the paper); a number = a square of that side
    # (mm) centred on the ROI, so the network reads every case at one scale; 'median' =
    # training's: the median side of its training cases' ROI boxes, recorded in the model
    # file as a number. A model file fixes it; one written before it reads the ROI as drawn.
    crop_mm: float | str = MEDIAN
    # network (Table 2: variants; Table 4: aggregation)
    variant: str = training_only("f-rMC5")
    aggregation: str = training_only("bilinear")
    filters: int = training_only(32)
    # training
    loss: str = training_only("focal+triplet")
    focal_gamma: float = training_only(2.0)  # Lin et al.
    # Schroff et al.'s margin, on l2-normalised volume features. The mining is batch-hard
    # (each anchor's farthest positive and nearest negative, Hermans et al. 2017), not
    # Schroff's (every anchor-positive pair with a semi-hard negative): the paper only says
    # "online-hard mining from Schroff et al."
    triplet_margin: float = training_only(0.2)
    center_weight: float = training_only(0.003)  # Wen et al.
    # focal loss of the slice-wise scores on representative slices
    slice_weight: float = training_only(1.0)
    # SGD's momentum: the paper states none (plain SGD may be meant); 0.9 is OncoSeg's, the
    # usual ResNet setting
    momentum: float = training_only(0.9)
    weight_decay: float = training_only(0.01)
    # early stopping and the kept weights: validation AUC or loss. OncoSeg's: the paper chose
    # its architecture, loss and aggregation by mean cross-validated AUC (section 2.5) and does
    # not say how it chose the epoch
    select_by: str = training_only("auc")
    # the minority stage is repeated until the classes balance
    oversample: bool = training_only(True)
    # 0 = every case once (after oversampling); more repeats them
    samples_per_epoch: int = training_only(0)
    augment: bool = training_only(True)
    # training augmentation includes the smooth elastic displacement
    elastic: bool = training_only(True)
    # (the paper's elastic, grid and optical distortions)
    folds: int = training_only(0)  # k-fold cross-validation by patient (paper: 10); 0 = one model
    # no training: the model file named (or 'demo') gets Platt scaling of its P(T3) fitted on
    # the data set's cases, written to --output (calibration.py; training always calibrates on
    # its validation fold). The paper does not calibrate.
    calibrate_only: str = training_only("")
    # inference
    tta: int = 8  # test-time augmentation passes (1 = none)
    threshold: float = 0.5  # P(T3) (calibrated when the model is) at or above it reads T3

    def __post_init__(self) -> None:
        from oncoseg.errors import InputError

        object.__setattr__(self, "crop_mm", parse_crop(self.crop_mm))

        for key, allowed in (("variant", VARIANTS), ("aggregation", AGGREGATIONS),
                             ("loss", LOSSES), ("select_by", ("auc", "loss")),
                             ("without_roi", WITHOUT_ROI)):
            if getattr(self, key) not in allowed:
                raise InputError(f"--set {key}", f"'{getattr(self, key)}' is not one of "
                                 f"{', '.join(allowed)}")

    @property
    def square_mm(self) -> float | None:
        """The side of the square the network reads round an ROI; None: the ROI as drawn
        (the paper's reading, and a model file's written before ``crop_mm`` existed)."""
        return None if isinstance(self.crop_mm, str) else float(self.crop_mm)

    @property
    def automatic_side_mm(self) -> float:
        """The side of the centred square read without an ROI (and given to an ROI placed
        without a size): the model's crop scale where it has one, else ``auto_roi_mm``."""
        return self.square_mm or float(self.auto_roi_mm)


def no_roi_refusal(config: StagingConfig) -> InputError:
    """Why a run without an ROI is refused, and the ways to give one."""
    return InputError("roi", "none was given: the network stages a crop around rectum and "
                      "tumour (paper 002), and a square at a pelvic scan's centre misses them "
                      "(the demo called every T2 phantom T3 so). Give a box round them "
                      "(--roi=X0,Y0,Z0,X1,Y1,Z1 in LPS mm; in 3D Slicer a markups ROI) or a "
                      "mask (--input roi=MASK); for a small field of view centred on the "
                      f"tumour, --set without_roi=centre reads a centred "
                      f"{config.automatic_side_mm:g} mm square")
