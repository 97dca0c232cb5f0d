"""Data set readers on data written by the phantom generators, and on broken copies of it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_runs import phantom_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoseg.cli import main
from oncoseg.datasets import read_dataset
from oncoseg.errors import InputError

ROLES = ["t2w", "dwi_b0", "dwi_b1000"]
# each written once, by `oncoseg phantom`, for the tests of its layout
rectal_set = phantom_fixture("rectal", 3)
staging_set = phantom_fixture("staging", 4)
kaggle_set = phantom_fixture("oar-mr", 2)
ct_cohort = phantom_fixture("oar-ct", 3)


def copy(root, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return target


def test_phantom_set_reads_back_with_auto_layout(rectal_set):
    dataset = read_dataset(rectal_set, "auto", ROLES)
    assert dataset.layout == "folders"
    assert [c.id for c in dataset.cases] == ["rectal_000", "rectal_001", "rectal_002"]
    case = dataset.cases[0]
    assert list(case.images) == ROLES and list(case.labels) == ["label"]
    assert case.info["misalignment_dwi_vs_t2w"]["amplitude_mm"] == 3.0
    label = sitk.ReadImage(str(case.labels["label"]))
    assert label.GetSize() == sitk.ReadImage(str(case.images["dwi_b0"])).GetSize()
    assert sitk.GetArrayViewFromImage(label).sum() > 50


def test_a_labels_partial_volume_is_read_beside_it_and_agrees_with_it(rectal_set):
    """The rectal phantom writes each voxel's share inside the tumour (label_fraction, 27
    samples per voxel) beside the label: read as the label's partial volume, neither a second
    reader's label nor an image; at 0.5 it is the label but for a few edge voxels."""
    case = read_dataset(rectal_set, "auto", ROLES).cases[0]
    assert list(case.labels) == ["label"] and list(case.images) == ROLES
    assert case.fractions == {"label": rectal_set / "rectal_000" / "label_fraction.nii.gz"}
    assert "unused" not in case.info
    share = sitk.GetArrayFromImage(sitk.ReadImage(str(case.fractions["label"])))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels["label"]))) > 0
    assert share.min() >= 0 and share.max() <= 1
    edge = (share > 0) & (share < 1)
    assert edge.sum() > 0.5 * label.sum()  # thick slices: most tumour voxels are partial
    assert ((share >= 0.5) != label).sum() < 0.05 * label.sum()
    assert np.allclose(share * 27, np.round(share * 27), atol=1e-4)  # 27 samples per voxel


def test_phantoms_are_deterministic(rectal_set, tmp_path):
    assert main(["phantom", "rectal", "--cases", "1", "--output", str(tmp_path / "again"),
                 "--progress", "none"]) == 0
    for name in ("t2w.nii.gz", "label.nii.gz"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(rectal_set / "rectal_000" / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again" / "rectal_000" / name)))
        np.testing.assert_array_equal(a, b)


def test_missing_channel_file_names_the_case(rectal_set, tmp_path):
    root = copy(rectal_set, tmp_path)
    (root / "rectal_001" / "dwi_b1000.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case 'rectal_001'.*dwi_b1000 file is missing"):
        read_dataset(root, "auto", ROLES)


def test_partial_cases_are_read_only_where_every_role_is_optional(rectal_set, tmp_path):
    """The brain's four sequences are each optional (paper 004 trains with cases lacking one),
    so the folders layout reads such a case with what it has; a task with required roles
    (rectal) still refuses it, as does a case with none of the roles."""
    root = copy(rectal_set, tmp_path)
    (root / "rectal_001" / "dwi_b1000.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case 'rectal_001'.*dwi_b1000 file is missing"):
        read_dataset(root, "folders", ROLES, partial=False)
    case = read_dataset(root, "folders", ROLES, partial=True).cases[1]
    assert sorted(case.images) == ["dwi_b0", "t2w"] and case.info["missing"] == ["dwi_b1000"]
    for name in ("t2w", "dwi_b0"):
        (root / "rectal_001" / f"{name}.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case 'rectal_001'.*t2w file is missing"):
        read_dataset(root, "folders", ROLES, partial=True)


def test_a_brain_data_set_in_folders_may_lack_a_sequence(tmp_path):
    from oncoseg.tasks import get_task
    from oncoseg.verbs import data_roles

    image = sitk.Image(8, 8, 4, sitk.sitkFloat32) + 1.0
    for case, sequences in (("a", ("t1", "t1c", "t2", "flair")), ("b", ("t1", "t1c", "t2"))):
        (tmp_path / case).mkdir()
        for sequence in sequences:
            sitk.WriteImage(image, str(tmp_path / case / f"{sequence}.nii.gz"))
        sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt8), str(tmp_path / case / "label.nii.gz"))
    task = get_task("brain")
    data = read_dataset(tmp_path, "folders", data_roles(task), partial=not task.required_roles)
    assert [sorted(c.images) for c in data.cases] == [["flair", "t1", "t1c", "t2"],
                                                       ["t1", "t1c", "t2"]]
    assert data.cases[1].info["missing"] == ["flair"]


