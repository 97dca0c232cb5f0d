"""Exporting segmentation nodes on real MRML (slicer-core): the files hold what the nodes hold,
the DICOM objects reference the series the volume came from, and the scene is left alone."""

import random

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_ct import DCIODVFY, DCIODVFY_MISSING, dciodvfy_errors, phantom_ct_case

from oncoseg.errors import InputError
from oncoseg.io.segnrrd import read_seg_nrrd
from oncoseg.io.volumes import choose_dicom_series
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.tasks import SegmentSpec
from oncoseg.terminology import Terminology
from OncoSegCommonLib.export import (
    INSTANCE_UIDS_ATTRIBUTE,
    SERIES_FOLDER_ATTRIBUTE,
    export_node,
    segmentation_of_node,
    series_of_volume,
)
from OncoSegCommonLib.segmentations import (
    segment_id,
    segmentation_node_from_labels,
    set_segments_from_labels,
)
from OncoSegCommonLib.volumes import volume_node_from_image


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory):
    return phantom_ct_case(tmp_path_factory.mktemp("ct"))


@pytest.fixture
def nodes(mrml, ct_case):
    case, image, segmentation = ct_case
    volume = volume_node_from_image(mrml.scene, image, "CT")
    node = None
    for segment in segmentation.segments:  # one at a time: the phantom's CTV overlaps others
        spec = next(s for s in CT_SEGMENTS if s.name == segment.name)
        labels = sitk.GetImageFromArray(segmentation.mask(segment.id).astype(np.uint8))
        labels.CopyInformation(image)
        one = [SegmentSpec(1, spec.name, spec.color, spec.terminology)]
        if node is None:
            node = segmentation_node_from_labels(mrml.scene, labels, one, volume, "OARs")
        else:
            set_segments_from_labels(node, labels, one)
    return case, segmentation, volume, node


class FakeDicomDatabase:
    """Slicer's ctkDICOMDatabase answers fileForInstance(uid) -> path; so does this."""

    def __init__(self, files):
        self.paths = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: str(f)
                      for f in files}

    def fileForInstance(self, uid):
        return self.paths.get(uid, "")


def test_segments_come_out_with_names_colours_codes_and_voxels(nodes):
    _, truth, volume, node = nodes
    exported = segmentation_of_node(node, volume)
    assert [s.name for s in exported.segments] == [s.name for s in truth.segments]
    for ours, theirs in zip(exported.segments, truth.segments, strict=True):
        np.testing.assert_array_equal(exported.mask(ours.id), truth.mask(theirs.id))
        np.testing.assert_allclose(ours.color, theirs.color, atol=1e-6)
        assert Terminology.from_slicer(ours.terminology) == \
            Terminology.from_slicer(theirs.terminology)


def test_overlapping_segments_stay_whole(nodes):
    _, _, volume, node = nodes
    segmentation = node.GetSegmentation()
    bladder = segment_id(next(s for s in CT_SEGMENTS if s.name == "Bladder"))
    copy = segmentation.AddEmptySegment("copy", "Bladder copy", [0.1, 0.2, 0.3])
    segmentation.GetSegment(copy).DeepCopy(segmentation.GetSegment(bladder))
    segmentation.GetSegment(copy).SetName("Bladder copy")
    exported = segmentation_of_node(node, volume)
    assert exported.mask(bladder).sum() > 0
    np.testing.assert_array_equal(exported.mask(bladder), exported.mask("copy"))
    assert len(exported.layers) == 2


@pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)
def test_dicom_seg_of_a_volume_loaded_from_the_dicom_database(mrml, nodes, tmp_path):
    case, truth, volume, node = nodes
    series = choose_dicom_series(case)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    shuffled = random.Random(1).sample(uids, len(uids))
    volume.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(shuffled))
    database = FakeDicomDatabase(series.files)
    assert series_of_volume(volume, database).files == series.files
    before = mrml.node_names()
    result = export_node(node, volume, str(tmp_path / "seg.dcm"), "dicom-seg",
                         database=database)
    assert mrml.node_names() == before
    assert dciodvfy_errors(result.path) == []
    seg = hd.seg.segread(result.path)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=list(range(1, len(truth.segments) + 1)))
    for n, segment in enumerate(truth.segments):
        np.testing.assert_array_equal(frames[..., n] > 0, truth.mask(segment.id))


