import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import directed_hausdorff
from sklearn.metrics import roc_auc_score

from oncoseg.metrics import (
    brats_regions,
    dice,
    hd95,
    jaccard,
    kaggle_gi_score,
    mean_of_directed_surface_distances,
    mean_surface_distance,
    roc_auc,
    surface_figures,
    write_case_table,
)

monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is the test peer")


@st.composite
def mask_pairs(draw):
    """Two overlapping-ish random shapes (unions of ellipsoids) on an anisotropic grid."""
    shape = tuple(draw(st.integers(6, 24)) for _ in range(3))
    spacing = tuple(draw(st.sampled_from([0.5, 0.8, 1.0, 2.5, 5.0])) for _ in range(3))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)

    def shape_mask():
        mask = np.zeros(shape, bool)
        for _ in range(rng.integers(1, 4)):
            centre = [rng.uniform(0, s) for s in shape]
            radii = [rng.uniform(1, s / 2 + 1) for s in shape]
            mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii,
                                                              strict=True)) <= 1
        return mask

    return shape_mask(), shape_mask(), spacing


def one_hot(mask):
    m = torch.from_numpy(mask)
    return torch.stack([~m, m]).float()[None]


@settings(max_examples=60, deadline=None)
@given(pair=mask_pairs())
def test_surface_metrics_equal_monai_and_dice_equals_simpleitk(pair):
    a, b, spacing = pair
    if not a.any() or not b.any():
        return
    expected_hd95 = float(monai_metrics.compute_hausdorff_distance(
        one_hot(a), one_hot(b), percentile=95, spacing=spacing)[0, 0])
    expected_msd = float(monai_metrics.compute_average_surface_distance(
        one_hot(a), one_hot(b), symmetric=True, spacing=spacing)[0, 0])
    assert hd95(a, b, spacing) == pytest.approx(expected_hd95, abs=0.01)
    assert mean_surface_distance(a, b, spacing) == pytest.approx(expected_msd, abs=0.01)

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    image_a = sitk.GetImageFromArray(a.astype(np.uint8))
    image_b = sitk.GetImageFromArray(b.astype(np.uint8))
    image_a.SetSpacing(spacing[::-1])
    image_b.SetSpacing(spacing[::-1])
    overlap.Execute(image_b, image_a)
    assert dice(a, b) == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-6)
    assert jaccard(a, b) == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-6)


def plain_directed_means(a, b, spacing):
    """Paper 003's recipe (2.6) written out: surface voxels (a face neighbour outside the mask,
    the array's border counting as outside), each one's nearest surface voxel of the other
    mask in millimetres by brute force, the mean of each direction."""
    from scipy.spatial.distance import cdist

    def surface(mask):
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    distances = cdist(sa, sb)
    return distances.min(axis=1).mean(), distances.min(axis=0).mean(), len(sa), len(sb)


def test_the_papers_msd_averages_the_two_directed_means_the_pooled_one_does_not():
    """A small box inside a large one, anisotropic voxels: the small surface (240 voxels) lies
    4.00 mm from the large one on average, the large (1256 voxels) 5.83 mm from the small.
    Paper 003 averages the two means (4.91 mm); pooling every voxel weighs the large surface
    five times as much (5.53 mm)."""
    reference = np.zeros((12, 24, 24), bool)
    reference[2:10, 2:22, 2:22] = True
    prediction = np.zeros_like(reference)
    prediction[3:9, 6:14, 6:14] = True
    spacing = (3.0, 1.0, 1.0)
    forward, backward, n_forward, n_backward = plain_directed_means(prediction, reference,
                                                                    spacing)
    assert (n_forward, n_backward) == (240, 1256)
    paper = mean_of_directed_surface_distances(prediction, reference, spacing)
    pooled = mean_surface_distance(prediction, reference, spacing)
    assert paper == pytest.approx((forward + backward) / 2, abs=1e-9)
    assert pooled == pytest.approx((n_forward * forward + n_backward * backward)
                                   / (n_forward + n_backward), abs=1e-9)
    assert paper == pytest.approx(4.914, abs=1e-3) and pooled == pytest.approx(5.535, abs=1e-3)
    assert surface_figures(prediction, reference, spacing) == {
        "msd_paper_mm": paper, "msd_pooled_mm": pooled,
        "hd95_mm": hd95(prediction, reference, spacing)}
    # symmetric in the two masks, both of them
    assert mean_of_directed_surface_distances(reference, prediction, spacing) == \
        pytest.approx(paper)
    assert mean_surface_distance(reference, prediction, spacing) == pytest.approx(pooled)
    empty = np.zeros_like(reference)
    assert math.isnan(mean_of_directed_surface_distances(empty, empty, spacing))
    assert math.isinf(mean_of_directed_surface_distances(prediction, empty, spacing))