def test_label_on_the_wrong_grid_names_the_case(rectal_set, tmp_path):
    root = copy(rectal_set, tmp_path)
    label = sitk.ReadImage(str(root / "rectal_002" / "label.nii.gz"))
    sitk.WriteImage(label[::2, ::2, :], str(root / "rectal_002" / "label.nii.gz"))
    with pytest.raises(InputError, match=r"case 'rectal_002'.*does not lie on the grid"):
        read_dataset(root, "auto", ROLES)


def _labelled_case(tmp_path, role, values, dtype):
    """A case whose label file holds ``values``, one per slice (the rest background)."""
    from imaging import make_image

    from oncoseg.datasets.base import Case

    image = make_image()
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype)
    for k, value in enumerate(values):
        array[k] = value
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "label.nii.gz"))
    return Case("case_7", {role: tmp_path / "image.nii.gz"},
                {"label": tmp_path / "label.nii.gz"}), image, array


@pytest.mark.parametrize(("values", "dtype", "task", "message"), [
    ((0, 1, 7), np.uint8, "oar-ct", r"holds label\(s\) 7, which the task does not have \(its "
     r"labels: 0, 1, 2, 3, 4, 5\)"),
    ((0, 0.5, 1), np.float32, "oar-ct", r"holds values that are not whole numbers \(e\.g\. "
     r"0\.5\)"),
    ((0, 1, 4), np.int16, "oar-mr", r"holds label\(s\) 4, which the task does not have")])
def test_labels_a_task_does_not_have_are_refused_by_case(tmp_path, values, dtype, task, message):
    """A label the task does not have, or a label file resampled with interpolation, was taken
    for background in training without a word (until 2026-12-06); refused as nnU-Net's data set
    check refuses it, here through each task's own reading of a case's labels."""
    from oncoseg.oar.ct.training import case_labels
    from oncoseg.oar.mr.training import case_masks

    role = "ct" if task == "oar-ct" else "mr"
    case, image, array = _labelled_case(tmp_path, role, values, dtype)
    read = case_labels if task == "oar-ct" else case_masks
    with pytest.raises(InputError, match=rf"case 'case_7': label file label.nii.gz {message}"):
        read(case, image)
    if dtype != np.float32:  # without the task's labels, any whole numbers pass
        np.testing.assert_array_equal(case.label_on(image, role), array)


def test_unsafe_case_id_names_the_case(rectal_set, tmp_path):
    root = copy(rectal_set, tmp_path)
    (root / "rectal_000").rename(root / "rectal 000")
    with pytest.raises(InputError, match=r"case 'rectal 000'.*not a safe case id"):
        read_dataset(root, "auto", ROLES)


