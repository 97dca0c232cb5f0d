"""The ``staging`` task's declaration."""

from oncoseg.staging.config import StagingConfig
from oncoseg.tasks import InputRole, Task, register_task

TASK = register_task(Task(
    name="staging",
    title="T2 vs T3 staging of rectal cancer on T2w MR",
    paper="StagingCNN (paper 002): mixtures of 2D and 3D convolutions, AUC 0.831",
    description=("N4 bias correction, crop around rectum and tumour, resize to 256 x 256 x N; "
                 "a ResNet-18 style network with late 3D fusion (f-rMC5) and bilinear depth "
                 "pooling gives P(T3) and slice-wise scores."),
    inputs=(InputRole("t2w", "T2-weighted MR of the rectum", name_hints=("t2",), modality="MR"),
            InputRole("roi", "mask around rectum and tumour (or a box: --roi)",
                      optional=True, name_hints=("roi",))),
    reference_role="t2w",
    method_module="oncoseg.staging.method",
    hints=("roi_lps_mm",),
    network_modules=("oncoseg.staging.network",),
    classes=("T2", "T3"),
    uncertain_margin=0.1,  # P(T3) within 0.1 of the threshold is flagged for a reader
    settings=StagingConfig,
    fixed_settings=("size", "n4", "roi_margin_mm", "auto_roi_mm", "crop_mm"),
    proposed_settings=("threshold", "tta"),
))
