"""Export against things no one here wrote: dciodvfy (David Clunie's DICOM validator) judges the
DICOM SEG and RTSTRUCT, highdicom reads the SEG back, and the phantom's own RTSTRUCT is the
truth the exported contours are compared with."""

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_ct import DCIODVFY, DCIODVFY_MISSING, dciodvfy_errors, phantom_ct_case

from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.export import export_file, export_segmentation, interpreted_type, load_segmentation
from oncoseg.io.rtstruct import read_rtstruct
from oncoseg.io.segnrrd import Segmentation, write_seg_nrrd
from oncoseg.io.volumes import choose_dicom_series
from oncoseg.metrics import dice


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory):
    case, image, segmentation = phantom_ct_case(tmp_path_factory.mktemp("ct"))
    assert len(segmentation.segments) >= 3
    return case, image, segmentation


needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason=DCIODVFY_MISSING)


@needs_dciodvfy
@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_dicom_exports_pass_dciodvfy(ct_case, tmp_path, fmt):
    case, _, segmentation = ct_case
    result = export_segmentation(segmentation, tmp_path / "out.dcm", fmt,
                                 choose_dicom_series(case))
    assert dciodvfy_errors(result.path) == []
    broken = pydicom.dcmread(result.path)  # the validator is awake: a required attribute gone
    del broken.SeriesInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm")


def test_dicom_seg_read_back_by_highdicom_gives_the_same_voxels_slice_by_slice(ct_case, tmp_path):
    case, _, segmentation = ct_case
    series = choose_dicom_series(case)
    export_segmentation(segmentation, tmp_path / "seg.dcm", "dicom-seg", series)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    numbers = list(range(1, len(segmentation.segments) + 1))
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=numbers,
                                               ignore_spatial_locations=False)
    for n, segment in enumerate(segmentation.segments):
        truth = segmentation.mask(segment.id)
        assert truth.any()
        for k in range(truth.shape[0]):  # slice k refers to series file k: orientation kept
            np.testing.assert_array_equal(frames[k, :, :, n] > 0, truth[k])
    described = {d.segment_label: d for d in seg.SegmentSequence}
    bladder = described["Bladder"]
    assert bladder.SegmentedPropertyTypeCodeSequence[0].CodeValue == "89837001"
    left = described["Femoral head L"].SegmentedPropertyTypeCodeSequence[0]
    assert left.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"


def test_rtstruct_read_back_matches_every_structure(ct_case, tmp_path):
    case, image, segmentation = ct_case
    export_segmentation(segmentation, tmp_path / "rs.dcm", "rtstruct", choose_dicom_series(case))
    back = read_rtstruct(tmp_path / "rs.dcm")
    assert back.frame_of_reference_uid == pydicom.dcmread(
        next(case.glob("CT_*.dcm")), stop_before_pixels=True).FrameOfReferenceUID
    for segment in segmentation.segments:
        structure = back.structure(segment.name)
        assert structure.color == tuple(round(255 * c) for c in segment.color)
        assert dice(back.mask(segment.name, image), segmentation.mask(segment.id)) >= 0.95
    assert back.structure("Nodal CTV").interpreted_type == "CTV"
    assert back.structure("Bladder").interpreted_type == "ORGAN"


def test_segmentation_on_another_grid_is_resampled_and_one_elsewhere_refused(ct_case, tmp_path):
    case, image, segmentation = ct_case
    coarse = sitk.Image([s // 2 for s in image.GetSize()], sitk.sitkUInt8)
    coarse.SetSpacing([2 * s for s in image.GetSpacing()])
    coarse.SetOrigin(image.GetOrigin())
    moved = Segmentation([sitk.Resample(layer, coarse, sitk.Transform(),
                                        sitk.sitkNearestNeighbor)
                          for layer in segmentation.layers], segmentation.segments)
    result = export_segmentation(moved, tmp_path / "rs.dcm", "rtstruct",
                                 choose_dicom_series(case))
    assert "resampled" in result.messages[0]
    bladder = segmentation.segment("Bladder").id
    back = read_rtstruct(tmp_path / "rs.dcm").mask("Bladder", image)
    assert dice(back, segmentation.mask(bladder)) > 0.8
    far = Segmentation([sitk.Image(layer) for layer in moved.layers], moved.segments)
    for layer in far.layers:
        layer.SetOrigin([o + 5000 for o in image.GetOrigin()])
    with pytest.raises(InputError, match="does not overlap"):
        export_segmentation(far, tmp_path / "far.dcm", "rtstruct", choose_dicom_series(case))
    assert not (tmp_path / "far.dcm").exists()


def test_cli_exports_a_seg_nrrd_and_never_overwrites_unasked(ct_case, tmp_path, capsys):
    case, _, segmentation = ct_case
    write_seg_nrrd(segmentation, tmp_path / "in.seg.nrrd")
    out = tmp_path / "seg.dcm"
    args = ["export", str(tmp_path / "in.seg.nrrd"), "--format", "dicom-seg",
            "--reference", str(case), "--output", str(out)]
    assert main(args) == 0
    assert "dicom-seg with" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes() != before  # a new SOP instance
    assert main(["export", str(tmp_path / "in.seg.nrrd"), "--format", "rtstruct",
                 "--output", str(tmp_path / "rs.dcm")]) == 2
    assert "needs the DICOM series" in capsys.readouterr().err
    assert list(tmp_path.glob(".*")) == []  # no temporary files left behind


def test_label_maps_export_as_nifti_nrrd_and_seg_nrrd_named_after_the_task(ct_case, tmp_path):
    _, image, segmentation = ct_case
    labels = sitk.Image(segmentation.geometry)
    array = np.zeros(sitk.GetArrayViewFromImage(labels).shape, np.uint8)
    array[segmentation.mask(segmentation.segment("Bladder").id)] = 3
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    loaded = load_segmentation(tmp_path / "labels.nii.gz", task="oar-ct")
    assert [s.name for s in loaded.segments] == ["Bladder"]
    assert interpreted_type(loaded.segments[0]) == "ORGAN"
    for fmt, name in (("seg.nrrd", "x.seg.nrrd"), ("nrrd", "x.nrrd"), ("nifti", "x.nii.gz")):
        result = export_file(tmp_path / "labels.nii.gz", tmp_path / name, fmt, task="oar-ct")
        assert result.path.exists()
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.nii.gz")))
    np.testing.assert_array_equal(back == 1, array == 3)  # one segment: label 1
    with pytest.raises(InputError, match="ends in"):
        export_file(tmp_path / "labels.nii.gz", tmp_path / "x.dcm", "nifti")