def test_unknown_layout_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="matches no known data set layout"):
        read_dataset(tmp_path)
    with pytest.raises(InputError, match="'kaggle-x' is not a known layout"):
        read_dataset(tmp_path, "kaggle-x")


def test_split_by_patient_is_reproducible_and_saved(rectal_set, tmp_path):
    dataset = read_dataset(rectal_set, "auto", ROLES)
    for case in dataset.cases:
        case.patient = "p1" if case.id != "rectal_002" else "p2"
    train, validation = dataset.split(0.5, seed=4, save_to=tmp_path / "split.json")
    patients = {c.patient for c in train} & {c.patient for c in validation}
    assert not patients and train and validation
    saved = json.loads((tmp_path / "split.json").read_text(encoding="utf-8"))
    assert saved["fingerprint"] == dataset.fingerprint()
    again = dataset.split(0.9, seed=99, save_to=tmp_path / "split.json")  # the saved one wins
    assert [c.id for c in again[0]] == [c.id for c in train]


def test_nnunet_layout_written_by_the_generator_reads_back(tmp_path):
    root = tmp_path / "not-yet-there" / "Dataset501_Rectal"  # parents are created
    assert main(["phantom", "rectal", "--cases", "2", "--layout", "nnunet", "--output",
                 str(root), "--progress", "none"]) == 0
    assert sorted(p.name for p in (root / "imagesTr").iterdir())[:3] == [
        "rectal_000_0000.nii.gz", "rectal_000_0001.nii.gz", "rectal_000_0002.nii.gz"]
    dataset = read_dataset(root, "auto", ROLES)
    assert dataset.layout == "nnunet"
    assert [c.id for c in dataset.cases] == ["rectal_000", "rectal_001"]
    assert dataset.cases[1].images["dwi_b0"].name == "rectal_001_0001.nii.gz"
    assert dataset.cases[0].info["labels"] == {"background": 0, "Rectal tumour": 1}
    (root / "imagesTr" / "rectal_001_0002.nii.gz").unlink()
    missing = r"case 'rectal_001'.*dwi_b1000 file rectal_001_0002.nii.gz is missing"
    with pytest.raises(InputError, match=missing):
        read_dataset(root, "auto", ROLES)
    with pytest.raises(InputError, match="has 3 channels"):
        read_dataset(root, "nnunet", ["t2w"])


@pytest.mark.parametrize(("task", "role", "prefix"), [("oar-ct", "ct", "oarct_000"),
                                                     ("oar-mr", "mr", "case1_day")])
def test_nnunet_layout_of_tasks_whose_own_layout_is_not_nifti(tmp_path, task, role, prefix):
    """OAR-CT's phantoms are DICOM series with RT structure sets, the GI ones PNG slices with
    run-length masks: `--layout nnunet` ended in exit 1 (IsADirectoryError) until 2026-12-06.
    The images are converted and the labels are what the task itself reads from the case."""
    from oncoseg.io.volumes import read_image, read_volume
    from oncoseg.method import method_of

    for layout in ("nnunet", "native"):
        assert main(["phantom", task, "--cases", "1", "--seed", "9", "--layout", layout,
                     "--output", str(tmp_path / layout), "--progress", "none"]) == 0
    (case,) = read_dataset(tmp_path / "nnunet", "nnunet", [role]).cases
    (source,) = read_dataset(tmp_path / "native", "auto", [role]).cases
    assert case.id == source.id and case.id.startswith(prefix)
    image = read_image(case.images[role])
    expected = read_volume(source.images[role], source.info.get("series_uid")).image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  sitk.GetArrayFromImage(expected))
    assert image.GetOrigin() == pytest.approx(expected.GetOrigin())
    labels = sitk.GetArrayFromImage(read_image(case.labels["label"]))
    np.testing.assert_array_equal(labels, method_of(task).reference_labels(source, expected)[0])
    assert len(np.unique(labels)) >= 3


