"""The ``rectal`` task's declaration: inputs, output segment, the paper's configuration.

Besides its three images the task takes ``dwi``: one diffusion series (a DICOM series, a 4D
NIfTI with its .bval, a DWMRI NRRD) holding every b-value, from which the b0 and the high-b
images are picked (:mod:`oncoseg.io.diffusion`). It stands in for ``dwi_b0`` + ``dwi_b1000`` and
is declared apart from ``TASK.inputs``, which are the images a case folder holds and the network
reads, channel by channel (data sets, training, the nnU-Net export read them role by role).
"""

from __future__ import annotations

from oncoseg.rectal.config import RectalConfig
from oncoseg.tasks import InputRole, Plausible, SegmentSpec, Task, register_task
from oncoseg.terminology import ABNORMAL_STRUCTURE, NEOPLASM, RECTUM, Terminology

TUMOUR = SegmentSpec(
    label=1, name="Rectal tumour", color=(0.85, 0.25, 0.2),
    terminology=Terminology(ABNORMAL_STRUCTURE, NEOPLASM, region=RECTUM),
    # one tumour (the method keeps one component); T1-T4 tumours on MR span about 1-200 mL
    plausible=Plausible((0.5, 300.0), max_components=1),
    tg263="GTVp",  # TG-263 target naming: the gross tumour volume of the primary
    synonyms=("tumour", "tumor", "rectal tumor", "rectal cancer", "GTV", "primary tumour",
              "primary tumor"),
)

TASK = register_task(Task(
    name="rectal",
    title="Rectal tumour segmentation on multiparametric MR",
    paper="Trebeschi et al., Sci Rep 2017",
    description=("T2w and diffusion-weighted MR (b0, high b) registered onto the b0 grid; a "
                 "patch CNN gives each voxel's tumour probability; the largest component of "
                 "p >= 0.5 is the tumour, every candidate component is listed."),
    inputs=(
        InputRole("t2w", "T2-weighted MR", name_hints=("t2",), modality="MR"),
        InputRole("dwi_b0", "diffusion-weighted MR, b = 0 (or give dwi)",
                  name_hints=("b0", "b50", "dwi"), modality="MR"),
        InputRole("dwi_b1000", "diffusion-weighted MR, high b (1000-1100) (or give dwi)",
                  name_hints=("b1000", "b1100", "b800", "high"), modality="MR"),
    ),
    reference_role="dwi_b0",
    method_module="oncoseg.rectal.method",
    hints=("seed_lps_mm",),
    alternatives={"dwi": ("dwi_b0", "dwi_b1000")},
    registered_roles=("t2w", "dwi_b1000"),
    network_modules=("oncoseg.rectal.network",),
    segments=(TUMOUR,),
    settings=RectalConfig,
    fixed_settings=("in_plane_mm",),
    proposed_settings=("registration",),
    # refine's defaults: the demo trained on 2026-12-08 has no one-voxel rim for a right click
    # to reach past (the earlier one did, and this task set recalibration_margin_negative=3,
    # recalibration_mm=25 for it; with the new demo those lost 0.03-0.05 Dice over 10 clicks:
    # docs/RESULTS.md, "Click refinement")
))

# The alternative to dwi_b0 + dwi_b1000: every b-value in one input (oncoseg.io.diffusion).
DWI_SERIES = InputRole(
    "dwi", "diffusion-weighted MR with every b-value (one DICOM series, a 4D NIfTI with its "
    ".bval, a DWMRI NRRD): b0 and the high b are picked from it; instead of dwi_b0 + dwi_b1000",
    optional=True, name_hints=("dwi", "diff", "ep2d", "trace"))

# Model metadata may name the high b-value the model was trained with (s/mm^2) under this
# preprocessing key. The phantoms' 'dwi_b1000' is b = 1000, so a demo model (trained on
# phantoms) without the key was trained at b = 1000.
HIGH_B_KEY = "high_b_value"
PHANTOM_HIGH_B = 1000.0


def model_high_b(metadata) -> float | None:
    """The b-value a model's 'dwi_b1000' channel was trained with, where it is known."""
    value = metadata.preprocessing.get(HIGH_B_KEY)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return PHANTOM_HIGH_B if metadata.demo else None
