"""The ``brain`` task's declaration."""

from oncoseg.brain.config import BrainConfig
from oncoseg.tasks import InputRole, SegmentSpec, Task, register_task
from oncoseg.terminology import ABNORMAL_STRUCTURE, BRAIN, NEOPLASM, Code, Terminology


def _in_brain(type_: Code) -> Terminology:
    return Terminology(ABNORMAL_STRUCTURE, type_, region=BRAIN)


# OncoSeg's brain labels; BraTS writes enhancing tumour as 4 (2017-2021) or 3 (2023+).
SEGMENTS = (
    SegmentSpec(1, "Necrotic and non-enhancing tumour core", (0.85, 0.2, 0.2),
                _in_brain(Code("SCT", "6574001", "Necrosis"))),
    SegmentSpec(2, "Peritumoral oedema", (0.3, 0.75, 0.3),
                _in_brain(Code("SCT", "79654002", "Edema"))),
    SegmentSpec(3, "Enhancing tumour", (0.95, 0.85, 0.2), _in_brain(NEOPLASM)),
)

TASK = register_task(Task(
    name="brain",
    title="Brain tumour segmentation with 2D-3D networks",
    paper="Mlynarski et al. 2018 (BRATS 2017)",
    description=("Modality-specific 2D networks in three orientations feed a 3D network; "
                 "an ensemble votes hierarchically (whole tumour, core, enhancing). Any "
                 "sequence may be missing."),
    inputs=(
        InputRole("t1", "T1-weighted MR", optional=True, name_hints=("t1n", "t1w", "t1")),
        InputRole("t1c", "contrast-enhanced T1-weighted MR", optional=True,
                  name_hints=("t1c", "t1ce", "t1gd", "gad")),
        InputRole("t2", "T2-weighted MR", optional=True, name_hints=("t2w", "t2")),
        InputRole("flair", "FLAIR MR", optional=True, name_hints=("flair", "t2f")),
    ),
    reference_role="t1c",
    method_module="oncoseg.brain.method",
    network_modules=("oncoseg.brain.network",),
    segments=SEGMENTS,
    settings=BrainConfig,
    fixed_settings=("intensity_constant",),
    proposed_settings=("vote_thresholds",),
))