def test_staging_table_reads_back(staging_set):
    dataset = read_dataset(staging_set, "auto", ["t2w"])
    assert dataset.layout == "staging"
    assert [c.info["stage"] for c in dataset.cases] == ["T2", "T3", "T2", "T3"]
    assert len(dataset.cases[0].info["roi_lps_mm"]) == 6


@pytest.mark.parametrize(("row", "message"), [
    ("../staging_000,T2,", r"case '\.\./staging_000'.*not a safe case id"),
    ("staging_000,T4,", r"case 'staging_000': has stage 'T4'.*expected T2 or T3"),
    ("staging_009,T2,", r"case 'staging_009': is listed.*but has no folder"),
    ("staging_000,T2,1 2 3", r"case 'staging_000': has an ROI of 3 numbers"),
])
def test_broken_staging_tables_name_the_case(staging_set, tmp_path, row, message):
    root = copy(staging_set, tmp_path)
    (root / "staging.csv").write_text(f"case_id,stage,roi_lps_mm\n{row}\n", encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_dataset(root, "auto", ["t2w"])


@pytest.mark.parametrize(("layout", "first", "enhancing"), [
    ("brats2021", "BraTS2021_00000", 4), ("brats2023", "BraTS-GLI-00000-000", 3)])
def test_brats_namings_read_back(tmp_path, layout, first, enhancing):
    root = tmp_path / layout
    assert main(["phantom", "brain", "--cases", "2", "--layout", layout, "--output", str(root),
                 "--progress", "none"]) == 0
    dataset = read_dataset(root, "auto", ["t1", "t1c", "t2", "flair"])
    assert dataset.layout == "brats"
    case = dataset.cases[0]
    assert case.id == first and case.info["label_map"] == {str(enhancing): 3}
    values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(case.labels["label"])))))
    assert values == {0, 1, 2, enhancing}
    # a missing sequence: the case is read without it and says so (paper 004 pretrains its
    # subnetworks on such cases; the brain task's inputs are all optional)
    case.images["flair"].unlink()
    again = read_dataset(root, "auto", ["t1", "t1c", "t2", "flair"]).cases[0]
    assert sorted(again.images) == ["t1", "t1c", "t2"] and again.info["missing"] == ["flair"]


def test_kaggle_layout_reads_back(kaggle_set):
    from oncoseg.datasets.kaggle import read_masks, read_scan

    dataset = read_dataset(kaggle_set)
    assert dataset.layout == "kaggle-gi"
    assert all(c.id.startswith(c.patient + "_day") for c in dataset.cases)
    case = dataset.cases[0]
    image = read_scan(case.images["mr"], case.id)
    assert image.GetSize() == (128, 128, 40) and image.GetSpacing() == (1.5, 1.5, 3.0)
    masks = read_masks(case)
    assert all(m.shape == (40, 128, 128) and m.any() for m in masks.values())
    assert not any(m[0].any() for m in masks.values())  # the first slice shows no organ


def test_a_scan_with_a_missing_or_damaged_slice_is_refused_by_name(kaggle_set, tmp_path):
    """Slices are stacked 3 mm apart by their numbers: a gap would put every later slice in
    the wrong place; a truncated PNG ended in exit 1 (PIL's OSError) until 2026-12-06."""
    from oncoseg.io.png_slices import read_scan

    root = copy(kaggle_set, tmp_path)
    case = read_dataset(root).cases[0]
    scans = Path(case.images["mr"])
    tenth = sorted(scans.glob("slice_0010_*.png"))[0]
    tenth.write_bytes(tenth.read_bytes()[:300])
    with pytest.raises(InputError, match=rf"case '{case.id}': slice {tenth.name} cannot be "
                       "read"):
        read_scan(scans, case.id)
    tenth.unlink()
    with pytest.raises(InputError, match=r"has slices 1 to 40 .* with 1 missing \(10\)"):
        read_scan(scans, case.id)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=12, max_size=12 * 9).map(
    lambda bits: np.array(bits + [False] * (108 - len(bits))).reshape(12, 9)))
