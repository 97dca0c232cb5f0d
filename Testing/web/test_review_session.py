"""The review app's logic on a real MRML scene (slicer-core): cases under a data root, a run,
a correction, accept and export; refusals for paths outside the root and broken cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.segnrrd import read_seg_nrrd
from oncoseg.verbs import phantom


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data root: two rectal cases, a staging case, and a case with a corrupt volume."""
    root = tmp_path_factory.mktemp("review")
    phantom("rectal", root / "rectal", cases=2, seed=11)
    phantom("staging", root / "staging", cases=1, seed=3)
    broken = root / "broken_case"
    broken.mkdir()
    (broken / "t2w.nii.gz").write_bytes(b"not a NIfTI file at all")
    return root


def test_cases_are_listed_and_a_corrupt_one_carries_its_error(root):
    from OncoSegWebLib.cases import find_cases

    cases = {c.id: c for c in find_cases(root)}
    assert sorted(cases) == ["broken_case", "rectal/rectal_000", "rectal/rectal_001",
                             "staging/staging_000"]
    assert sorted(cases["rectal/rectal_000"].volumes) == ["dwi_b0", "dwi_b1000", "t2w"]
    assert "t2w.nii.gz cannot be read" in cases["broken_case"].error
    assert not cases["broken_case"].usable and cases["rectal/rectal_001"].usable


