"""The ``oar-mr`` task's declaration."""

from oncoseg.oar.mr.config import OarMrConfig
from oncoseg.oar.organs import organ
from oncoseg.tasks import InputRole, Plausible, Task, register_task

# Quality-control bounds (mL): an abdominal MR may miss any of the three organs (its field of
# view, a resected stomach), so none must be present; bowel loops cut by the slices come apart.
GI_SEGMENTS = (
    organ(1, "Stomach", (0.85, 0.55, 0.45), "69695003", "Stomach",
          Plausible((0.0, 2500.0), max_components=3, may_touch_border=True),
          tg263="Stomach"),
    organ(2, "Small bowel", (0.95, 0.75, 0.35), "30315005", "Small intestine",
          Plausible((0.0, 4000.0), max_components=20, may_touch_border=True),
          tg263="Bowel_Small", synonyms=("small intestine", "small_bowel")),
    organ(3, "Large bowel", (0.6, 0.45, 0.25), "14742008", "Large intestine",
          Plausible((0.0, 3000.0), max_components=10, may_touch_border=True),
          tg263="Bowel_Large", synonyms=("large intestine", "colon", "large_bowel")),
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
                      name_hints=("mr", "abdomen", "t1", "t2"), modality="MR"),),
    reference_role="mr",
    method_module="oncoseg.oar.mr.method",
    network_modules=("oncoseg.oar.mr.network",),
    segments=GI_SEGMENTS,
    settings=OarMrConfig,
    fixed_settings=("size", "context", "context_stride", "mean", "std"),
    proposed_settings=("threshold",),
))
