"""The ``brain`` task's declaration."""

from oncoseg.brain.config import BrainConfig
from oncoseg.tasks import InputRole, Plausible, SegmentSpec, Task, register_task
from oncoseg.terminology import ABNORMAL_STRUCTURE, BRAIN, NEOPLASM, Code, Terminology


def _in_brain(type_: Code) -> Terminology:
    return Terminology(ABNORMAL_STRUCTURE, type_, region=BRAIN)


def _names(*names: str) -> tuple[str, ...]:
    """What BraTS (2017-2024), the Medical Segmentation Decathlon's brain tumours and nnU-Net's
    conversions of them call a region in their label descriptions. Not 'tumor core' or 'whole
    tumor': those are unions of these regions."""
    return names


# OncoSeg's brain labels; BraTS writes enhancing tumour as 4 (2017-2021) or 3 (2023+).
# Quality-control bounds (mL): a glioma study without oedema is rare (BraTS whole tumours span
# about 5-500 mL); core and enhancing parts may be absent (low-grade tumours).
SEGMENTS = (
    SegmentSpec(1, "Necrotic and non-enhancing tumour core", (0.85, 0.2, 0.2),
                _in_brain(Code("SCT", "6574001", "Necrosis")),
                Plausible((0.0, 250.0), max_components=5),
                synonyms=_names("NCR", "NET", "NCR/NET", "NETC", "necrosis", "necrotic core",
                                "non-enhancing tumor", "non-enhancing tumour",
                                "non_enhancing_and_necrosis", "necrotic tumor core")),
    SegmentSpec(2, "Peritumoral oedema", (0.3, 0.75, 0.3),
                _in_brain(Code("SCT", "79654002", "Edema")),
                Plausible((1.0, 500.0), max_components=5),
                synonyms=_names("ED", "edema", "oedema", "peritumoral edema", "SNFH",
                                "surrounding non-enhancing FLAIR hyperintensity")),
    SegmentSpec(3, "Enhancing tumour", (0.95, 0.85, 0.2), _in_brain(NEOPLASM),
                Plausible((0.0, 200.0), max_components=5),
                synonyms=_names("ET", "enhancing tumor", "enhancing"),
                stored_as=(4,)),  # BraTS 2017-2021; 4 is another structure from 2024 on
)

TASK = register_task(Task(
    name="brain",
    title="Brain tumour segmentation with 2D-3D networks",
    paper="Mlynarski et al. 2018 (BRATS 2017)",
    description=("Modality-specific 2D networks in three orientations feed a 3D network; "
                 "an ensemble votes hierarchically (whole tumour, core, enhancing). Any "
                 "sequence may be missing."),
    inputs=(
        InputRole("t1", "T1-weighted MR", optional=True, name_hints=("t1n", "t1w", "t1"),
                  modality="MR"),
        InputRole("t1c", "contrast-enhanced T1-weighted MR", optional=True,
                  name_hints=("t1c", "t1ce", "t1gd", "gad"), modality="MR"),
        InputRole("t2", "T2-weighted MR", optional=True, name_hints=("t2w", "t2"),
                  modality="MR"),
        InputRole("flair", "FLAIR MR", optional=True, name_hints=("flair", "t2f"),
                  modality="MR"),
    ),
    reference_role="t1c",
    method_module="oncoseg.brain.method",
    network_modules=("oncoseg.brain.network",),
    segments=SEGMENTS,
    settings=BrainConfig,
    fixed_settings=("intensity_constant", "spacing_mm"),
    proposed_settings=("vote_thresholds",),
))
