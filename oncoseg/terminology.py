"""Coded meaning of a segment (DICOM / SNOMED CT), in the forms Slicer and DICOM SEG need.

Slicer keeps a segment's terminology as one string in its ``TerminologyEntry`` tag:
``context~category~type~typeModifier~anatomicContext~region~regionModifier``, each code written
``scheme^value^meaning``. DICOM SEG export needs the same codes, so they are defined once per
segment in the task's output specification and converted here. The segments' types live in
OncoSeg's own terminology context (``OncoSeg.term.json``, generated from the task declarations
by ``python -m oncoseg.terminology_context``), which the Slicer modules load so that Segment
Editor's terminology selector offers them; anatomic regions come from Slicer's DICOM master list.

This module is vocabulary only: the task declarations use it, so it knows no task (the
generator, which reads every task, is :mod:`oncoseg.terminology_context`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# How DICOM exports name structures: by AAPM TG-263 where it defines them
# (oncoseg.structure_names), or by OncoSeg's own segment names; the first is the default
STRUCTURE_NAMINGS = ("tg263", "oncoseg")
DEFAULT_NAMING = STRUCTURE_NAMINGS[0]
CONTEXT = "Segmentation category and type - OncoSeg"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"


@dataclass(frozen=True)
class Code:
    """One coded concept: ``Code("SCT", "89837001", "Urinary bladder")``."""

    scheme: str
    value: str
    meaning: str

    def to_slicer(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"

    @classmethod
    def from_slicer(cls, text: str) -> Code | None:
        parts = text.split("^")
        if len(parts) != 3 or not parts[1]:
            return None
        return cls(*parts)

    def to_json(self) -> dict[str, str]:
        return {"CodingSchemeDesignator": self.scheme, "CodeValue": self.value,
                "CodeMeaning": self.meaning}


# Categories (DICOM CID 7150) and the codes the tasks' segments use (SNOMED CT)
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("SCT", "49755003", "Morphologically Altered Structure")
SPATIAL_CONCEPT = Code("SCT", "309825002", "Spatial and Relational Concept")
LEFT = Code("SCT", "7771000", "Left")
RIGHT = Code("SCT", "24028007", "Right")
NEOPLASM = Code("SCT", "108369006", "Neoplasm")
RECTUM = Code("SCT", "34402009", "Rectum")
BRAIN = Code("SCT", "12738006", "Brain")


@dataclass(frozen=True)
class Terminology:
    category: Code
    type: Code
    type_modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None

    def to_slicer(self) -> str:
        def code(c: Code | None) -> str:
            return c.to_slicer() if c else "^^"

        return "~".join([
            CONTEXT, code(self.category), code(self.type), code(self.type_modifier),
            ANATOMIC_CONTEXT, code(self.region), code(self.region_modifier),
        ])

    @classmethod
    def from_slicer(cls, text: str) -> Terminology | None:
        """Parse Slicer's string (any context); None when it holds no category and type."""
        parts = text.split("~")
        if len(parts) != 7:
            return None
        category, type_ = Code.from_slicer(parts[1]), Code.from_slicer(parts[2])
        if category is None or type_ is None:
            return None
        return cls(category, type_, Code.from_slicer(parts[3]), Code.from_slicer(parts[5]),
                   Code.from_slicer(parts[6]))


def context_document(entries: Iterable[tuple[str, Terminology, tuple[float, float, float]]]
                     ) -> dict[str, Any]:
    """Slicer's terminology context (a ``.term.json``) holding every (name, terminology,
    colour 0-1) given: categories, their types, and laterality-style type modifiers, each with
    the segment's colour and name as Slicer's recommended display values."""
    categories: dict[Code, dict[Code, dict[str, Any]]] = {}
    for name, term, color in entries:
        rgb = [round(255 * c) for c in color]
        types = categories.setdefault(term.category, {})
        entry = types.setdefault(term.type, {**term.type.to_json()})
        described = {"recommendedDisplayRGBValue": rgb, "3dSlicerLabel": name}
        if term.type_modifier is None:
            for key, value in described.items():  # the first segment of a type names it
                entry.setdefault(key, value)
        else:
            modifier = {**term.type_modifier.to_json(), **described}
            entry.setdefault("Modifier", []).append(modifier)
    document_categories = []
    for category, types in categories.items():
        document_categories.append({
            **category.to_json(),
            "showAnatomy": category != ANATOMICAL_STRUCTURE,
            "Type": list(types.values()),
        })
    return {"SegmentationCategoryTypeContextName": CONTEXT, "@schema": SCHEMA,
            "SegmentationCodes": {"Category": document_categories}}


if __name__ == "__main__":  # the generator moved up, above the task registry
    raise SystemExit("the terminology file is generated by: python -m oncoseg.terminology_context")