def test_paths_outside_the_data_root_are_refused(root, mrml, tmp_path):
    from OncoSegWebLib.security import inside_root
    from OncoSegWebLib.session import ReviewSession

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link_out").symlink_to(outside)
    try:
        for path in ("../elsewhere", str(outside), "link_out", "rectal/../../x"):
            with pytest.raises(InputError, match="outside the data root"):
                inside_root(root, path)
        session = ReviewSession(mrml, root)
        with pytest.raises(InputError, match="outside the data root"):
            session.open_case("../")
        with pytest.raises(InputError, match="cannot be read"):
            session.open_case("broken_case")
        assert session.case is None and mrml.scene.GetNodesByClass(
            "vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    finally:
        (root / "link_out").unlink()


def test_run_correct_accept_and_export_a_rectal_case(root, mrml):
    from OncoSegWebLib.session import ReviewSession

    session = ReviewSession(mrml, root)
    nodes = session.open_case("rectal/rectal_000")
    before = {n.GetName(): sitk.GetArrayFromImage(sitk.ReadImage(
        str(root / "rectal/rectal_000" / f"{n.GetName()}.nii.gz"))) for n in nodes}
    result = session.run("rectal", device="cpu")
    assert result.segmentation is not None and result.rows, result.summary
    # the rectal logic's own result, through the common interface: candidates
    assert result.summary == f"{len(result.rows)} candidate(s)"
    assert sum(row["selected"] for row in result.rows) == 1
    assert result.segmentation in result.nodes and result.reference in nodes
    from OncoSegCommonLib.segmentations import input_nodes

    assert sorted(n.GetName() for n in input_nodes(result.segmentation)) == [
        "RectalSeg t2w (registered)", "dwi_b0", "dwi_b1000"]  # what a refine click reads

    with pytest.raises(InputError, match="not accepted"):
        session.export("seg.nrrd")
    added = paint_a_block(result.segmentation, result.reference)
    session.accept()
    first = session.export("seg.nrrd")
    second = session.export("seg.nrrd")  # never overwrites: the next free name
    assert first.path.name == "rectal_000-rectal.seg.nrrd"
    assert second.path.name == "rectal_000-rectal-2.seg.nrrd"
    assert first.path.parent == root / "rectal/rectal_000/reviewed"

    exported = sitk.GetArrayFromImage(read_seg_nrrd(first.path).label_image())
    assert np.all(exported[added] > 0), "the painted voxels are in the exported file"
    assert exported.sum() > np.prod([s.stop - s.start for s in added])
    for node in nodes:  # the inputs are untouched
        from OncoSegCommonLib.volumes import image_from_volume_node

        np.testing.assert_array_equal(sitk.GetArrayFromImage(image_from_volume_node(node)),
                                      before[node.GetName()])


def test_staging_case_gives_a_stage_and_no_segmentation(root, mrml):
    from OncoSegWebLib.session import ReviewSession

    session = ReviewSession(mrml, root)
    session.open_case("staging/staging_000")
    result = session.run("staging", device="cpu")
    assert result.segmentation is None and result.summary.startswith(("T2", "T3"))
    assert len(result.rows) == 18 and [r["slice"] for r in result.rows] == list(range(18))
    assert len(result.nodes) == 4  # the score table, the chart and its two series
    with pytest.raises(InputError, match="none to review"):
        session.accept()


def paint_a_block(segmentation_node, reference_node) -> tuple[slice, ...]:
    """What a paint stroke does to the segment: voxels set in its labelmap (z, y, x slices
    on the reference grid)."""
    from oncoseg.rectal.task import TASK
    from OncoSegCommonLib.segmentations import (
        labels_from_segmentation_node,
        set_segments_from_labels,
    )

    labels = labels_from_segmentation_node(segmentation_node, reference_node, TASK.segments)
    array = sitk.GetArrayFromImage(labels)
    block = (slice(2, 4), slice(3, 9), slice(3, 9))
    assert not array[block].any(), "the block is outside the tumour before painting"
    array[block] = 1
    painted = sitk.GetImageFromArray(array)
    painted.CopyInformation(labels)
    set_segments_from_labels(segmentation_node, painted, TASK.segments)
    return block


def test_a_cancelled_run_adds_nothing(root, mrml):
    from oncoseg.errors import Cancelled
    from oncoseg.progress import CancelToken
    from OncoSegCommonLib.scenes import node_ids
    from OncoSegWebLib.session import ReviewSession

    session = ReviewSession(mrml, root)
    session.open_case("rectal/rectal_001")
    before = node_ids(mrml.scene)
    planned = session.plan("rectal", device="cpu")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        planned.compute(None, token)
    assert node_ids(mrml.scene) == before and session.result is None


def test_a_folder_of_several_series_opens_each_and_exports_against_its_own(tmp_path, mrml):
    """A PACS export puts a study's series in one folder (here two CT series, one of them a
    Dixon-like pair of acquisitions sharing a UID): the case lists each, opens each, and a
    volume's exports reference the series it was read from."""
    import shutil

    import pydicom
    from dicom_ct import set_attributes

    from OncoSegCommonLib.export import series_of_volume
    from OncoSegWebLib.session import ReviewSession

    phantom("oar-ct", tmp_path / "src", cases=1, seed=2)
    source = sorted((tmp_path / "src" / "oarct_000").glob("CT_*.dcm"))[:12]
    folder = tmp_path / "study" / "case"
    uids = {}
    for series, kinds in (("venous", [None]), ("dixon", ["W", "F"])):
        uid = pydicom.uid.generate_uid()
        for kind in kinds:
            files = []
            for path in source:
                target = folder / f"{series}_{kind or ''}_{path.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                files.append(target)
            set_attributes(files, SeriesInstanceUID=uid, SeriesDescription=series,
                           **({"ImageType": ["DERIVED", "PRIMARY", kind]} if kind else {}))
            for target in files:
                ds = pydicom.dcmread(target)
                ds.SOPInstanceUID = pydicom.uid.generate_uid()
                ds.save_as(target)
        uids[series] = uid
    session = ReviewSession(mrml, tmp_path / "study")
    (case,) = session.cases()
    assert case.usable, case.error
    assert sorted(case.volumes) == ["dixon (ImageType DERIVED\\PRIMARY\\F)",
                                    "dixon (ImageType DERIVED\\PRIMARY\\W)", "venous"]
    nodes = dict(zip(case.volumes, session.open_case(case.id), strict=True))
    for name, node in nodes.items():
        series = series_of_volume(node)
        assert series.uid == uids[name.split()[0]] and len(series.files) == 12
        assert series.part == ("" if name == "venous" else name.split("(")[1][:-1])


def test_a_dicom_ct_case_exports_every_dicom_object(tmp_path, mrml):
    """A DICOM series case: the exports (the segmentation, the run's probability maps, the
    volumes as a report) reference the series it was read from; the page names the model and
    its licences."""
    import pydicom

    from OncoSegWebLib.session import ReviewSession

    phantom("oar-ct", tmp_path / "ct", cases=1, seed=2)
    session = ReviewSession(mrml, tmp_path)
    (case,) = session.cases()
    assert case.id == "ct/oarct_000" and case.usable
    session.open_case(case.id)
    result = session.run("oar-ct", device="cpu")
    assert result.segmentation is not None and result.rows
    assert result.model_line == ("Model: oar-ct-demo.safetensors (licence Apache-2.0; "
                                 "training data: synthetic phantoms made by OncoSeg (no "
                                 "patient data))")
    session.accept()
    series_uid = pydicom.dcmread(next((tmp_path / case.id).glob("CT_*.dcm")),
                                 stop_before_pixels=True).SeriesInstanceUID
    for fmt, sop_class in (("dicom-seg", "1.2.840.10008.5.1.4.1.1.66.4"),
                           ("rtstruct", "1.2.840.10008.5.1.4.1.1.481.3"),
                           ("dicom-seg-fractional", "1.2.840.10008.5.1.4.1.1.66.4"),
                           ("dicom-sr", "1.2.840.10008.5.1.4.1.1.88.22")):
        written = session.export(fmt)
        assert written.path.name == f"oarct_000-oar-ct-{fmt}.dcm"
        dataset = pydicom.dcmread(written.path)
        assert dataset.SOPClassUID == sop_class
        if fmt == "rtstruct":
            referenced = dataset.ReferencedFrameOfReferenceSequence[0] \
                .RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
        elif fmt == "dicom-sr":
            referenced = dataset.CurrentRequestedProcedureEvidenceSequence[0] \
                .ReferencedSeriesSequence[0].SeriesInstanceUID
        else:
            referenced = dataset.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert referenced == series_uid
        if fmt == "dicom-seg-fractional":
            assert dataset.SegmentationType == "FRACTIONAL"
            assert len(dataset.SegmentSequence) == len(result.probabilities) == 5


def test_the_app_offers_every_registered_task_and_refuses_others(mrml):
    from oncoseg.tasks import all_tasks
    from OncoSegWebLib.runners import plan_run, task_titles

    assert task_titles() == {t.name: t.title for t in all_tasks()}
    assert {"rectal", "oar-ct", "oar-mr", "staging", "brain"} <= set(task_titles())
    with pytest.raises(InputError, match="task: 'liver' is not one of"):
        plan_run(mrml, "liver")


def test_a_cohorts_flagged_cases_come_first_and_open_with_their_stored_result(root, mrml):
    import json

    from oncoseg import cohort
    from oncoseg.datasets import read_dataset
    from OncoSegWebLib.session import ReviewSession

    dataset = read_dataset(root / "rectal", roles=["t2w", "dwi_b0", "dwi_b1000"])
    out = root / "runs" / "cohort"
    cohort.predict_cohort("rectal", dataset, out, write=lambda line: None)
    flagged = out / "cases" / "rectal_001" / "result.json"  # a reader's attention, by hand
    document = json.loads(flagged.read_text())
    natural = len(json.loads((out / "cases" / "rectal_000" / "result.json").read_text())[
        "details"]["quality"])  # whatever the checks found on the other case
    document["details"]["quality"] += [{"kind": "output", "check": "volume",
                                        "subject": "Rectal tumour", "reason": "look here"}] * (
        natural + 1)
    flagged.write_text(json.dumps(document))
    cohort.write_summary("rectal", dataset, out)
    try:
        session = ReviewSession(mrml, root)
        listed = [c.id for c in session.cases()]
        # most flags first, then the other cohort case, then the input cases
        assert listed[:2] == ["runs/cohort/cases/rectal_001", "runs/cohort/cases/rectal_000"]
        assert "runs/cohort/cases/rectal_001/probabilities" not in listed  # no result as input
        nodes = session.open_case("runs/cohort/cases/rectal_001")
        assert sorted(n.GetName() for n in nodes) == ["dwi_b0", "dwi_b1000", "t2w"]
        result = session.result
        assert result is not None and result.segmentation is not None
        assert "look here" in result.summary and result.reference.GetName() == "dwi_b0"
        # refine reads the sequences stored where the model read them: not the T2w, which
        # the run registered onto the b0 grid (result.json's details say so)
        from OncoSegCommonLib.segmentations import input_nodes

        assert [n.GetName() for n in input_nodes(result.segmentation)] == ["dwi_b0",
                                                                           "dwi_b1000"]
        session.accept()
        exported = session.export("seg.nrrd")
        assert exported.path.parent == out / "cases" / "rectal_001" / "reviewed"
        stored = sitk.ReadImage(str(out / "cases" / "rectal_001" / "labels.nii.gz"))
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(read_seg_nrrd(exported.path).label_image()) > 0,
            sitk.GetArrayFromImage(stored) > 0)
    finally:
        import shutil

        shutil.rmtree(root / "runs")


