"""The ``oar-mr`` task's declaration."""

from oncoseg.oar.mr.config import OarMrConfig
from oncoseg.oar.organs import organ
from oncoseg.tasks import InputRole, Task, register_task

GI_SEGMENTS = (
    organ(1, "Stomach", (0.85, 0.55, 0.45), "69695003", "Stomach"),
    organ(2, "Small bowel", (0.95, 0.75, 0.35), "30315005", "Small intestine"),
    organ(3, "Large bowel", (0.6, 0.45, 0.25), "14742008", "Large intestine"),
)

OAR_MR = register_task(Task(
    name="oar-mr",
    title="GI tract organs on abdominal MR",
    paper="UW-Madison GI tract segmentation (paper 001)",
    description=("Axial slices resized to 266 x 266, each slice on its own (adjacent slices "
                 "as channels with context > 0); an FCN-ResNet50 gives sigmoid maps for "
                 "stomach, small and large bowel; the threshold is tuned on validation "
                 "(paper 0.4)."),
    inputs=(InputRole("mr", "abdominal MR volume or a Kaggle scans folder",
                      name_hints=("mr", "abdomen", "t1", "t2")),),
    reference_role="mr",
    method_module="oncoseg.oar.mr.method",
    network_modules=("oncoseg.oar.mr.network",),
    segments=GI_SEGMENTS,
    settings=OarMrConfig,
    fixed_settings=("size", "context", "context_stride", "mean", "std"),
    proposed_settings=("threshold",),
))
