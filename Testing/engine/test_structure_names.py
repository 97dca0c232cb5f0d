"""AAPM TG-263 names: what radiotherapy systems expect an RT structure to be called. A segment
is recognised by its coded meaning (so renaming it in Slicer keeps its standard name), by
OncoSeg's name where it has no codes; structures TG-263 does not define keep OncoSeg's names;
structure sets named by TG-263 map onto OncoSeg's segments whatever the synonym table says."""

import pydicom
import pytest
from dicom_ct import DCIODVFY, DCIODVFY_MISSING, dciodvfy_errors, phantom_ct_case

from oncoseg.datasets.rtstruct_cohort import map_structures
from oncoseg.errors import InputError
from oncoseg.io.dicom_series import reference_planes
from oncoseg.io.rtstruct import StructureToWrite, read_rtstruct, write_rtstruct
from oncoseg.io.volumes import choose_dicom_series
from oncoseg.structure_names import structure_name, tg263_name, tg263_synonyms
from oncoseg.tasks import get_task
from oncoseg.terminology import Code, Terminology

# AAPM TG-263 (Mayo et al. 2018), table of OAR and target names
EXPECTED = {"Femoral head L": "Femur_Head_L", "Femoral head R": "Femur_Head_R",
            "Bladder": "Bladder", "Bowel bag": "Bag_Bowel", "Nodal CTV": "CTVn",
            "Stomach": "Stomach", "Small bowel": "Bowel_Small", "Large bowel": "Bowel_Large",
            "Rectal tumour": "GTVp"}


@pytest.mark.parametrize("task", ["oar-ct", "oar-mr", "rectal", "brain"])
def test_every_segment_gets_its_tg263_name_by_its_codes_or_keeps_its_own(task):
    for spec in get_task(task).segments:
        expected = EXPECTED.get(spec.name, spec.name)  # brain subregions: not in TG-263
        renamed = structure_name("renamed in Slicer", spec.terminology.to_slicer())
        assert renamed == (expected if spec.name in EXPECTED else "renamed in Slicer")
        assert structure_name(spec.name, spec.terminology.to_slicer()) == expected
        assert structure_name(spec.name) == expected  # no codes: by OncoSeg's name
        assert structure_name(spec.name, spec.terminology.to_slicer(), "oncoseg") == spec.name


def test_laterality_and_region_tell_structures_of_one_type_apart():
    femoral_head = Code("SCT", "68367000", "Head of femur")
    anatomy = Code("SCT", "123037004", "Anatomical Structure")
    left = Terminology(anatomy, femoral_head, Code("SCT", "7771000", "Left")).to_slicer()
    right = Terminology(anatomy, femoral_head, Code("SCT", "24028007", "Right")).to_slicer()
    assert (tg263_name("x", left), tg263_name("x", right)) == ("Femur_Head_L", "Femur_Head_R")
    # a code's wording may differ (Slicer's lists spell some meanings otherwise)
    assert tg263_name("x", left.replace("Head of femur", "Femoral head")) == "Femur_Head_L"
    # the same neoplasm code in the rectum is the primary GTV, in the brain it is not named
    [tumour] = get_task("rectal").segments
    enhancing = get_task("brain").segments[2]
    assert tumour.terminology.type == enhancing.terminology.type
    assert tg263_name("x", tumour.terminology.to_slicer()) == "GTVp"
    assert tg263_name("x", enhancing.terminology.to_slicer()) is None
    # a segment Slicer coded as plain tissue is judged by its name, and unknown stays unknown
    tissue = Terminology(Code("SCT", "85756007", "Tissue"), Code("SCT", "85756007", "Tissue"))
    assert tg263_name("Bladder", tissue.to_slicer()) == "Bladder"
    assert tg263_name("Spleen", tissue.to_slicer()) is None


def test_a_naming_that_does_not_exist_is_refused_by_name():
    with pytest.raises(InputError, match="'aapm' is not one of tg263, oncoseg"):
        structure_name("Bladder", naming="aapm")


def test_tg263_names_map_onto_segments_even_with_a_table_that_lacks_them():
    table = {"Bladder": ["Blaas"], "Bowel bag": [], "Femoral head L": []}
    mapped, unmapped = map_structures(["Bag_Bowel", "FEMUR_HEAD_L", "Blaas", "CTVn"], table)
    assert mapped == {"Bowel bag": "Bag_Bowel", "Femoral head L": "FEMUR_HEAD_L",
                      "Bladder": "Blaas"}
    assert unmapped == ["CTVn"]  # the table does not ask for the nodal CTV
    assert tg263_synonyms(table) == {"Femur_Head_L": "Femoral head L", "Bladder": "Bladder",
                                     "Bag_Bowel": "Bowel bag"}


def test_an_rtstruct_carries_description_and_code_beside_the_name(tmp_path):
    case, _, segmentation = phantom_ct_case(tmp_path / "ct")
    files = [p.file for p in reference_planes(choose_dicom_series(case))]
    segment = segmentation.segments[0]
    head = Code("SCT", "68367000", "Head of femur")
    write_rtstruct([StructureToWrite("Femur_Head_L", segmentation.mask(segment.id), (230, 220, 70),
                                     "ORGAN", "Femoral head L", head),
                    ("Other", segmentation.mask(segment.id), (0, 0, 255), "ORGAN")],
                   segmentation.geometry, files, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    first, second = ds.StructureSetROISequence
    assert (first.ROIName, first.ROIDescription) == ("Femur_Head_L", "Femoral head L")
    assert "ROIDescription" not in second
    [code] = ds.RTROIObservationsSequence[0].RTROIIdentificationCodeSequence
    assert (code.CodingSchemeDesignator, code.CodeValue) == ("SCT", "68367000")
    assert "RTROIIdentificationCodeSequence" not in ds.RTROIObservationsSequence[1]
    assert [s.name for s in read_rtstruct(tmp_path / "rs.dcm").structures] == ["Femur_Head_L",
                                                                               "Other"]
    if DCIODVFY is None:
        pytest.skip(DCIODVFY_MISSING)
    assert dciodvfy_errors(tmp_path / "rs.dcm") == []