def test_exports_without_file_endings_and_dicomdir_trees_offer_every_series(tmp_path, mrml):
    """PACS and CD exports name files without an ending (IM000001, UIDs): such a case folder
    was not listed at all (DICOM was recognised by '.dcm'). pydicom's real DICOMDIR tree holds
    four series called FAST LOCALIZER, two of them number 1 after the first: one of them was
    listed under a name the next one overwrote, and never offered."""
    import shutil

    import pydicom

    from OncoSegWebLib.cases import find_cases
    from OncoSegWebLib.session import ReviewSession

    phantom("oar-ct", tmp_path / "src", cases=1, seed=2)
    case = tmp_path / "root" / "pacs"
    case.mkdir(parents=True)
    for k, path in enumerate(sorted((tmp_path / "src" / "oarct_000").glob("CT_*.dcm"))[:12]):
        shutil.copy(path, case / f"IM{k:06d}")
    shutil.copytree(Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests",
                    tmp_path / "root" / "cd")
    cases = {c.id: c for c in find_cases(tmp_path / "root")}
    assert sorted(cases) == ["cd", "pacs"]
    localizers = [n for n in cases["cd"].volumes if n.startswith("FAST LOCALIZER")]
    assert len(localizers) == 4 and len(set(localizers)) == 4
    assert len({cases["cd"].series[n] for n in localizers}) == 4  # four series, four UIDs
    session = ReviewSession(mrml, tmp_path / "root")
    (node,) = session.open_case("pacs")
    assert node.GetImageData().GetDimensions()[2] == 12


