"""Structure names as radiotherapy systems expect them: AAPM TG-263 (Mayo et al., "American
Association of Physicists in Medicine Task Group 263: Standardizing Nomenclatures in Radiation
Oncology", Int J Radiat Oncol Biol Phys 2018).

Treatment planning systems, dose-volume tools and registries match structures by name
(``Femur_Head_L``, ``Bag_Bowel``, ``CTVn``), not by OncoSeg's readable names or by SNOMED
codes; so DICOM exports name a structure by TG-263 where TG-263 defines it, and keep OncoSeg's
name (as the description) and the codes alongside. The TG-263 name of each segment is declared
with the segment (``SegmentSpec.tg263``); a segment is recognised by its coded meaning first, so
a segment renamed in Slicer keeps its TG-263 name, and by OncoSeg's name where it carries no
codes. Structures TG-263 does not define (the brain tumour's subregions) keep OncoSeg's names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources

from oncoseg.errors import InputError
from oncoseg.tasks import SegmentSpec, all_tasks
from oncoseg.terminology import DEFAULT_NAMING, STRUCTURE_NAMINGS, Code, Terminology

NAMINGS = STRUCTURE_NAMINGS
__all__ = ["DEFAULT_NAMING", "NAMINGS", "check_naming", "matching_segment", "normalise",
           "structure_name", "tg263_name", "tg263_synonyms"]


def check_naming(naming: str) -> str:
    """The naming, or an :class:`InputError` naming the ones there are."""
    if naming not in NAMINGS:
        raise InputError("structure names", f"'{naming}' is not one of {', '.join(NAMINGS)}")
    return naming


def _declared() -> Iterator[SegmentSpec]:
    for task in all_tasks():
        yield from (spec for spec in task.segments if spec.tg263)


def _values(code: Code | None) -> tuple[str, str] | None:
    return None if code is None else (code.scheme, code.value)


def _concept(term: Terminology) -> tuple:
    """What a coded meaning says, meanings' wording aside (Slicer may spell them otherwise)."""
    return tuple(_values(c) for c in (term.category, term.type, term.type_modifier,
                                      term.region, term.region_modifier))


def tg263_name(name: str, terminology: str = "") -> str | None:
    """The TG-263 primary name of a segment (``name``, Slicer ``terminology`` string), or None
    where TG-263 defines no such structure."""
    term = Terminology.from_slicer(terminology) if terminology else None
    declared = list(_declared())
    if term is not None:
        for spec in declared:
            if spec.terminology is not None and _concept(spec.terminology) == _concept(term):
                return spec.tg263
    return next((spec.tg263 for spec in declared if spec.name == name), None)


def structure_name(name: str, terminology: str = "", naming: str = DEFAULT_NAMING) -> str:
    """The name an exported structure carries under ``naming``."""
    if check_naming(naming) == "tg263":
        return tg263_name(name, terminology) or name
    return name


def tg263_synonyms(segments: Mapping[str, object] | None = None) -> dict[str, str]:
    """TG-263 name -> OncoSeg segment name, for every declared segment (or those named in
    ``segments``): what an imported structure set named by TG-263 maps to."""
    return {spec.tg263: spec.name for spec in _declared()
            if segments is None or spec.name in segments}


def normalise(name: str) -> str:
    """A structure name as names are compared: case, spaces and punctuation ignored."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def matching_segment(name: str, terminology: str, specs: Sequence[SegmentSpec]
                     ) -> SegmentSpec | None:
    """Which of a task's segments (``specs``) a structure named elsewhere (a Slicer
    segment's name and terminology string, a DICOM SEG's, a data set's label description) is:
    by its coded meaning where it carries one a spec shares (an OncoSeg result renamed in
    Slicer keeps it), else by its name: OncoSeg's, the TG-263 one or a synonym the spec lists;
    None when it is none of them."""
    term = Terminology.from_slicer(terminology) if terminology else None
    if term is not None:
        coded = [spec for spec in specs if spec.terminology is not None
                 and _concept(spec.terminology) == _concept(term)]
        if len(coded) == 1:
            return coded[0]
    wanted = normalise(name)
    return next((spec for spec in specs if wanted in {
        normalise(n) for n in (spec.name, spec.tg263 or spec.name, *spec.synonyms)}), None)


# the synonym table shipped for the pelvic organs (segment name -> clinical spellings)
OAR_CT_SYNONYMS = "oar_ct_synonyms.json"


def synonym_table(text: str, where: str) -> dict[str, list[str]]:
    """A synonym table's JSON (OncoSeg segment name -> clinical names; keys starting with
    '_' are comments)."""
    try:
        table = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(where, f"is not valid JSON ({error})") from None
    return {k: list(v) for k, v in table.items() if not k.startswith("_")}


def packaged_synonym_table(name: str = OAR_CT_SYNONYMS) -> dict[str, list[str]]:
    """A synonym table shipped in ``oncoseg/data``."""
    return synonym_table(resources.files("oncoseg.data").joinpath(name).read_text("utf-8"), name)