def test_dicom_export_without_a_series_is_refused_and_changes_nothing(mrml, nodes, tmp_path):
    case, _, volume, node = nodes
    before = mrml.node_names()
    with pytest.raises(InputError, match="folder of its DICOM series"):
        export_node(node, volume, str(tmp_path / "rs.dcm"), "rtstruct")
    assert mrml.node_names() == before
    assert not (tmp_path / "rs.dcm").exists()
    result = export_node(node, volume, str(tmp_path / "rs.dcm"), "rtstruct",
                         series_folder=str(case))
    assert result.path.exists()
    with pytest.raises(InputError, match="already exists"):
        export_node(node, volume, str(tmp_path / "rs.dcm"), "rtstruct", series_folder=str(case))


def test_a_series_folder_of_another_patient_is_refused_for_a_volume_from_dicom(mrml, nodes,
                                                                               tmp_path):
    """The series folder a reader picks by hand must be of the patient and frame of
    reference the volume came from: an export against another patient's series of the same
    protocol carried that patient's name (until 2026-12-06)."""
    import shutil

    from dicom_ct import set_attributes

    case, _, volume, node = nodes
    volume.SetAttribute(SERIES_FOLDER_ATTRIBUTE, str(case))
    other = tmp_path / "other"
    shutil.copytree(case, other, ignore=shutil.ignore_patterns("RS_*"))
    set_attributes(sorted(other.glob("*.dcm")), PatientID="OTHER-7",
                   FrameOfReferenceUID=pydicom.uid.generate_uid(),
                   SeriesInstanceUID=pydicom.uid.generate_uid())
    before = mrml.node_names()
    with pytest.raises(InputError, match=r"of patient 'OTHER-7'.*another patient"):
        export_node(node, volume, str(tmp_path / "seg.dcm"), "dicom-seg",
                    series_folder=str(other))
    assert mrml.node_names() == before and not (tmp_path / "seg.dcm").exists()
    assert export_node(node, volume, str(tmp_path / "seg.dcm"), "dicom-seg",
                       series_folder=str(case)).path.exists()


def test_seg_nrrd_export_reads_back(nodes, tmp_path):
    _, truth, volume, node = nodes
    export_node(node, volume, str(tmp_path / "x.seg.nrrd"), "seg.nrrd")
    back = read_seg_nrrd(tmp_path / "x.seg.nrrd")
    for segment in truth.segments:
        np.testing.assert_array_equal(back.mask(segment.name), truth.mask(segment.id))


