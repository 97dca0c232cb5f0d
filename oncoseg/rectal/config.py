"""The rectal task's settings; the defaults are the paper's (Trebeschi et al. 2017).

One dataclass for both phases, each field's phase declared (``training_only``,
``prediction_only``, unmarked: both): ``--set KEY=VALUE`` on the command line and the Slicer
panel's fields change these. The training settings every epoch-trained method shares come from
:class:`oncoseg.settings.EpochTraining`, at this task's values. Light on purpose (no torch): task
declarations read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from oncoseg.errors import InputError
from oncoseg.settings import EpochTraining, prediction_only, training_only, with_defaults
from oncoseg.spacing import MEDIAN, NATIVE, parse_length

EDGE_WEIGHTINGS = ("paper", "voxel-share")


def parse_in_plane(value: Any) -> float | str:
    """:data:`NATIVE`, :data:`MEDIAN` or a spacing in mm (from ``--set``, a model file or
    code); anything else refused by name."""
    return parse_length(value, "in_plane_mm", {NATIVE: "the b0 grid as stored",
                                               MEDIAN: "the training cases' median"})


# Adadelta, cross-entropy with a small L2 penalty (below), early stopping
@dataclass(frozen=True)
class RectalConfig(with_defaults(EpochTraining, learning_rate=0.001, batch_size=128,
                                 max_epochs=200, patience=5, min_delta=1e-3)):
    TASK: ClassVar[str] = "rectal"
    # pre-processing
    registration: str = "rectal"  # elastix preset for T2w (and a high-b on its own grid); none
    # the in-plane spacing the network reads at (oncoseg/rectal/spacing.py): 'median' of the
    # training cases (recorded in the model file as a number), a number, or 'native' (the
    # paper: the b0 grid as stored). A model file fixes it.
    in_plane_mm: float | str = MEDIAN
    # inference and post-processing
    threshold: float = prediction_only(0.5)
    keep: str = prediction_only("largest")  # largest | all (a seed point overrides both)
    connectivity: int = prediction_only(26)
    # sampling (per case: N tumour and N background voxels, background RB1/RB2/RB3 = 1/4, 1/2,
    # 1/4; RB1 a ring of ring_mm, RB2 standardised high b above bright_threshold)
    samples_per_class: int = training_only(5000)
    ring_mm: float = training_only(10.0)
    bright_threshold: float = training_only(2.0)
    # how much each tumour and RB1 sample counts in the loss: 'paper', every sample alike (N
    # tumour against N/4 ring samples puts 13-18 times as many on the tumour's outer voxel
    # layer as just outside it, and the 0.5 edge moves a voxel outward); 'voxel-share', the
    # two regions' samples weighted to the share of voxels each holds, their total unchanged
    # (oncoseg/rectal/sampling.py; docs/FIDELITY.md)
    edge_weighting: str = training_only("paper")
    patch_size: int = training_only(21)
    # paper: the paper's 9-layer network ('full' padding, 5x5/3x3 filters, three poolings),
    # each voxel classified from its own patch; dense: OncoSeg's 8-layer valid-padding variant
    # with an exact whole-slice form (oncoseg/rectal/network.py). The model file names it.
    # Default dense, by measurement (2026-12-05, 40 phantoms, 3 epochs each, 3 unseen ones):
    # the paper's network scored DSC 0.70 against 0.82 (AUC 0.9993 / 0.9996) and took 70-140x
    # longer: 93 s per phantom case (128 000 voxels) on two quiet CPU cores against 0.67 s.
    network: str = training_only("dense")
    # optimisation: Adadelta's rho, the L2 penalty
    rho: float = training_only(0.9)
    l2: float = training_only(1e-4)
    # > 1: the paper's stability analysis (ICC of per-case DSC over repeats)
    repeats: int = training_only(1)
    label: str = training_only("label")  # which reader's label file trains the model

    def __post_init__(self) -> None:
        """Normalise ``in_plane_mm`` (a string through ``--set``, a number from a model file)."""
        object.__setattr__(self, "in_plane_mm", parse_in_plane(self.in_plane_mm))
        if self.edge_weighting not in EDGE_WEIGHTINGS:
            raise InputError("edge_weighting", f"'{self.edge_weighting}' is not one of "
                             f"{', '.join(EDGE_WEIGHTINGS)}")
