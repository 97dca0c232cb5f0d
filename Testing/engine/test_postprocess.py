import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoseg.postprocess import (
    component_at,
    components,
    fill_holes,
    fill_label_holes,
    label_components,
    largest_component,
    most_likely,
)


def random_mask(seed, shape=(12, 14, 16), density=0.15):
    rng = np.random.default_rng(seed)
    return rng.random(shape) < density


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.05, 0.4),
       connectivity=st.sampled_from([6, 26]))
def test_components_equal_simpleitk(seed, density, connectivity):
    mask = random_mask(seed, density=density)
    ours, count = label_components(mask, connectivity)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    cc = sitk.ConnectedComponent(image, connectivity == 26)
    relabelled = sitk.RelabelComponent(cc, sortByObjectSize=True)
    np.testing.assert_array_equal(ours, sitk.GetArrayViewFromImage(relabelled))
    assert count == int(sitk.GetArrayViewFromImage(cc).max())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.3, 0.7))
def test_fill_holes_equals_simpleitk(seed, density):
    mask = random_mask(seed, density=density)
    expected = sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)),
                                   fullyConnected=False)
    np.testing.assert_array_equal(fill_holes(mask), sitk.GetArrayViewFromImage(expected) > 0)


def test_component_figures_and_seed_pick():
    array = np.zeros((10, 20, 20), np.uint8)
    array[2:4, 2:6, 2:6] = 1  # 32 voxels
    array[5:9, 10:15, 10:15] = 1  # 100 voxels, the largest
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing((0.5, 0.5, 4.0))
    mask.SetOrigin((10.0, -20.0, 5.0))
    probability = sitk.GetImageFromArray(np.where(array > 0, 0.9, 0.1).astype(np.float32))
    probability.CopyInformation(mask)
    probability[3, 3, 3] = 0.5
    labels, found = components(mask, probability)
    assert [c.voxels for c in found] == [100, 32]
    assert found[0].volume_ml == pytest.approx(100 * 0.5 * 0.5 * 4.0 / 1000)
    assert found[0].centroid_lps_mm == pytest.approx((10 + 12 * 0.5, -20 + 12 * 0.5, 5 + 6.5 * 4))
    assert found[1].mean_probability == pytest.approx((31 * 0.9 + 0.5) / 32)
    assert found[1].max_probability == pytest.approx(0.9)
    point = mask.TransformIndexToPhysicalPoint((3, 3, 3))
    assert component_at(labels, mask, point) == 2
    assert component_at(labels, mask, mask.TransformIndexToPhysicalPoint((0, 0, 0))) == 0
    assert component_at(labels, mask, (1e4, 0, 0)) == 0


def test_largest_component_and_hole_filling_keep_organs_apart():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:8, 1:8, 1:8] = 1
    labels[3:6, 3:6, 3:6] = 0  # a hole in organ 1 ...
    labels[4, 4, 4] = 2  # ... holding a voxel of organ 2
    labels[10, 10, 10] = 1  # a stray island of organ 1, not even diagonally connected
    cleaned = np.where(largest_component(labels == 1), 1, np.where(labels == 2, 2, 0))
    fill_label_holes(cleaned, [1, 2])
    assert cleaned[10, 10, 10] == 0
    assert cleaned[4, 4, 4] == 2  # not overwritten by the hole filling
    assert (cleaned[3:6, 3:6, 3:6] == 1).sum() == 26
    assert largest_component(np.zeros((3, 3, 3), bool)).sum() == 0


def test_most_likely_is_argmax_over_classes_with_the_first_of_ties():
    import torch

    rng = np.random.default_rng(3)
    for dtype in (np.float16, np.float32, np.float64):
        scores = rng.integers(0, 3, (4, 9, 10, 11)).astype(dtype)  # ties everywhere
        expected = scores.argmax(axis=0)
        for form in (scores, np.asfortranarray(scores), torch.from_numpy(scores)):
            labels = most_likely(form)
            assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    with pytest.raises(ValueError, match="257 classes"):
        most_likely(np.zeros((257, 2, 2, 2), np.float32))
