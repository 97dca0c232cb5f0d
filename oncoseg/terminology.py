"""Coded meaning of a segment (DICOM / SNOMED CT), in the form Slicer stores it.

Slicer keeps a segment's terminology as one string in its ``TerminologyEntry`` tag:
``context~category~type~typeModifier~anatomicContext~region~regionModifier``, each code written
``scheme^value^meaning``. DICOM SEG export needs the same codes, so they are defined once per
segment in the task's output specification and converted here.
"""

from __future__ import annotations

from dataclasses import dataclass

SLICER_CONTEXT = "Segmentation category and type - DICOM master list"
SLICER_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


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
            SLICER_CONTEXT, code(self.category), code(self.type), code(self.type_modifier),
            SLICER_ANATOMIC_CONTEXT, code(self.region), code(self.region_modifier),
        ])

    @classmethod
    def from_slicer(cls, text: str) -> Terminology | None:
        """Parse Slicer's string; None when it holds no category and type."""
        parts = text.split("~")
        if len(parts) != 7:
            return None
        category, type_ = Code.from_slicer(parts[1]), Code.from_slicer(parts[2])
        if category is None or type_ is None:
            return None
        return cls(category, type_, Code.from_slicer(parts[3]), Code.from_slicer(parts[5]),
                   Code.from_slicer(parts[6]))