def test_a_cohort_case_read_from_a_pacs_folder_opens_the_series_it_was_read_from(tmp_path,
                                                                                 mrml):
    """A cohort case whose input is a folder of several series (a manifest row with its series
    column): its result records the series, and the review app opens that one (the folder
    alone would be refused as holding two)."""
    import shutil

    import pydicom
    from dicom_ct import set_attributes

    from oncoseg import cohort
    from oncoseg.datasets import read_dataset
    from OncoSegWebLib.session import ReviewSession

    phantom("oar-ct", tmp_path / "src", cases=1, seed=2)
    folder = tmp_path / "root" / "pacs" / "patient"
    folder.mkdir(parents=True)
    ct = sorted((tmp_path / "src" / "oarct_000").glob("CT_*.dcm"))
    for path in ct:
        shutil.copy(path, folder / path.name)
    other = [shutil.copy(path, folder / f"other_{path.name}") for path in ct[:12]]
    set_attributes(other, SeriesInstanceUID=pydicom.uid.generate_uid(),
                   SeriesDescription="other")
    for path in other:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path)
    uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID)
    manifest = tmp_path / "root" / "pacs" / "cohort.csv"
    manifest.write_text(f"case_id,role,path,series\np1,ct,patient,{uid}\n")
    out = tmp_path / "root" / "run"
    cohort.predict_cohort("oar-ct", read_dataset(manifest, roles=["ct"]), out,
                          write=lambda line: None)
    cohort.write_summary("oar-ct", read_dataset(manifest, roles=["ct"]), out)
    session = ReviewSession(mrml, tmp_path / "root")
    case = next(c for c in session.cases() if c.id == "run/cases/p1")
    assert case.series == {"ct": uid}
    (node,) = session.open_case(case.id)
    assert node.GetImageData().GetDimensions()[2] == len(ct)