def test_rle_round_trip(mask):
    from oncoseg.datasets.kaggle import rle_decode, rle_encode

    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape, "x"), mask)


def test_rle_longer_than_the_image_names_the_case(kaggle_set, tmp_path):
    root = copy(kaggle_set, tmp_path)
    table = root / "train.csv"
    lines = table.read_text(encoding="utf-8").splitlines()
    lines.append(f"{read_dataset(kaggle_set).cases[1].id}_slice_0003,stomach,16380 10")
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    case_id = read_dataset(kaggle_set).cases[1].id
    with pytest.raises(InputError, match=rf"case '{case_id}' slice 0003 stomach: has a "
                       r"run-length mask longer than its image \(16389 pixels, the slice has "
                       "16384\\)"):
        read_dataset(root)


def test_kaggle_ids_with_path_separators_are_refused(kaggle_set, tmp_path):
    root = copy(kaggle_set, tmp_path)
    with (root / "train.csv").open("a", encoding="utf-8") as handle:
        handle.write("case1/../x_day1_slice_0001,stomach,1 2\n")
    with pytest.raises(InputError, match=r"case 'case1/\.\./x_day1_slice_0001'.*not a "
                       "caseN_dayN_slice_NNNN id"):
        read_dataset(root)


def test_brats_to_nnunet_maps_enhancing_to_oncoseg_labels(tmp_path):
    root = tmp_path / "nn"
    assert main(["phantom", "brain", "--cases", "1", "--layout", "nnunet", "--output",
                 str(root), "--progress", "none"]) == 0
    dataset = read_dataset(root, "auto", ["t1", "t1c", "t2", "flair"])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.cases[0].labels["label"])))
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert dataset.cases[0].info["labels"]["Enhancing tumour"] == 3


def test_rtstruct_cohort_maps_synonyms_and_reports_partial_labels(ct_cohort):
    from oncoseg.datasets.rtstruct_cohort import load_labels

    dataset = read_dataset(ct_cohort)
    assert dataset.layout == "rtstruct"
    organs = ["Bladder", "Bowel bag", "Femoral head L", "Femoral head R", "Nodal CTV"]
    assert dataset.cases[0].info["annotated"] == organs
    assert dataset.cases[1].info["structures"]["Nodal CTV"] == "CTVn"  # another clinic's name
    assert dataset.cases[2].info["annotated"] == [o for o in organs if o != "Bladder"]
    image, labels, annotated = load_labels(dataset.cases[2], {o: i for i, o in
                                                              enumerate(organs, start=1)})
    assert "Bladder" not in annotated and not (labels == 1).any()
    assert image.GetSize() == (176, 144, 40)
    assert set(np.unique(labels)) == {0, 2, 3, 4, 5}


def test_edited_synonym_table(ct_cohort, tmp_path):
    table = tmp_path / "synonyms.json"
    table.write_text(json.dumps({"Bladder": ["Urinary Bladder"]}), encoding="utf-8")
    with pytest.raises(InputError, match=r"case 'oarct_002'.*no structure of its RT structure "
                       "set matches the synonym table"):
        read_dataset(ct_cohort, "rtstruct", synonyms=table)
    table.write_text(json.dumps({"Bladder": ["Urinary Bladder"], "Bowel": ["BowelBag",
                                 "Bowel_Bag", "Bowel bag"]}), encoding="utf-8")
    dataset = read_dataset(ct_cohort, "rtstruct", synonyms=table)
    assert dataset.cases[0].info["annotated"] == ["Bladder", "Bowel"]
    assert dataset.cases[2].info["annotated"] == ["Bowel"]
    assert "FemoralHead_L" in dataset.cases[0].info["unmapped"]


