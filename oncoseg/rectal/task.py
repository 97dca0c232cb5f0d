"""The ``rectal`` task's declaration: inputs, output segment, the paper's configuration."""

from oncoseg.rectal.config import RectalConfig
from oncoseg.tasks import InputRole, SegmentSpec, Task, register_task
from oncoseg.terminology import ABNORMAL_STRUCTURE, NEOPLASM, RECTUM, Terminology

TUMOUR = SegmentSpec(
    label=1, name="Rectal tumour", color=(0.85, 0.25, 0.2),
    terminology=Terminology(ABNORMAL_STRUCTURE, NEOPLASM, region=RECTUM),
)

TASK = register_task(Task(
    name="rectal",
    title="Rectal tumour segmentation on multiparametric MR",
    paper="Trebeschi et al., Sci Rep 2017",
    description=("T2w and diffusion-weighted MR (b0, high b) registered onto the b0 grid; a "
                 "patch CNN gives each voxel's tumour probability; the largest component of "
                 "p >= 0.5 is the tumour, every candidate component is listed."),
    inputs=(
        InputRole("t2w", "T2-weighted MR", name_hints=("t2",)),
        InputRole("dwi_b0", "diffusion-weighted MR, b = 0", name_hints=("b0", "b50", "dwi")),
        InputRole("dwi_b1000", "diffusion-weighted MR, high b (1000-1100)",
                  name_hints=("b1000", "b1100", "b800", "high")),
    ),
    reference_role="dwi_b0",
    pipeline_module="oncoseg.rectal.pipeline",
    network_modules=("oncoseg.rectal.network",),
    segments=(TUMOUR,),
    default_config=RectalConfig().as_dict(),
))