def test_freesurfer_and_minc_volumes_are_offered_and_a_sheared_one_says_why(tmp_path, mrml):
    """A FreeSurfer MGZ (which SimpleITK cannot read) and a MINC 2 file (which ITK 5.4 reads
    turned round) are volumes of a case, opened where nibabel places them; nibabel's own
    sheared test.mgz marks its case with the reason."""
    nib = pytest.importorskip("nibabel")
    from oncoseg.io.volumes import read_volume
    from OncoSegCommonLib.volumes import image_from_volume_node
    from OncoSegWebLib.cases import find_cases
    from OncoSegWebLib.session import ReviewSession

    data = Path(nib.__file__).parent / "tests" / "data"
    good, sheared = tmp_path / "root" / "brain_001", tmp_path / "root" / "brain_002"
    good.mkdir(parents=True)
    sheared.mkdir()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 20.0)
    nib.save(nib.MGHImage(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), affine),
             good / "t1.mgz")
    (good / "flair.mnc").write_bytes((data / "minc2_1_scale.mnc").read_bytes())
    (sheared / "t1.mgz").write_bytes((data / "test.mgz").read_bytes())
    cases = {c.id: c for c in find_cases(tmp_path / "root")}
    assert sorted(cases["brain_001"].volumes) == ["flair", "t1"] and cases["brain_001"].usable
    assert "t1.mgz cannot be read (its voxel axes are not at right angles" in \
        cases["brain_002"].error
    session = ReviewSession(mrml, tmp_path / "root")
    nodes = session.open_case("brain_001")
    files = {"t1": good / "t1.mgz", "flair": good / "flair.mnc"}
    for node in nodes:
        expected = read_volume(files[node.GetName()]).image
        shown = image_from_volume_node(node)
        np.testing.assert_allclose(shown.GetOrigin(), expected.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(shown.GetDirection(), expected.GetDirection(), atol=1e-6)
    assert any("flair: flair.mnc is a MINC file" in note for note in session.reading_notes)


def test_linked_series_folders_open_inside_the_data_root_only(tmp_path, mrml):
    """A case whose series folder is a link: followed where it leads inside the data root,
    never outside it (the page must not read or list what lies beyond the root)."""
    from dicom_ct import uniform_series

    from OncoSegWebLib.cases import find_cases
    from OncoSegWebLib.session import ReviewSession

    root = tmp_path / "root"
    uniform_series(root / ".store" / "ct", count=5)  # hidden: listed only through the link
    uniform_series(tmp_path / "elsewhere" / "ct", count=5)
    (root / "inside_001").mkdir()
    (root / "inside_001" / "series").symlink_to(root / ".store" / "ct",
                                                target_is_directory=True)
    (root / "outside_001").mkdir()
    (root / "outside_001" / "series").symlink_to(tmp_path / "elsewhere" / "ct",
                                                 target_is_directory=True)
    cases = {c.id: c for c in find_cases(root)}
    assert "inside_001/series" in cases or "inside_001" in cases
    assert not any(c.startswith("outside_001") for c in cases)
    session = ReviewSession(mrml, root)
    inside = next(c for c in cases if c.startswith("inside_001"))
    [node] = session.open_case(inside)
    assert node.GetImageData().GetDimensions()[2] == 5


def test_a_case_with_a_segmentation_beside_its_scan_opens_the_scan(tmp_path, mrml):
    """A reader's 'tumour.seg.nrrd' beside the scan was listed as a second volume; since
    methods refuse a segmentation as a scan, the case would not open. It is labels."""
    from oncoseg.io.segnrrd import Segment, Segmentation, write_seg_nrrd
    from OncoSegWebLib.cases import find_cases
    from OncoSegWebLib.session import ReviewSession

    root = tmp_path / "root"
    (root / "case_001").mkdir(parents=True)
    scan = sitk.Image(8, 8, 4, sitk.sitkInt16)
    sitk.WriteImage(scan, str(root / "case_001" / "ct.nii.gz"))
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:5, 2:5] = True
    write_seg_nrrd(Segmentation.from_masks(sitk.Cast(scan, sitk.sitkUInt8), [mask], [
        Segment("t", "Tumour", (0.9, 0.2, 0.2))]), root / "case_001" / "tumour.seg.nrrd")
    (case,) = find_cases(root)
    assert list(case.volumes) == ["ct"] and not case.error
    [node] = ReviewSession(mrml, root).open_case("case_001")
    assert node.GetImageData().GetDimensions() == (8, 8, 4)


def test_linked_files_open_inside_the_data_root_only(tmp_path, mrml):
    """Linked files, as linked folders: a scan file or a DICOM slice that is a link out of the
    data root is neither listed nor read (until 2026-12-07 both were: only linked folders were
    confined), and the case says why it does not open."""
    from dicom_ct import uniform_series

    from OncoSegWebLib.cases import find_cases
    from OncoSegWebLib.session import ReviewSession

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    scan = sitk.Image(8, 8, 4, sitk.sitkInt16)
    sitk.WriteImage(scan, str(elsewhere / "ct.nii.gz"))
    (root / "store").mkdir(parents=True)
    sitk.WriteImage(scan, str(root / "store" / "ct.nii.gz"))
    (root / "linked_in").mkdir()
    (root / "linked_in" / "ct.nii.gz").symlink_to(root / "store" / "ct.nii.gz")
    (root / "linked_out").mkdir()
    (root / "linked_out" / "ct.nii.gz").symlink_to(elsewhere / "ct.nii.gz")
    slices = uniform_series(elsewhere / "series", count=5)
    (root / "slices_out").mkdir()
    for path in slices:  # a series folder whose slices are links out of the root
        (root / "slices_out" / path.name).symlink_to(path)
    cases = {c.id: c for c in find_cases(root)}
    assert not cases["linked_in"].error
    assert cases["linked_out"].error == "ct.nii.gz links outside the data root and is not opened"
    assert not cases["linked_out"].volumes
    assert "slices_out" not in cases  # none of its slices is read: no series there
    session = ReviewSession(mrml, root)
    [node] = session.open_case("linked_in")
    assert node.GetImageData().GetDimensions() == (8, 8, 4)
    with pytest.raises(InputError, match="links outside the data root"):
        session.open_case("linked_out")