def test_a_segmentation_a_run_made_exports_the_models_identity(mrml, ct_case, tmp_path):
    """add_prediction records the model on the node (saved with the scene); the DICOM export
    names it; a node OncoSeg did not make names OncoSeg alone."""
    import json

    from oncoseg.prediction import Prediction
    from OncoSegCommonLib.export import algorithm_of_node
    from OncoSegCommonLib.segmentations import MODEL_ATTRIBUTE
    from OncoSegCommonLib.taskrun import add_prediction

    case, image, segmentation = ct_case
    volume = volume_node_from_image(mrml.scene, image, "CT")
    labels = sitk.GetImageFromArray(segmentation.mask(segmentation.segments[0].id)
                                    .astype(np.uint8))
    labels.CopyInformation(image)
    model = {"name": "a model", "file": "pelvis-7.safetensors", "sha256": "ab" * 32,
             "trained": "2026-11-30T10:00:00+00:00", "license": "CC-BY-4.0"}
    prediction = Prediction(task="oar-ct", model=model, images={"ct": image}, display_role="ct",
                            segments=CT_SEGMENTS[:1], labels=labels)
    node = add_prediction(mrml.scene, prediction, "OARSeg", volume).segmentation
    assert json.loads(node.GetAttribute(MODEL_ATTRIBUTE)) == model
    result = export_node(node, volume, str(tmp_path / "rt.dcm"), "rtstruct", str(case))
    [equipment] = pydicom.dcmread(result.path).ContributingEquipmentSequence
    assert equipment.ManufacturerModelName == "pelvis-7.safetensors"
    assert "ab" * 32 in equipment.ContributionDescription
    assert "CC-BY-4.0" in equipment.ContributionDescription
    assert algorithm_of_node(mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")).name \
        == "OncoSeg"


def _probability_run(mrml, ct_case, prefix="OARSeg"):
    """A run's nodes as add_prediction adds them: the segmentation and, for two segments, a
    probability map: the bladder's on the CT grid, the bowel bag's on a coarser working grid
    (as oar-ct hands over maps for a large CT)."""
    from oncoseg.prediction import Prediction
    from OncoSegCommonLib.taskrun import add_prediction

    _, image, segmentation = ct_case
    specs = [s for s in CT_SEGMENTS if s.name in ("Bladder", "Bowel bag")]
    masks = [segmentation.mask(segmentation.segment(s.name).id) for s in specs]
    labels = sitk.GetImageFromArray(np.where(masks[0], 1, np.where(masks[1], 2, 0))
                                    .astype(np.uint8))
    labels.CopyInformation(image)
    maps = {}
    for spec, mask in zip(specs, masks, strict=True):
        blurred = sitk.SmoothingRecursiveGaussian(
            sitk.Cast(sitk.GetImageFromArray(mask.astype(np.uint8)), sitk.sitkFloat32), 1.5)
        blurred.CopyInformation(image)
        maps[spec.name] = sitk.Clamp(blurred, sitk.sitkFloat32, 0.0, 1.0)
    coarse = sitk.Image([s // 2 for s in image.GetSize()], sitk.sitkFloat32)
    coarse.SetSpacing([2 * s for s in image.GetSpacing()])
    coarse.SetOrigin(image.GetOrigin())
    coarse.SetDirection(image.GetDirection())
    maps["Bowel bag"] = sitk.Resample(maps["Bowel bag"], coarse, sitk.Transform(),
                                      sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    volume = volume_node_from_image(mrml.scene, image, "CT")
    model = {"name": "a model", "file": "pelvis-7.safetensors", "sha256": "cd" * 32}
    prediction = Prediction(task="oar-ct", model=model, images={"ct": image},
                            display_role="ct", segments=tuple(specs), labels=labels,
                            probabilities=maps)
    return volume, add_prediction(mrml.scene, prediction, prefix, volume), maps


@pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)
def test_the_probability_maps_of_a_run_export_as_a_fractional_dicom_seg(mrml, ct_case,
                                                                         tmp_path):
    """The maps are the volume nodes add_prediction made; each frame gives back the node's
    map where its image lies: to half a 1/255 step on the CT grid, and where the map lies on a
    coarser grid, the map linearly resampled (sitk.Resample) onto the image's slice."""
    case, image, _ = ct_case
    volume, nodes, maps = _probability_run(mrml, ct_case)
    series = choose_dicom_series(case)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    volume.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
    before = mrml.node_names()
    result = export_node(nodes.segmentation, volume, str(tmp_path / "p.dcm"),
                         "dicom-seg-fractional", database=FakeDicomDatabase(series.files))
    assert mrml.node_names() == before
    assert result.segments == ["Bladder", "Bag_Bowel"]  # AAPM TG-263 names by default
    assert "probability maps were resampled (linear interpolation)" in result.messages[0]
    assert dciodvfy_errors(result.path) == []
    seg = hd.seg.segread(result.path)
    assert seg.SegmentationType == "FRACTIONAL"
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=[1, 2])
    on_ct = sitk.GetArrayFromImage(maps["Bladder"])  # slice k is series file k
    assert np.abs(frames[..., 0] - on_ct).max() <= 0.5 / 255 + 1e-6
    resampled = sitk.GetArrayFromImage(sitk.Resample(maps["Bowel bag"], image,
                                                     sitk.Transform(), sitk.sitkLinear, 0.0,
                                                     sitk.sitkFloat32))
    assert np.abs(frames[..., 1] - resampled).max() <= 0.5 / 255 + 1e-5
    assert frames[..., 1].max() > 0.5
    binary = export_node(nodes.segmentation, volume, str(tmp_path / "b.dcm"), "dicom-seg",
                         database=FakeDicomDatabase(series.files))
    assert pydicom.dcmread(result.path).SegmentSequence == \
        pydicom.dcmread(binary.path).SegmentSequence


def test_probability_export_needs_the_maps_of_one_run(mrml, ct_case, tmp_path):
    from OncoSegCommonLib import segmentations

    case, _, _ = ct_case
    volume, first, _ = _probability_run(mrml, ct_case)
    with pytest.raises(InputError, match="has no probability maps in the scene"):
        export_node(mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn"), volume,
                    str(tmp_path / "p.dcm"), "dicom-seg-fractional", str(case))
    second = _probability_run(mrml, ct_case)[1]  # the same run again, nodes named the same
    # each run's segmentation is linked to its own maps
    assert segmentations.probability_nodes(first.segmentation) == first.probabilities
    assert segmentations.probability_nodes(second.segmentation) == second.probabilities
    # a scene saved before the links: by names alone, which of two same-named maps is unknown
    first.segmentation.RemoveNodeReferenceIDs(segmentations.PROBABILITY_REFERENCE_ROLE)
    with pytest.raises(InputError, match="names 2 volumes"):
        export_node(first.segmentation, volume, str(tmp_path / "p.dcm"),
                    "dicom-seg-fractional", str(case))
    assert not (tmp_path / "p.dcm").exists()
    # the panel hands over the run's own nodes: no name to look up
    result = export_node(first.segmentation, volume, str(tmp_path / "p.dcm"),
                         "dicom-seg-fractional", str(case),
                         probability_nodes={"Bladder": first.probabilities["Bladder"]})
    assert result.segments == ["Bladder"]


@pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)
def test_a_corrected_run_reports_the_volumes_the_node_holds_now(mrml, ct_case, tmp_path):
    """The Export panel's DICOM SR: each segment's volume as the node holds it after the
    reader's corrections (not the run's result.json), TG-263 named like the SEG written
    beside it; with the box unticked, OncoSeg's names."""
    from OncoSegCommonLib.segmentations import set_segments_from_labels

    case, image, segmentation = ct_case
    volume, nodes, _ = _probability_run(mrml, ct_case)
    node = nodes.segmentation
    specs = [s for s in CT_SEGMENTS if s.name in ("Bladder", "Bowel bag")]
    labels = np.zeros(image.GetSize()[::-1], np.uint8)
    for spec in specs:
        labels[segmentation.mask(segmentation.segment(spec.name).id)] = spec.label
    bowel = labels == specs[1].label
    before = int(np.count_nonzero(bowel))
    labels[:, :, : labels.shape[2] // 2][bowel[:, :, : labels.shape[2] // 2]] = 0
    after = int(np.count_nonzero(labels == specs[1].label))  # the reader erased part of it
    assert 0 < after < before
    corrected = sitk.GetImageFromArray(labels)
    corrected.CopyInformation(image)
    set_segments_from_labels(node, corrected, specs)  # the node holds the corrected segments
    case, image, _ = ct_case
    result = export_node(node, volume, str(tmp_path / "sr.dcm"), "dicom-sr", str(case))
    assert result.segments == ["Bladder", "Bag_Bowel"]
    assert dciodvfy_errors(result.path) == []
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000
    groups = hd.sr.srread(result.path).content.get_volumetric_roi_measurement_groups()
    reported = {g.tracking_identifier: g.get_measurements()[0].value for g in groups}
    assert reported["Bag_Bowel"] == pytest.approx(after * voxel_ml, rel=1e-6)
    seg = pydicom.dcmread(tmp_path / "sr.seg.dcm", stop_before_pixels=True)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Bladder", "Bag_Bowel"]
    own = export_node(node, volume, str(tmp_path / "own.dcm"), "rtstruct", str(case),
                      naming="oncoseg")
    assert [r.ROIName for r in pydicom.dcmread(own.path).StructureSetROISequence] == [
        "Bladder", "Bowel bag"]


def test_a_segmentation_under_a_transform_is_refused_before_anything_is_written(mrml, nodes,
                                                                               tmp_path):
    """Its voxels are where they were before the transform moved what is shown: a DICOM SEG
    written from them would not be where the reader saw and corrected it."""
    import vtk

    case, _, volume, node = nodes
    moved = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Moved")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(2, 3, 6.0)
    moved.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(moved.GetID())
    with pytest.raises(InputError, match="lies under the transform 'Moved'"):
        export_node(node, volume, str(tmp_path / "seg.dcm"), "dicom-seg", str(case))
    assert not (tmp_path / "seg.dcm").exists()
