"""The TID 1500 Measurement Report against readers no one here wrote: dciodvfy judges the IOD,
highdicom reads every measurement back (value, UCUM unit, concept code) with the segment and
series it references, and dicom3tools' dcsrdump (David Clunie's SR dumper) prints the content
tree as a second reader. Volumes are reported for a BINARY SEG written by the existing writer on
the phantom CT and on pydicom's real CT_small.dcm; staging on pydicom's real MR_small.dcm."""

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_ct import (
    AXIAL,
    DCIODVFY,
    DCIODVFY_MISSING,
    OBLIQUE_ROWS,
    bone_mask,
    dciodvfy_errors,
    grid_points,
    phantom_ct_case,
    stack_positions,
    uniform_series,
    write_analytic_series,
)

from oncoseg.errors import InputError
from oncoseg.export import export_segmentation
from oncoseg.io.dicom import Algorithm
from oncoseg.io.dicom_series import reference_planes
from oncoseg.io.dicomsr import (
    SegmentVolume,
    Staging,
    segment_volumes,
    staging_from_result,
    write_measurement_report,
)
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.io.volumes import choose_dicom_series, read_volume
from oncoseg.terminology import Terminology

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DCSRDUMP = str(Path(DCIODVFY).with_name("dcsrdump")) if DCIODVFY else None
needs_dicom3tools = pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)
MODEL = Algorithm("oar-ct-demo.safetensors", "0123456789abcdef" * 4, "2026-03-01T10:00:00",
                  "Apache-2.0")


def code(concept) -> tuple[str, str]:
    return concept.scheme_designator, concept.value


def texts(item) -> dict[str, str]:
    """The TEXT children of a content item by concept code value (TID 4019 lives there)."""
    return {child.ConceptNameCodeSequence[0].CodeValue: child.TextValue
            for child in getattr(item, "ContentSequence", []) if child.ValueType == "TEXT"}


def procedures(sr) -> list[tuple[str, str]]:
    """The root's Procedure reported codes (highdicom has no accessor for them)."""
    return [(i.ConceptCodeSequence[0].CodingSchemeDesignator, i.ConceptCodeSequence[0].CodeValue)
            for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]


def sr_tree(path: Path) -> str:
    out = subprocess.run([DCSRDUMP, str(path)], capture_output=True, text=True, check=True)
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def phantom_report(tmp_path_factory):
    """The phantom pelvic CT's structures exported as a SEG and their volumes reported."""
    root = tmp_path_factory.mktemp("sr")
    case, image, segmentation = phantom_ct_case(root)
    series = choose_dicom_series(case)
    export_segmentation(segmentation, root / "seg.dcm", "dicom-seg", series, algorithm=MODEL,
                        naming="oncoseg")
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    volumes_ml = {s.name: round(float(segmentation.mask(s.id).sum()) * voxel_ml, 3)
                  for s in segmentation.segments}
    volumes = segment_volumes([(s.name, s.terminology) for s in segmentation.segments],
                              volumes_ml)
    files = [p.file for p in reference_planes(series)]
    write_measurement_report(root / "sr.dcm", files, volumes, MODEL, root / "seg.dcm")
    return root, files, segmentation, volumes, voxel_ml


@needs_dicom3tools
def test_the_volume_report_passes_dciodvfy_and_dcsrdump_reads_its_tree(phantom_report):
    root, files, _, volumes, _ = phantom_report
    assert dciodvfy_errors(root / "sr.dcm") == []
    tree = sr_tree(root / "sr.dcm")
    assert '(126000,DCM,"Imaging Measurement Report")' in tree and "(DCMR,1500)" in tree
    assert tree.count("(DCMR,1411)") == len(volumes)
    bladder = next(v for v in volumes if v.name == "Bladder")
    assert (f'NUM: (118565006,SCT,"Volume")  = {bladder.volume_ml:g} '
            '(cm3,UCUM,"cubic centimeter")') in tree
    assert f"[Segment {bladder.number}]" in tree
    assert tree.count('(260753009,SCT,"Source")') == len(files)  # the image library
    broken = pydicom.dcmread(root / "sr.dcm")  # the validator is awake: the root's flag gone
    del broken.CompletionFlag
    broken.save_as(root / "broken.dcm")
    assert dciodvfy_errors(root / "broken.dcm")


