"""The ``brain`` task's settings; defaults are paper 004's where it states them.

Light on purpose (no torch): the task declaration reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from oncoseg.settings import CommonTraining, prediction_only, training_only, with_defaults
from oncoseg.spacing import MEDIAN, parse_spacing

SEQUENCES = ("t1", "t1c", "t2", "flair")
ORIENTATIONS = ("axial", "coronal", "sagittal")
SUBNETWORKS = ("unet", "shallow")  # 2D model 1 (reduced U-Nets), 2D model 2 (three layers)
# 2D-3D model A (features at the first layer), B (before the final convolutions), C (two
# streams: the image alone, the image with the features), and the plain 3D model
IMPORTS = ("first", "final", "streams", "none")
MODEL_LETTERS = {"first": "A", "final": "B", "streams": "C", "none": "3D"}
NORMS = ("none", "instance", "batch")  # the 3D networks' normalisation layers
PRETRAINING = ("auto", "on", "off")
STAGES = ("2d-axial", "2d-coronal", "2d-sagittal", "2d3d", "all")


def member_specs(members: tuple[str, ...], subnetworks: tuple[str, ...]
                 ) -> list[tuple[str, str]]:
    """(import_at, 2D model kind) of each 2D-3D member: an entry 'first' is trained once with
    the features of every 2D model in ``subnetworks`` (the paper trains each of A, B, C with
    2D model 1 and with 2D model 2: six members); 'first:shallow' names one combination.
    Ordered by 2D model, then as listed (the paper's Table 3: A1, B1, C1, A2, B2, C2)."""
    specs: list[tuple[str, str]] = []
    for member in members:
        import_at, _, kind = member.partition(":")
        for k in ([kind] if kind else subnetworks):
            if (import_at, k) not in specs:
                specs.append((import_at, k))
    order = {kind: index for index, kind in enumerate(subnetworks)}
    return sorted(specs, key=lambda spec: order.get(spec[1], len(order)))


# normalised SGD (section 2.4) from learning_rate, halved down to learning_rate_min (below)
@dataclass(frozen=True)
class BrainConfig(with_defaults(CommonTraining, learning_rate=0.25)):
    TASK: ClassVar[str] = "brain"
    # pre-processing: each sequence / median of its non-zero voxels x a constant
    intensity_constant: float = 1.0
    # the grid the networks read (oncoseg/spacing.py): 'median' of the training cases' spacings
    # (x, y, z in LPS axis order; recorded in the model file as numbers), three spacings, or
    # 'native' (each reference grid as stored: the paper's cases were all BraTS's 1 mm). A
    # model file fixes it.
    spacing_mm: tuple[float, float, float] | str = MEDIAN
    # 2D models (one per orientation and kind): 2D model 1 ('unet', reduced U-Net
    # subnetworks) and 2D model 2 ('shallow', three-layer subnetworks), as the paper's ensemble
    subnetworks: tuple[str, ...] = training_only(SUBNETWORKS)
    width_2d: int = training_only(16)  # feature maps of a subnetwork's first layer
    levels_2d: int = training_only(3)  # poolings in the main U-Net
    main_weight: float = training_only(0.75)  # c_main; every subnetwork gets (1 - c_main) / (K + 1)
    class_targets_2d: tuple[float, ...] = training_only((0.7, 0.1, 0.1, 0.1))
    # N: gradients of N batches summed, then normalised
    batches_per_iteration_2d: int = training_only(10)
    batch_size_2d: int = training_only(8)  # slices per batch
    # 2D-3D models: the ensemble's members, by where the 2D features enter, each trained with
    # the features of every 2D model in `subnetworks` (paper: A, B, C x 2D model 1, 2 = six);
    # 'first:unet' names one combination
    members: tuple[str, ...] = training_only(("first", "final", "streams"))
    width_3d: int = training_only(16)
    levels_3d: int = training_only(2)
    # the paper's 3D networks have no normalisation layer ("We didn't observe the need of using
    # batch normalization", section 2.1); 'instance' is what the demo model was trained with
    norm_3d: str = training_only("none")
    patch: int = 70
    class_targets_3d: tuple[float, ...] = training_only((0.4, 0.2, 0.2, 0.2))
    batches_per_iteration_3d: int = training_only(5)
    batch_size_3d: int = training_only(1)
    # optimiser (section 2.4)
    learning_rate_min: float = training_only(0.001)
    momentum: float = training_only(0.9)
    halving_period: int = training_only(200)  # F iterations (doubles after two halvings in a row)
    d_loss: float = training_only(0.98)
    # robustness to missing sequences at inference: during training a sequence is left out of
    # a sample (its subnetwork's features zeroed) with this probability
    sequence_dropout: float = training_only(0.25)
    # cases with a sequence missing (section 3.2, Table 2): each modality-specific subnetwork
    # (with its auxiliary classification layer) is pretrained on the training cases that have
    # its sequence, then the whole 2D model trains on the cases that have all four. 'auto':
    # when a training case misses a sequence; 'on': always; 'off': never (incomplete cases
    # are then not used)
    pretrain_subnetworks: str = training_only("auto")
    iterations_pretrain: int = training_only(5000)  # per subnetwork; not stated by the paper
    # training
    # 2d-axial, 2d-coronal, 2d-sagittal, 2d3d (needs the three 2D), all
    stage: str = training_only("all")
    # "Training of CNNs requires typically dozens of thousands of iterations" (section 2.1);
    # the paper states no exact count: 20,000 (2D, N = 10) and 10,000 (3D, N = 5) iterations
    # let the halving rule (F = 200, doubling) act some eight to ten times. Paper scale: GPU.
    iterations_2d: int = training_only(20000)
    iterations_3d: int = training_only(10000)
    # an epoch: a checkpoint, a validation loss, a curve point (every F iterations)
    iterations_per_epoch: int = training_only(200)
    # inference: sequences to leave out even when given ("flair", "t1,t2"), to measure how
    # the ensemble does without them
    drop_sequences: str = prediction_only("")
    # ensemble vote (section 2.3): P_tumour, P_core, P_enhancing
    vote_thresholds: tuple[float, float, float] = (0.4, 0.3, 0.4)
    overlap: float = prediction_only(0.5)  # sliding-window overlap of the 3D networks

    def __post_init__(self) -> None:
        from oncoseg.errors import InputError

        object.__setattr__(self, "spacing_mm", parse_spacing(self.spacing_mm, median=True))

        def member_ok(member: str) -> bool:
            import_at, colon, kind = member.partition(":")
            return import_at in IMPORTS and (not colon or kind in SUBNETWORKS)

        checks = (("subnetworks", all(k in SUBNETWORKS for k in self.subnetworks), SUBNETWORKS),
                  ("stage", self.stage in STAGES, STAGES),
                  ("members", bool(self.members) and all(map(member_ok, self.members)),
                   [*IMPORTS, *(f"{i}:{k}" for i in IMPORTS[:3] for k in SUBNETWORKS)]),
                  ("norm_3d", self.norm_3d in NORMS, NORMS),
                  ("pretrain_subnetworks", self.pretrain_subnetworks in PRETRAINING,
                   PRETRAINING))
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
    def member_specs(self) -> list[tuple[str, str]]:
        """(import_at, 2D model kind) of every 2D-3D member, in training order."""
        return member_specs(self.members, self.subnetworks)

    @property
    def kinds_2d(self) -> list[str]:
        """The 2D models (by subnetwork kind) whose features some member reads."""
        return list(dict.fromkeys(kind for _, kind in self.member_specs))

    @property
    def dropped(self) -> list[str]:
        return [s.strip() for s in self.drop_sequences.split(",") if s.strip()]