def test_structure_set_without_its_series_names_the_case(ct_cohort, tmp_path):
    root = copy(ct_cohort, tmp_path)
    for f in (root / "oarct_001").glob("CT_*.dcm"):
        f.unlink()
    with pytest.raises(InputError, match=r"case 'oarct_001'.*references image series"):
        read_dataset(root)


@pytest.mark.parametrize(("task", "layout"), [
    ("rectal", "folders"), ("staging", "staging"), ("brain", "brats"), ("oar-mr", "kaggle-gi"),
    ("oar-ct", "rtstruct")])
def test_every_task_has_phantoms_that_read_back(tmp_path, task, layout):
    from oncoseg.tasks import get_task

    root = tmp_path / task
    assert main(["phantom", task, "--cases", "2", "--output", str(root), "--progress",
                 "none"]) == 0
    roles = list(get_task(task).required_roles)
    dataset = read_dataset(root, "auto", roles)
    assert dataset.layout == layout
    assert len({c.patient for c in dataset.cases}) == 2


def test_decathlon_4d_images_are_read_channel_by_channel(tmp_path):
    """The Medical Segmentation Decathlon's own layout: one 4D file per case (channels along
    the fourth axis, in ``modality`` order) and ``training`` pairs in dataset.json."""
    root = tmp_path / "Task99_Test"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    channels = [rng.normal(size=(6, 7, 8)).astype(np.float32) for _ in range(2)]
    volumes = []
    for array in channels:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 3.0))
        image.SetOrigin((10.0, -5.0, 2.0))
        volumes.append(image)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(root / "imagesTr" / "case_001.nii.gz"))
    label = sitk.Cast(volumes[0] > 0.5, sitk.sitkUInt8)
    sitk.WriteImage(label, str(root / "labelsTr" / "case_001.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "lesion"},
        "training": [{"image": "./imagesTr/case_001.nii.gz",
                      "label": "./labelsTr/case_001.nii.gz"}]}))
    dataset = read_dataset(root, roles=["t2w", "adc"])
    assert dataset.layout == "nnunet"
    [case] = dataset.cases
    assert case.id == "case_001"
    for index, role in enumerate(("t2w", "adc")):
        image = case.read(role)
        assert image.GetDimension() == 3
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), channels[index])
        assert image.GetSpacing() == pytest.approx((0.8, 0.8, 3.0))
        assert image.GetOrigin() == pytest.approx((10.0, -5.0, 2.0))
    (root / "imagesTr" / "case_001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case_001.nii.gz .named in dataset.json. is missing"):
        read_dataset(root, roles=["t2w", "adc"])


def test_prepared_case_cache_hits_only_its_own_key(tmp_path):
    from oncoseg.datasets.cache import load_cached, save_cached

    grid = sitk.Image(5, 4, 3, sitk.sitkFloat32)
    grid.SetSpacing((0.5, 0.7, 3.0))
    grid.SetOrigin((1.0, 2.0, -3.0))
    arrays = {"hu": np.arange(60, dtype=np.int16).reshape(3, 4, 5), "flags": np.ones(6, bool)}
    path = tmp_path / "cache" / "case.npz"
    save_cached(path, "key-1", grid, arrays)
    stored, stored_grid = load_cached(path, "key-1")
    assert set(stored) == {"hu", "flags"}
    np.testing.assert_array_equal(stored["hu"], arrays["hu"])
    assert stored_grid.GetSize() == (5, 4, 3)
    assert stored_grid.GetSpacing() == pytest.approx((0.5, 0.7, 3.0))
    assert stored_grid.GetOrigin() == pytest.approx((1.0, 2.0, -3.0))
    assert load_cached(path, "key-2") is None
    np.savez(path, key="key-1", hu=arrays["hu"])  # an older file without its grid: a miss
    assert load_cached(path, "key-1") is None