def test_highdicom_reads_every_volume_with_its_code_unit_segment_and_series(phantom_report):
    root, files, segmentation, volumes, voxel_ml = phantom_report
    seg = pydicom.dcmread(root / "seg.dcm", stop_before_pixels=True)
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    sr = hd.sr.srread(root / "sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR, as dcmqi writes
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [s.name for s in segmentation.segments]
    # the SEG's own pixels, read by highdicom: each referenced segment holds the volume
    # reported for it (the reference points at the right segment, on the right series)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    pixels = hd.seg.segread(root / "seg.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[v.number for v in volumes])
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    for group, volume, segment in zip(groups, volumes, segmentation.segments, strict=True):
        [measurement] = group.get_measurements()
        assert code(measurement.name) == ("SCT", "118565006")
        assert code(measurement.unit) == ("UCUM", "cm3")
        assert measurement.value == pytest.approx(volume.volume_ml, abs=1e-9)
        term = Terminology.from_slicer(segment.terminology)
        assert code(group.finding_type) == (term.type.scheme, term.type.value)
        assert code(group.finding_category) == (term.category.scheme, term.category.value)
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_sop_class_uid == seg.SOPClassUID
        [number] = reference.referenced_segment_numbers
        assert labels[number] == segment.name
        assert reference.source_series_for_segmentation.value == series_uid
        held = float((pixels[..., number - 1] > 0).sum()) * voxel_ml
        assert held == pytest.approx(volume.volume_ml, abs=1e-3)
        algorithm = texts(measurement[0])  # TID 4019 on each measurement
        assert algorithm["111001"] == MODEL.name and algorithm["111003"] == MODEL.version
        assert MODEL.sha256 in algorithm["111002"]
    sites = {g.tracking_identifier: g.finding_sites for g in groups}
    assert code(sites["Nodal CTV"][0].value) == ("SCT", "59441001")  # the region: lymph node
    [left] = sites["Femoral head L"]  # a lateral structure keeps its side
    assert code(left.value) == ("SCT", "68367000") and code(left.laterality) == ("SCT", "7771000")
    assert sites["Bladder"] == []


def test_the_report_names_its_observer_procedure_images_and_evidence(phantom_report):
    root, files, _, _, _ = phantom_report
    sr = hd.sr.srread(root / "sr.dcm")
    [device] = sr.content.get_observer_contexts(observer_type=hd.sr.CodedConcept(
        "121007", "DCM", "Device"))
    attributes = device.observer_identifying_attributes
    assert attributes.name == MODEL.name and attributes.model_name == MODEL.version
    assert attributes.manufacturer_name == "OncoSeg"
    assert procedures(sr) == [("LN", "25045-6")]
    [equipment] = sr.ContributingEquipmentSequence  # as on the SEG and RTSTRUCT
    assert MODEL.sha256 in equipment.ContributionDescription
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    library = next(item for item in sr.ContentSequence if item.ValueType == "CONTAINER" and
                   item.ConceptNameCodeSequence[0].CodeValue == "111028")
    entries = library.ContentSequence[0].ContentSequence
    assert {e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for e in entries} == uids
    seg_uid = pydicom.dcmread(root / "seg.dcm", stop_before_pixels=True).SOPInstanceUID
    [study] = sr.CurrentRequestedProcedureEvidenceSequence
    referenced = {i.ReferencedSOPInstanceUID for s in study.ReferencedSeriesSequence
                  for i in s.ReferencedSOPSequence}
    assert referenced == uids | {seg_uid}
    again = root / "again.dcm"  # one model, one device: the observer UID is the model's
    write_measurement_report(again, files, [], MODEL, staging=Staging(0.2, 0.5, "T2"))
    first, second = (hd.sr.srread(p).content.get_observer_contexts()[0]
                     .observer_identifying_attributes.uid for p in (root / "sr.dcm", again))
    assert first == second


@needs_dicom3tools
def test_volumes_on_pydicoms_real_ct(tmp_path):
    """CT_small.dcm, a scanner's single slice: its bone (> 100 HU) as a SEG and its volume."""
    (tmp_path / "ct").mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", tmp_path / "ct" / "CT_small.dcm")
    image = read_volume(tmp_path / "ct").image
    bone = sitk.GetArrayFromImage(image) > 100
    assert 0 < bone.sum() < bone.size
    segmentation = Segmentation.from_masks(image, [bone], [Segment("b", "Bone", (1, 1, .8))])
    export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg",
                        choose_dicom_series(tmp_path / "ct"))
    volume_ml = float(bone.sum() * np.prod(image.GetSpacing())) / 1000
    write_measurement_report(tmp_path / "sr.dcm", [tmp_path / "ct" / "CT_small.dcm"],
                             [SegmentVolume("Bone", 1, "", volume_ml)], None,
                             tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    [group] = hd.sr.srread(tmp_path / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    [measurement] = group.get_measurements()
    assert measurement.value == pytest.approx(volume_ml, rel=1e-12)  # a double beside the DS
    assert code(group.finding_type) == ("SCT", "85756007")  # no terminology: Tissue, as the SEG
    ct = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm", stop_before_pixels=True)
    assert group.referenced_segment.source_series_for_segmentation.value == ct.SeriesInstanceUID
    assert texts(measurement[0])["111001"] == "OncoSeg"  # no model known: OncoSeg itself


@needs_dicom3tools
@pytest.mark.parametrize(("orientation", "first", "step"),
                         [(AXIAL, (-47.0, -39.0, 25.0), -2.5),
                          (OBLIQUE_ROWS, (-47.0, -39.0, 0.0), 2.0)],
                         ids=["axial-stored-head-first", "oblique"])
def test_volumes_on_analytic_series_in_other_orientations(tmp_path, orientation, first, step):
    """The analytic CT's bone sphere on a stack stored from its last slice down, and on one
    rotated 15 degrees in-plane: the referenced segment holds the reported volume, and each
    image library entry places its image as the file does."""
    positions = stack_positions([k * step for k in range(12)], orientation, first)
    files = write_analytic_series(tmp_path / "ct", positions, orientation)
    image = read_volume(tmp_path / "ct").image
    bone = bone_mask(grid_points(image))
    segmentation = Segmentation.from_masks(image, [bone], [Segment("b", "Bone", (1, 1, .8))])
    export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg",
                        choose_dicom_series(tmp_path / "ct"))
    volume_ml = float(bone.sum() * np.prod(image.GetSpacing())) / 1000
    write_measurement_report(tmp_path / "sr.dcm", files, [SegmentVolume("Bone", 1, "", volume_ml)],
                             MODEL, tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    [group] = sr.content.get_volumetric_roi_measurement_groups()
    [measurement] = group.get_measurements()
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    held = hd.seg.segread(tmp_path / "seg.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=[h.SOPInstanceUID for h in headers], segment_numbers=[1])
    assert held.sum() == bone.sum() > 0
    assert measurement.value == pytest.approx(volume_ml, rel=1e-12)
    library = next(item for item in sr.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "111028")
    for entry, header in zip(library.ContentSequence[0].ContentSequence, headers, strict=True):
        assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
        values = {d.ConceptNameCodeSequence[0].CodeValue: float(
            d.MeasuredValueSequence[0].NumericValue) for d in entry.ContentSequence
            if d.ValueType == "NUM"}
        np.testing.assert_allclose([values[f"11090{i}"] for i in range(4, 10)],
                                   [float(v) for v in header.ImageOrientationPatient])
        np.testing.assert_allclose([values[f"11090{i}"] for i in range(1, 4)],
                                   [float(v) for v in header.ImagePositionPatient])


@needs_dicom3tools
@pytest.mark.parametrize(("p_t3", "stage", "concept"), [(0.9999485948366995, "T3", "1228938002"),
                                                        (0.31, "T2", "1228929004")])
def test_a_staging_report_on_pydicoms_real_mr_reads_back(tmp_path, p_t3, stage, concept):
    """P(T3) (UCUM 1), the threshold and the cT category (SNOMED CT's AJCC concept) in an
    image-level group whose source is the series' images; no SEG."""
    shutil.copy(PYDICOM_FILES / "MR_small.dcm", tmp_path / "MR_small.dcm")
    mr = pydicom.dcmread(tmp_path / "MR_small.dcm", stop_before_pixels=True)
    write_measurement_report(tmp_path / "sr.dcm", [tmp_path / "MR_small.dcm"], [], MODEL,
                             staging=Staging(p_t3, 0.5, stage))
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    [group] = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == "T category"
    assert code(group.finding_type) == ("SCT", "108369006")  # neoplasm
    assert code(group.finding_sites[0].value) == ("SCT", "34402009")  # of the rectum
    measured = {m.name.value: m for m in group.get_measurements()}
    assert measured["P-cT3"].value == p_t3  # exact: the double beside the 16-digit string
    assert measured["cT3-threshold"].value == 0.5
    for m in measured.values():
        assert code(m.unit) == ("UCUM", "1")
        assert m.name.scheme_designator == "99ONCOSEG"
        assert texts(m[0])["111003"] == MODEL.version
    [evaluation] = group.get_qualitative_evaluations()
    assert code(evaluation.name) == ("SCT", "399504009")  # cT category
    assert code(evaluation.value) == ("SCT", concept)
    [source] = group.source_images  # read by highdicom 0.22, 0.27 and 0.28 alike
    assert source.referenced_sop_instance_uid == mr.SOPInstanceUID
    assert procedures(sr) == [("LN", "25056-3")]  # MRI unspecified body region
    [scheme] = sr.CodingSchemeIdentificationSequence  # the private codes are declared
    assert scheme.CodingSchemeDesignator == "99ONCOSEG"
    assert '(399504009,SCT,"cT category")' in sr_tree(tmp_path / "sr.dcm")


def test_staging_and_volumes_come_from_result_json_documents():
    """The keys oncoseg.staging.predict writes in result.json's details; a segmentation result
    has none; every segment needs its volume."""
    staging = staging_from_result({"task": "staging", "details": {
        "stage": "T3", "p_t3": 0.82, "threshold": 0.45, "calibrated": True}})
    assert staging == Staging(0.82, 0.45, "T3")
    assert staging_from_result({"task": "oar-ct", "details": {}}) is None
    volumes = segment_volumes([("Bladder", "t1"), ("Rectum", "")], {"Bladder": 1.5,
                                                                    "Rectum": 2.0})
    assert [(v.number, v.volume_ml, v.terminology) for v in volumes] == [(1, 1.5, "t1"),
                                                                          (2, 2.0, "")]
    with pytest.raises(InputError, match="Rectum: has no volume"):
        segment_volumes([("Bladder", ""), ("Rectum", "")], {"Bladder": 1.5})


def test_what_cannot_be_reported_is_refused_and_nothing_is_overwritten_unasked(phantom_report,
                                                                              tmp_path):
    root, files, _, volumes, _ = phantom_report
    out = tmp_path / "sr.dcm"
    with pytest.raises(InputError, match="already exists"):
        write_measurement_report(root / "sr.dcm", files, volumes, MODEL, root / "seg.dcm")
    before = (root / "sr.dcm").read_bytes()
    write_measurement_report(out, files, volumes, MODEL, root / "seg.dcm")
    assert out.read_bytes() != before  # a new SOP instance
    write_measurement_report(out, files, volumes, MODEL, root / "seg.dcm", overwrite=True)
    with pytest.raises(InputError, match="reference their segments in a DICOM SEG"):
        write_measurement_report(tmp_path / "a.dcm", files, volumes, MODEL)
    renamed = [SegmentVolume("Prostate", 3, "", 1.0)]
    with pytest.raises(InputError, match="has no segment 3 named 'Prostate'"):
        write_measurement_report(tmp_path / "b.dcm", files, renamed, MODEL, root / "seg.dcm")
    other = uniform_series(tmp_path / "other", count=3)  # a SEG of another series
    with pytest.raises(InputError, match="segmentation of another series"):
        write_measurement_report(tmp_path / "c.dcm", other, volumes, MODEL, root / "seg.dcm")
    with pytest.raises(InputError, match="is not a DICOM Segmentation"):
        write_measurement_report(tmp_path / "d.dcm", files, volumes, MODEL, files[0])
    with pytest.raises(ValueError, match="stage 'T4'"):
        write_measurement_report(tmp_path / "e.dcm", files, staging=Staging(0.9, 0.5, "T4"))
    with pytest.raises(ValueError, match="not a probability"):
        write_measurement_report(tmp_path / "f.dcm", files, staging=Staging(1.2, 0.5, "T3"))
    with pytest.raises(ValueError, match="cannot be reported"):
        write_measurement_report(tmp_path / "g.dcm", files,
                                 [SegmentVolume(volumes[0].name, 1, "", float("nan"))],
                                 MODEL, root / "seg.dcm")
    with pytest.raises(ValueError, match="needs segment volumes or a staging result"):
        write_measurement_report(tmp_path / "h.dcm", files)
    blank = uniform_series(tmp_path / "blank", count=2)
    for path in blank:  # an anonymiser blanked the UIDs: nothing to reference
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ""
        ds.save_as(path)
    with pytest.raises(InputError, match="cannot be referenced by a DICOM SR"):
        write_measurement_report(tmp_path / "i.dcm", blank, staging=Staging(0.9, 0.5, "T3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank", "other", "sr.dcm"]
