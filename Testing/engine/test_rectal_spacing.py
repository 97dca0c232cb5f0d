"""The in-plane spacing the rectal network reads at (oncoseg/rectal/spacing.py): what a
training run records, what a model file (old or new) makes a run read at, how a case is
resampled for it."""

import numpy as np
import pytest
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.method import model_settings
from oncoseg.modelfile import ModelMetadata
from oncoseg.rectal.cases import PreparedArrays, at_in_plane
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.spacing import in_plane_grid, model_in_plane_mm, training_in_plane_mm


def _metadata(preprocessing):
    return ModelMetadata(task="rectal", architecture="x", architecture_args={}, inputs=[],
                         outputs={}, preprocessing=preprocessing)


def _geometry(low, high):
    return {"dataset": {"geometry": {"spacing_mm": {"min": low, "max": high}}}}


def test_a_run_reads_at_what_the_model_file_fixes_or_its_training_cases_shared():
    assert model_in_plane_mm(1.6, {}) == 1.6
    assert model_in_plane_mm("native", _geometry([2, 2, 5], [2, 2, 5])) is None
    # a model file from before the setting: the one in-plane spacing its cases shared (the
    # demo's phantoms: 2 x 2 x 5 mm, sorted per axis), else the b0 grid as stored
    assert model_in_plane_mm("median", _geometry([2, 2, 5], [2, 2, 5])) == 2.0
    assert model_in_plane_mm("median", _geometry([1.5, 1.5, 4], [2, 2, 6])) is None
    assert model_in_plane_mm("median", {}) is None


def test_training_reads_every_case_at_the_median_unless_told():
    spacings = [(5, 2, 2), (5, 1.5, 1.5), (4, 1.8, 1.8)]
    assert training_in_plane_mm("median", spacings) == 1.8
    assert training_in_plane_mm(2.5, spacings) == 2.5
    assert training_in_plane_mm("native", spacings) == "native"


def test_the_model_file_fixes_the_setting_and_a_bad_one_is_refused_by_name():
    fixed = _metadata({"in_plane_mm": 2.0})
    assert model_settings("rectal", fixed).in_plane_mm == 2.0
    with pytest.raises(InputError, match=r"in_plane_mm.*fixed by the model"):
        model_settings("rectal", fixed, {"in_plane_mm": "native"})
    old = _metadata({})
    assert model_settings("rectal", old, {"in_plane_mm": "native"}).in_plane_mm == "native"
    for bad in ("-1", "fine", "nan"):
        with pytest.raises(InputError, match=r"--set in_plane_mm: is .*'native'"):
            RectalConfig.from_overrides({"in_plane_mm": bad})


def test_a_case_is_resampled_in_plane_with_its_labels_and_slices_kept():
    reference = sitk.Image(40, 30, 6, sitk.sitkUInt8)
    reference.SetSpacing((1.0, 1.0, 5.0))
    reference.SetOrigin((-20.0, -15.0, 10.0))
    channels = np.random.default_rng(0).normal(size=(3, 6, 30, 40)).astype(np.float32)
    tumour = np.zeros((6, 30, 40), bool)
    tumour[2:5, 10:20, 12:28] = True
    case = PreparedArrays("c", channels, {"label": tumour}, (5.0, 1.0, 1.0), reference)
    assert at_in_plane(case, "native") is case and at_in_plane(case, 1.0) is case
    read = at_in_plane(case, 2.0)
    assert read.channels.shape == (3, 6, 15, 20) and read.spacing_zyx == (5.0, 2.0, 2.0)
    assert read.reference.GetSize() == (20, 15, 6)
    # the same box: the first voxel's corner where it was
    corner = np.array(reference.GetOrigin()) - 0.5 * np.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(np.array(read.reference.GetOrigin())
                               - 0.5 * np.array([2.0, 2.0, 0.0]), corner)
    # the tumour's volume kept (160 mm2 x 3 slices: 40 voxels of 2 x 2 mm)
    assert read.labels["label"].sum() * 4 == tumour.sum()
    assert in_plane_grid(reference, None) is None
