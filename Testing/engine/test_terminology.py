"""Every segment OncoSeg produces carries codes, and the terminology file Slicer loads is the
one the task declarations generate."""

import json
from pathlib import Path

from oncoseg.tasks import all_tasks
from oncoseg.terminology import (
    ANATOMICAL_STRUCTURE,
    LEFT,
    RIGHT,
    Code,
    Terminology,
    context_document,
)
from oncoseg.terminology_context import oncoseg_context

TERM_FILE = (Path(__file__).resolve().parents[2]
             / "OncoSegCommon/Resources/Terminology/OncoSeg.term.json")
HEAD = Code("SCT", "68367000", "Head of femur")


def test_every_segment_of_every_task_is_coded():
    segments = [s for task in all_tasks() if task.method_module.startswith("oncoseg.")
                for s in task.segments]
    assert len(segments) >= 12
    missing = [s.name for s in segments if s.terminology is None]
    assert not missing
    for s in segments:
        assert s.terminology.category.scheme == s.terminology.type.scheme == "SCT"
        assert s.terminology.type.value.isdigit()


def test_the_shipped_term_file_is_the_generated_one():
    on_disk = json.loads(TERM_FILE.read_text(encoding="utf-8"))
    assert on_disk == oncoseg_context(), \
        "regenerate: python -m oncoseg.terminology_context > " + str(TERM_FILE)


def test_slicer_string_round_trip_keeps_modifier_and_region():
    term = Terminology(ANATOMICAL_STRUCTURE, HEAD, type_modifier=LEFT,
                       region=Code("SCT", "12738006", "Brain"))
    text = term.to_slicer()
    assert len(text.split("~")) == 7
    assert Terminology.from_slicer(text) == term
    assert Terminology.from_slicer("a~b") is None


def test_lateral_segments_become_modifiers_of_one_type():
    document = context_document([
        ("Femoral head L", Terminology(ANATOMICAL_STRUCTURE, HEAD, type_modifier=LEFT), (1, 0, 0)),
        ("Femoral head R", Terminology(ANATOMICAL_STRUCTURE, HEAD, type_modifier=RIGHT), (0, 1, 0)),
    ])
    (category,) = document["SegmentationCodes"]["Category"]
    (head,) = category["Type"]
    assert head["CodeValue"] == "68367000"
    assert [(m["CodeMeaning"], m["recommendedDisplayRGBValue"]) for m in head["Modifier"]] == \
        [("Left", [255, 0, 0]), ("Right", [0, 255, 0])]
