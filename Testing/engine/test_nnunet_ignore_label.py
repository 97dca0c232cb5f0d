"""Cases that did not annotate every structure, in nnU-Net raw layout and back.

A pelvic structure set without a bladder contour says "not contoured", not "no bladder". OncoSeg
trains on it with paper 003's loss (background or bladder). nnU-Net raw has labels only: until
2026-12-07 `--layout nnunet` wrote such a case's bladder as background, so nnU-Net trained on it
would learn to miss bladders, and reading nnU-Net data sets that mark unannotated voxels with
their ignore label (nnU-Net's documentation/ignore_label.md) was refused as "holds label(s) 6".
"""

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.cli import main
from oncoseg.datasets.base import IGNORE_LABEL
from oncoseg.datasets.layouts import read_dataset
from oncoseg.errors import InputError
from oncoseg.io.volumes import read_image
from oncoseg.oar.ct.evaluation import organ_figures
from oncoseg.oar.ct.task import CT_SEGMENTS
from oncoseg.oar.ct.training import case_labels, read_case_ct

ORGANS = [s.name for s in CT_SEGMENTS]
BLADDER = next(s.label for s in CT_SEGMENTS if s.name == "Bladder")
FEMORAL_HEAD_L = next(s.label for s in CT_SEGMENTS if s.name == "Femoral head L")


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    """Three pelvic CT phantoms (every third structure set lacks the bladder: case 2), in the
    task's own layout (DICOM + RT structure set) and in nnU-Net raw."""
    root = tmp_path_factory.mktemp("ignore")
    for layout in ("native", "nnunet"):
        assert main(["phantom", "oar-ct", "--cases", "3", "--seed", "9", "--layout", layout,
                     "--output", str(root / layout), "--progress", "none"]) == 0
    native = {c.id: c for c in read_dataset(root / "native", "auto", ["ct"]).cases}
    nnunet = {c.id: c for c in read_dataset(root / "nnunet", "nnunet", ["ct"]).cases}
    return root, native, nnunet


def test_a_case_without_every_contour_is_written_with_nnunets_ignore_label(both_layouts):
    root, native, nnunet = both_layouts
    assert native["oarct_002"].info["structures"].get("Bladder") is None  # the phantom's gap
    labels = read_dataset(root / "nnunet", "nnunet", ["ct"]).cases[0].info["labels"]
    assert labels["ignore"] == max(labels.values()) == len(CT_SEGMENTS) + 1  # nnU-Net's rule
    for case_id, case in native.items():
        ct = read_case_ct(case)
        truth, _ = case_labels(case, ct)
        written = sitk.GetArrayFromImage(read_image(nnunet[case_id].labels["label"]))
        if case_id == "oarct_002":  # every voxel it left unlabelled is ignore, organs kept
            np.testing.assert_array_equal(written, np.where(truth == 0, labels["ignore"], truth))
            assert not (written == BLADDER).any()
        else:
            np.testing.assert_array_equal(written, truth)


def test_oar_ct_reads_the_ignore_label_as_voxels_nobody_annotated(both_layouts):
    """Read back, the case lacks what its structure set lacked: the bladder is unknown, not
    absent, and its unlabelled voxels are left out of training and evaluation."""
    _, native, nnunet = both_layouts
    for case_id, case in nnunet.items():
        ct = read_case_ct(native[case_id])
        labels, annotated = case_labels(case, ct)
        truth, truth_annotated = case_labels(native[case_id], ct)
        assert annotated == truth_annotated
        np.testing.assert_array_equal(labels, np.where(
            (truth == 0) & (case_id == "oarct_002"), IGNORE_LABEL, truth))
    assert "Bladder" not in case_labels(nnunet["oarct_002"], ct)[1]


def test_a_task_that_trains_on_full_annotations_refuses_ignore_and_says_what_it_is(
        both_layouts):
    _, native, nnunet = both_layouts
    ct = read_case_ct(native["oarct_002"])
    with pytest.raises(InputError, match=r"oarct_002.*holds 6, the data set's ignore label"):
        nnunet["oarct_002"].label_on(ct, "ct", {0, *range(1, len(CT_SEGMENTS) + 1)})


def test_evaluation_leaves_out_the_voxels_nobody_annotated(both_layouts):
    """As nnU-Net's own evaluation does: a false femoral head in the background of the case
    without a bladder contour counts against the model where the background was annotated
    (the structure set's own layout: every voxel outside a contour is known to be neither
    femoral head) and not where nnU-Net's file says nobody annotated it."""
    _, native, nnunet = both_layouts
    ct = read_case_ct(native["oarct_002"])
    truth, _ = case_labels(native["oarct_002"], ct)
    predicted = truth.copy()
    z = truth.shape[0] // 2
    blob = np.zeros_like(truth, bool)
    blob[z - 3:z + 3, 5:25, 5:25] = True
    assert not truth[blob].any()  # background, far from every organ
    predicted[blob] = FEMORAL_HEAD_L
    image = sitk.GetImageFromArray(predicted)
    image.CopyInformation(ct)

    def segment(_ct):
        return SimpleNamespace(labels=image)

    on_native = organ_figures(native["oarct_002"], segment)
    on_nnunet = organ_figures(nnunet["oarct_002"], segment)
    assert on_native["dice_bladder"] is None and on_nnunet["dice_bladder"] is None
    assert on_nnunet["dice_femoral_head_l"] == pytest.approx(1.0)
    assert on_native["dice_femoral_head_l"] < 0.9
    assert on_native["dice_nodal_ctv"] == on_nnunet["dice_nodal_ctv"] == pytest.approx(1.0)
