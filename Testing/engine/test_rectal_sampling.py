import numpy as np
import pytest
from scipy import ndimage

from oncoseg.rectal.sampling import (
    background_regions,
    extract_patches,
    sample_voxels,
    sample_weights,
)


def case(seed=0):
    rng = np.random.default_rng(seed)
    tumour = np.zeros((8, 40, 40), bool)
    tumour[3:5, 15:22, 14:20] = True
    high_b = rng.normal(0, 1, tumour.shape)
    high_b[tumour] = 3.0
    high_b[:, 30:34, 30:34] = 3.0  # a bright node far from the tumour
    return tumour, high_b


def test_regions_follow_the_paper_and_are_disjoint():
    tumour, high_b = case()
    spacing = (5.0, 1.0, 1.0)  # thick slices: 1 cm reaches 2 slices up and down, 10 px across
    r = background_regions(tumour, high_b, spacing)
    stacked = np.stack([r.tumour, r.ring, r.bright, r.rest]).astype(int)
    assert (stacked.sum(axis=0) == 1).all()  # a partition of the volume
    distance = ndimage.distance_transform_edt(~tumour, sampling=spacing)
    np.testing.assert_array_equal(r.ring, (distance <= 10) & ~tumour)
    assert r.ring[1, 17, 16] and r.ring[5, 17, 16] and not r.ring[0, 17, 16]  # 10 mm in z
    assert r.bright[:, 30:34, 30:34].all()
    assert not (r.bright & (high_b <= 2)).any()


def test_sample_counts_and_labels():
    tumour, high_b = case()
    r = background_regions(tumour, high_b, (5.0, 1.0, 1.0))
    voxels, labels = sample_voxels(r, 400, np.random.default_rng(1))
    assert len(voxels) == 800 and labels.sum() == 400
    index = tuple(voxels.T)
    assert r.tumour[index][labels == 1].all()
    background = labels == 0
    assert r.ring[index][background].sum() == 100
    assert r.bright[index][background].sum() == 200
    assert r.rest[index][background].sum() == 100
    # a region smaller than its share is drawn with replacement; none is left out
    r_small = background_regions(tumour, np.zeros_like(high_b), (5.0, 1.0, 1.0))
    voxels, labels = sample_voxels(r_small, 400, np.random.default_rng(1))
    assert len(voxels) == 800  # RB2 is empty: its share went to RB3


def test_patches_are_centred_and_zero_outside():
    channels = np.arange(2 * 3 * 9 * 11, dtype=np.float32).reshape(2, 3, 9, 11)
    voxels = np.array([[1, 4, 5], [2, 0, 0]])
    patches = extract_patches(channels, voxels, 5)
    assert patches.shape == (2, 2, 5, 5)
    np.testing.assert_array_equal(patches[0, 1], channels[1, 1, 2:7, 3:8])
    assert patches[0, 0, 2, 2] == channels[0, 1, 4, 5]
    np.testing.assert_array_equal(patches[1, 0, :2, :], 0)  # above the image
    assert patches[1, 0, 2, 2] == channels[0, 2, 0, 0]
    with pytest.raises(ValueError, match="odd"):
        extract_patches(channels, voxels, 4)


def test_voxel_share_weights_see_the_edge_as_often_from_both_sides():
    """'paper': every sample counts once. 'voxel-share': tumour and RB1 samples still count
    1.25 N together, but each of their voxels is worth the same, so the tumour's outer layer
    and the layer just outside it are seen about equally; RB2 and RB3 as drawn."""
    tumour, high_b = case()
    r = background_regions(tumour, high_b, (5.0, 1.0, 1.0))
    voxels, labels = sample_voxels(r, 400, np.random.default_rng(1))
    assert (sample_weights(r, 400, "paper") == 1).all()
    weights = sample_weights(r, 400, "voxel-share")
    index = tuple(voxels.T)
    in_tumour, in_ring = r.tumour[index], r.ring[index]
    assert (in_tumour == (labels == 1)).all()
    assert weights[in_tumour | in_ring].sum() == pytest.approx(500)
    per_voxel = {name: weights[where].sum() / region.sum()
                 for name, where, region in (("tumour", in_tumour, r.tumour),
                                             ("ring", in_ring, r.ring))}
    assert per_voxel["tumour"] == pytest.approx(per_voxel["ring"])
    assert (weights[~(in_tumour | in_ring)] == 1).all()
    outer = tumour & ~ndimage.binary_erosion(tumour)
    outside = ndimage.binary_dilation(tumour) & ~tumour

    def seen(layer):  # expected weight that falls on a layer of voxels
        return sum(weights[where].sum() / region.sum() * (layer & region).sum()
                   for where, region in ((in_tumour, r.tumour), (in_ring, r.ring)))
    paper = (400 / r.tumour.sum() * outer.sum()) / (100 / r.ring.sum() * outside.sum())
    assert paper > 4 and seen(outer) / seen(outside) == pytest.approx(
        outer.sum() / outside.sum())


def test_an_unknown_edge_weighting_is_refused_by_name():
    from oncoseg.errors import InputError
    from oncoseg.rectal.config import RectalConfig

    with pytest.raises(InputError, match=r"edge_weighting.*'balanced' is not one of paper, "
                                         r"voxel-share"):
        RectalConfig(edge_weighting="balanced")
