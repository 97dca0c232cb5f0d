"""Data sets whose dataset.json names its channels and labels (the Medical Segmentation
Decathlon, nnU-Net): read by those names, not by position and value.

The Decathlon's brain tumours (Task01) store FLAIR, T1w, T1gd, T2w in that order and number
oedema 1, the non-enhancing core 2, enhancing tumour 3; OncoSeg's brain inputs are t1, t1c, t2,
flair and its labels core 1, oedema 2, enhancing 3. Until 2026-12-07 both were taken by
position and value: the brain demo scored the same phantom case WT / TC / ET 0.717 / 0.003 /
0.027 in the Decathlon's form against 0.918 / 0.878 / 0.829 in BraTS's, exit 0, no word.
"""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.cli import main
from oncoseg.datasets.layouts import read_dataset, role_hints
from oncoseg.errors import InputError
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct
from oncoseg.tasks import get_task
from oncoseg.verbs import data_roles

BRAIN = get_task("brain")
MSD_ORDER = ("flair", "t1", "t1ce", "t2")  # BraTS file names, in the Decathlon's order


def _read(root, task=BRAIN):
    return read_dataset(root, "auto", roles=data_roles(task), partial=not task.required_roles,
                        role_hints=role_hints(task))


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    assert main(["phantom", "brain", "--cases", "1", "--seed", "5", "--output",
                 str(root / "brats"), "--progress", "none"]) == 0
    return root, _read(root / "brats").cases[0]


def _as_decathlon(root, case, modality, labels, values, name):
    """The BraTS case as one 4D image (channels in the Decathlon's order) and a label map
    holding ``values`` (BraTS label -> stored value), described by ``modality``/``labels``."""
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    stem = case.images["t1"].name.removesuffix("_t1.nii.gz")
    files = {m: case.images["t1"].parent / f"{stem}_{m}.nii.gz" for m in (*MSD_ORDER, "seg")}
    channels = [nib.load(files[m]) for m in MSD_ORDER]
    nib.save(nib.Nifti1Image(np.stack([c.get_fdata(dtype=np.float32) for c in channels], -1),
                             channels[0].affine), folder / "imagesTr" / "BRATS_001.nii.gz")
    seg = nib.load(files["seg"])
    brats = np.asarray(seg.dataobj).astype(np.uint8)
    stored = np.zeros_like(brats)
    for label, value in values.items():
        stored[brats == label] = value
    nib.save(nib.Nifti1Image(stored, seg.affine), folder / "labelsTr" / "BRATS_001.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "modality": modality, "labels": labels, "numTraining": 1,
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz",
                      "label": "./labelsTr/BRATS_001.nii.gz"}]}), encoding="utf-8")
    return folder


def _brain_labels(case, reference):
    """OncoSeg's brain labels of a case, as training reads them (BraTS 2021: 4 -> 3)."""
    labels = case.label_on(reference, "t1", {0, 1, 2, 3, 4}, segments=BRAIN.segments)
    mapping = {int(k): int(v) for k, v in case.info.get("label_map", {}).items()}
    for source, target in mapping.items():
        labels[labels == source] = target
    return labels