@settings(max_examples=40, deadline=None)
@given(pair=mask_pairs())
def test_the_papers_msd_equals_the_mean_of_monais_two_directed_distances(pair):
    a, b, spacing = pair
    if not a.any() or not b.any():
        return
    there = float(monai_metrics.compute_average_surface_distance(
        one_hot(a), one_hot(b), symmetric=False, spacing=spacing)[0, 0])
    back = float(monai_metrics.compute_average_surface_distance(
        one_hot(b), one_hot(a), symmetric=False, spacing=spacing)[0, 0])
    assert mean_of_directed_surface_distances(a, b, spacing) == pytest.approx(
        (there + back) / 2, abs=0.01)


def test_empty_cases_are_explicit():
    empty = np.zeros((4, 4, 4), bool)
    full = np.ones((4, 4, 4), bool)
    assert dice(empty, empty) == 1.0
    assert math.isnan(dice(empty, empty, empty=math.nan))
    assert dice(empty, full) == 0.0
    assert math.isnan(hd95(empty, empty, (1, 1, 1)))
    assert math.isinf(hd95(empty, full, (1, 1, 1)))
    assert hd95(full, full, (1, 1, 1)) == 0.0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 400), levels=st.integers(2, 50), seed=st.integers(0, 10_000))
def test_auc_equals_scikit_learn_with_ties(n, levels, seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    if labels.all() or not labels.any():
        labels[0], labels[-1] = True, False
    scores = np.round(rng.random(n) * levels) / levels + 0.2 * labels
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert math.isnan(roc_auc(scores, np.zeros(n, bool)))


def straightforward_kaggle(prediction, reference):
    """The competition's published scoring recipe, written out plainly: Dice per slice (1
    when both slices are empty), 3D Hausdorff on voxel indices over the volume diagonal."""
    dices = []
    for p_slice, r_slice in zip(prediction, reference, strict=True):
        total = p_slice.sum() + r_slice.sum()
        dices.append(1.0 if total == 0 else 2 * (p_slice & r_slice).sum() / total)
    if not prediction.any() and not reference.any():
        h_score = 1.0
    elif not prediction.any() or not reference.any():
        h_score = 0.0
    else:
        p, r = np.argwhere(prediction), np.argwhere(reference)
        h = max(directed_hausdorff(p, r)[0], directed_hausdorff(r, p)[0])
        h_score = 1 - min(h / np.sqrt(np.sum(np.square(prediction.shape))), 1)
    return 0.4 * np.mean(dices) + 0.6 * h_score


@settings(max_examples=40, deadline=None)
@given(pair=mask_pairs())
def test_kaggle_score_matches_the_plain_recipe(pair):
    a, b, _ = pair
    assert kaggle_gi_score(a, b)["score"] == pytest.approx(straightforward_kaggle(a, b),
                                                           abs=1e-9)


def test_brats_regions_nest():
    labels = np.array([0, 1, 2, 3])
    regions = brats_regions(labels)
    assert regions["whole tumour"].tolist() == [False, True, True, True]
    assert regions["tumour core"].tolist() == [False, True, False, True]
    assert regions["enhancing tumour"].tolist() == [False, False, False, True]


def test_case_table(tmp_path):
    rows = [{"case": "a", "dice": 0.8, "hd95_mm": 3.0}, {"case": "b", "dice": 0.6,
                                                         "hd95_mm": math.inf}]
    table, summary = write_case_table(rows, tmp_path)
    lines = table.read_text(encoding="utf-8").splitlines()
    assert lines == ["case,dice,hd95_mm", "a,0.8,3", "b,0.6,inf"]
    metrics = json.loads(summary.read_text(encoding="utf-8"))["metrics"]
    assert metrics["dice"]["mean"] == pytest.approx(0.7)
    assert metrics["hd95_mm"] == {"n": 1, "mean": 3.0, "sd": 0.0, "median": 3.0, "min": 3.0,
                                  "max": 3.0, "not_finite": 1}


def test_icc_matches_shrout_and_fleiss():
    """Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = 0.29."""
    from oncoseg.metrics import icc_agreement

    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
               [6, 2, 4, 7]]
    assert icc_agreement(np.array(ratings)) == pytest.approx(0.29, abs=0.005)
    same = np.repeat(np.array([[0.7], [0.8], [0.9]]), 3, axis=1)
    assert icc_agreement(same) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        icc_agreement(np.ones((1, 3)))
