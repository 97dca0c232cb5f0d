"""The ``oar-ct`` task's declaration."""

from oncoseg.oar.ct.config import OarCtConfig
from oncoseg.oar.organs import organ
from oncoseg.structure_names import packaged_synonym_table
from oncoseg.tasks import InputRole, Plausible, SegmentSpec, Task, register_task
from oncoseg.terminology import (
    ANATOMICAL_STRUCTURE,
    LEFT,
    RIGHT,
    SPATIAL_CONCEPT,
    Code,
    Terminology,
)

FEMORAL_HEAD = Code("SCT", "68367000", "Head of femur")


# The structure names clinics give each organ: the synonym table the DICOM cohort layout maps
# structure sets with by default, which a label file that names its labels is read by too.
_CLINICAL = {name: tuple(spellings) for name, spellings in packaged_synonym_table().items()}

# Plausible adult volumes (mL) for a cohort's quality control: wide on purpose (a femoral
# head with or without the neck, an empty or full bladder, a bowel bag cut by the field of view)
FEMORAL_HEAD_ML = Plausible((15.0, 250.0), max_components=1)
CT_SEGMENTS = (
    SegmentSpec(1, "Femoral head L", (0.9, 0.86, 0.27),
                Terminology(ANATOMICAL_STRUCTURE, FEMORAL_HEAD, type_modifier=LEFT),
                FEMORAL_HEAD_ML, tg263="Femur_Head_L", synonyms=_CLINICAL["Femoral head L"]),
    SegmentSpec(2, "Femoral head R", (0.27, 0.86, 0.9),
                Terminology(ANATOMICAL_STRUCTURE, FEMORAL_HEAD, type_modifier=RIGHT),
                FEMORAL_HEAD_ML, tg263="Femur_Head_R", synonyms=_CLINICAL["Femoral head R"]),
    organ(3, "Bladder", (0.86, 0.63, 0.16), "89837001", "Urinary bladder",
          Plausible((10.0, 1200.0), max_components=1), tg263="Bladder",
          synonyms=_CLINICAL["Bladder"]),
    # the bowel bag is the volume the small and large bowel loops may occupy
    organ(4, "Bowel bag", (0.75, 0.43, 0.24), "113276009", "Intestine",
          Plausible((50.0, 6000.0), max_components=3, may_touch_border=True),
          tg263="Bag_Bowel", synonyms=_CLINICAL["Bowel bag"]),
    SegmentSpec(5, "Nodal CTV", (0.9, 0.24, 0.24),
                Terminology(SPATIAL_CONCEPT, Code("SCT", "228790004", "Clinical target volume"),
                            region=Code("SCT", "59441001", "Lymph node")),
                # elective nodal volumes span about 100-1000 mL; a CTV of the mesorectal
                # nodes alone is smaller; contoured up to where the planning scan ends
                Plausible((20.0, 2000.0), max_components=2, may_touch_border=True),
                tg263="CTVn", synonyms=_CLINICAL["Nodal CTV"]),
)

OAR_CT = register_task(Task(
    name="oar-ct",
    title="Pelvic organs at risk on CT",
    paper="Sartor et al. 2020 (paper 003)",
    description=("HU window [-800, 800] / 800 at the CT's own resolution (or the working grid "
                 "a model was trained on); a memory-lean 3D fully convolutional network "
                 "with softmax over femoral heads, bladder, bowel bag and nodal CTV; largest "
                 "26-connected component per organ (the nodal CTV, in two sides: its pieces "
                 "under 0.2 mL removed) and hole filling. Trains on clinical RT "
                 "structure sets with partial annotations, in restart cycles with hard "
                 "negatives."),
    inputs=(InputRole("ct", "CT in Hounsfield units (volume or DICOM series folder)",
                      name_hints=("ct",), modality="CT"),),
    reference_role="ct",
    method_module="oncoseg.oar.ct.method",
    network_modules=("oncoseg.oar.ct.network",),
    segments=CT_SEGMENTS,
    settings=OarCtConfig,
    fixed_settings=("spacing_mm", "hu_low", "hu_high"),
    proposed_settings=(),
))