@pytest.mark.parametrize(("modality", "labels", "values"), [
    # the Decathlon's Task01_BrainTumour
    ({"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
     {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
     {2: 1, 1: 2, 4: 3}),
    # nnU-Net's conversion conventions (names as keys), BraTS's abbreviations
    ({"0": "Flair", "1": "T1", "2": "T1ce", "3": "T2"},
     {"background": 0, "ED": 1, "NCR": 2, "ET": 3}, {2: 1, 1: 2, 4: 3}),
])
def test_the_decathlons_brain_tumours_read_by_channel_and_label_names(brats, modality, labels,
                                                                      values):
    root, source = brats
    folder = _as_decathlon(root, source, modality, labels, values, f"msd_{next(iter(labels))}")
    (case,) = _read(folder).cases
    assert case.info["channels"] == {"flair": 0, "t1": 1, "t1c": 2, "t2": 3}
    for role in ("t1", "t1c", "t2", "flair"):  # each channel the sequence it is
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(case.read_stored(role)).T,
            nib.load(source.images[role]).get_fdata(dtype=np.float32))
    reference = source.read("t1")
    np.testing.assert_array_equal(_brain_labels(case, reference), _brain_labels(source, reference))


def test_regions_and_unknown_names_are_refused_by_name(brats):
    root, source = brats
    regions = _as_decathlon(root, source, {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                            {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                             "enhancing tumor": 3}, {2: 1, 1: 2, 4: 3}, "regions")
    (case,) = _read(regions).cases
    reference = source.read("t1")
    with pytest.raises(InputError, match=r"describes regions \(whole tumor: \[1, 2, 3\]; "
                       r"tumor core: \[2, 3\]\), not one structure per label value"):
        _brain_labels(case, reference)
    unknown = _as_decathlon(root, source, {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                            {"0": "background", "1": "edema", "2": "cyst", "3": "enhancing"},
                            {2: 1, 1: 2, 4: 3}, "unknown")
    (case,) = _read(unknown).cases
    with pytest.raises(InputError, match="names label\\(s\\) 'cyst', which match none"):
        _brain_labels(case, reference)


def test_channels_that_cannot_be_told_apart_are_refused(brats):
    root, source = brats
    folder = _as_decathlon(root, source, {"0": "FLAIR", "1": "T1", "2": "T1", "3": "T2w"},
                           {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                            "3": "enhancing tumour"}, {2: 1, 1: 2, 4: 3}, "twice")
    with pytest.raises(InputError, match="names its channels FLAIR, T1, T1, T2w: T1, T1 cannot "
                       "be told apart"):
        _read(folder)


def test_a_pelvic_data_set_naming_some_organs_reads_them_and_leaves_the_rest_unknown(
        tmp_path):
    """nnU-Net raw data for the pelvis with its own numbering and names (bladder 1, left
    femoral head 2, clinic spellings) and no other organ: each organ on OncoSeg's label, the
    organs it does not name unknown for training (as a structure set without them)."""
    assert main(["phantom", "oar-ct", "--cases", "1", "--seed", "9", "--layout", "nnunet",
                 "--output", str(tmp_path / "ours"), "--progress", "none"]) == 0
    label = {s.name: s.label for s in CT_SEGMENTS}
    ours = tmp_path / "ours" / "labelsTr" / "oarct_000.nii.gz"
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(ours)))
    theirs = np.zeros_like(truth)
    theirs[truth == label["Bladder"]] = 1
    theirs[truth == label["Femoral head L"]] = 2
    image = sitk.GetImageFromArray(theirs)
    image.CopyInformation(sitk.ReadImage(str(ours)))
    sitk.WriteImage(image, str(ours))
    description = json.loads((tmp_path / "ours" / "dataset.json").read_text())
    description["labels"] = {"background": 0, "Blaas": 1, "FemoralHead_L": 2}
    (tmp_path / "ours" / "dataset.json").write_text(json.dumps(description))
    (case,) = _read(tmp_path / "ours", get_task("oar-ct")).cases
    labels, annotated = case_labels(case, read_case_ct(case))
    expected = np.where(np.isin(truth, [label["Bladder"], label["Femoral head L"]]), truth, 0)
    np.testing.assert_array_equal(labels, expected)
    assert annotated == ["Femoral head L", "Bladder"]


def test_a_rectal_data_set_reads_its_tumour_by_name_and_refuses_another_structure(tmp_path):
    """A rectal label file was tumour wherever it is above 0: a lymph node labelled 2 beside
    the tumour became tumour. Where dataset.json names the labels, the tumour is the one named
    so ('tumor', 'GTV', ...), and a second structure is refused by name."""
    from oncoseg.rectal.cases import _labels_on_grid

    rectal = get_task("rectal")
    assert main(["phantom", "rectal", "--cases", "1", "--layout", "nnunet", "--output",
                 str(tmp_path / "data"), "--progress", "none"]) == 0
    description = json.loads((tmp_path / "data" / "dataset.json").read_text())
    description["labels"] = {"background": 0, "tumor": 1}
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(description))
    (case,) = _read(tmp_path / "data", rectal).cases
    reference = case.read("dwi_b0")
    tumour = _labels_on_grid(case, reference)["label"]
    assert tumour.any()
    description["labels"] = {"background": 0, "tumor": 1, "lymph node": 2}
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(description))
    (case,) = _read(tmp_path / "data", rectal).cases
    with pytest.raises(InputError, match="names label\\(s\\) 'lymph node', which match none"):
        _labels_on_grid(case, reference)


def test_a_brain_data_set_of_some_sequences_is_read_by_their_names(brats, tmp_path):
    """The brain task takes cases without some sequences; a data set of two (T1Gd and FLAIR)
    was refused ("has 2 channels; the task needs 4"). Named, each is its input."""
    _, source = brats
    folder = tmp_path / "two"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for index, role in enumerate(("t1c", "flair")):
        image = sitk.ReadImage(str(source.images[role]))
        sitk.WriteImage(image, str(folder / "imagesTr" / f"BRATS_001_{index:04d}.nii.gz"))
    seg = sitk.ReadImage(str(source.labels["label"]))
    sitk.WriteImage(sitk.ChangeLabel(seg, {4: 3}), str(folder / "labelsTr" / "BRATS_001.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1Gd", "1": "FLAIR"},
        "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": 1,
        "file_ending": ".nii.gz"}))
    (case,) = _read(folder).cases
    assert set(case.images) == {"t1c", "flair"}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.read_stored("flair")),
                                  sitk.GetArrayFromImage(sitk.ReadImage(
                                      str(source.images["flair"]))))
