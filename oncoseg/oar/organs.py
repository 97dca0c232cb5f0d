"""Organ segments named with SNOMED CT codes, shared by the CT and MR organ tasks."""

from oncoseg.tasks import Plausible, SegmentSpec
from oncoseg.terminology import ANATOMICAL_STRUCTURE, Code, Terminology


def organ(label: int, name: str, color: tuple[float, float, float], code: str,
          meaning: str, plausible: Plausible, tg263: str = "",
          synonyms: tuple[str, ...] = ()) -> SegmentSpec:
    return SegmentSpec(label, name, color,
                       Terminology(ANATOMICAL_STRUCTURE, Code("SCT", code, meaning)), plausible,
                       tg263, synonyms)
