"""oncoseg.refine: clicks land where they are put, whatever the storage order; only the target
segment changes, never locked voxels, only inside the box; one click in a tumour finds it."""

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from oncoseg import verbs
from oncoseg.orientation import orientation_of
from oncoseg.refine import RefineSettings, Stroke, hand_edits, refine

SEED = 3200  # a phantom seed no demo model trained on (docs/DEMO_MODELS.md)
STORAGES = {"LPS": ("LPS", 0.0), "RAS": ("RAS", 0.0), "LAS": ("LAS", 0.0),
            "oblique": ("LPS", 25.0)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    """The same rectal phantom (same seed and case: the same anatomy in physical space) as
    the phantom writer stores it in each orientation, and tilted."""
    root = tmp_path_factory.mktemp("refine")
    out = {}
    for name, (orientation, tilt) in STORAGES.items():
        [case] = verbs.phantom("rectal", root / name, cases=1, seed=SEED,
                               orientation=orientation, tilt_degrees=tilt)
        out[name] = case
    return out


def read(case: Path, name: str) -> sitk.Image:
    return sitk.ReadImage(str(case / f"{name}.nii.gz"))


def empty_like(image: sitk.Image) -> sitk.Image:
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def tumour_centre(case: Path) -> tuple[float, float, float]:
    """The physical (LPS) point deepest inside the tumour of the LPS-stored case."""
    label = read(case, "label")
    inside = sitk.GetArrayFromImage(label) > 0
    depth = ndi.distance_transform_edt(inside, sampling=label.GetSpacing()[::-1])
    z, y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return label.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))


def test_the_storages_are_what_the_test_means(cases):
    assert orientation_of(read(cases["RAS"], "dwi_b0")) == "RAS"
    assert orientation_of(read(cases["LAS"], "dwi_b0")) == "LAS"
    direction = np.asarray(read(cases["oblique"], "dwi_b0").GetDirection()).reshape(3, 3)
    assert np.degrees(np.arccos(np.abs(direction).max(axis=0).min())) > 1.0


def test_a_click_seeds_the_voxel_under_its_lps_point_in_every_storage(cases):
    point = tumour_centre(cases["LPS"])
    lps = read(cases["LPS"], "dwi_b0")
    i, j, k = lps.TransformPhysicalPointToIndex(point)
    nx, ny, _ = lps.GetSize()
    # the voxel each storage must hit, worked out by hand from the axis flips (RAS flips x and
    # y of the LPS array, LAS only y) rather than by the transform refine itself uses
    expected = {"LPS": (i, j, k), "RAS": (nx - 1 - i, ny - 1 - j, k),
                "LAS": (i, ny - 1 - j, k)}
    results = {}
    for name, case in cases.items():
        image = read(case, "dwi_b0")
        # a tiny box and no image contrast to follow: the walk adds the seed ball alone
        settings = RefineSettings(box_margin_mm=6.0, seed_radius_mm=0.0)
        result = refine([image], None, empty_like(image), 1, [Stroke.click(point)],
                        settings=settings)
        added = sitk.GetArrayFromImage(result.labels) == 1
        x, y, z = image.TransformPhysicalPointToIndex(point)
        assert added[z, y, x], name
        if name in expected:
            assert (x, y, z) == expected[name]
        results[name] = result
    # the three exact storages hold the same voxels: the corrections agree voxel for voxel
    back = {n: sitk.GetArrayFromImage(sitk.DICOMOrient(results[n].labels, "LPS"))
            for n in ("LPS", "RAS", "LAS")}
    assert back["LPS"].any()
    np.testing.assert_array_equal(back["RAS"], back["LPS"])
    np.testing.assert_array_equal(back["LAS"], back["LPS"])


@pytest.mark.parametrize("storage", list(STORAGES))
def test_one_click_in_the_tumour_of_an_empty_segmentation_finds_it(cases, storage):
    """Without a model map (the image alone), one positive click at the tumour's centre gives
    a region that overlaps the phantom's tumour at Dice >= 0.6 (0.80 measured on LPS; a
    6 cm box, so nothing else can be found)."""
    point = tumour_centre(cases["LPS"])
    case = cases[storage]
    b0, b1000 = read(case, "dwi_b0"), read(case, "dwi_b1000")
    result = refine([b0, b1000], None, empty_like(b0), 1, [Stroke.click(point)])
    truth = sitk.GetArrayFromImage(read(case, "label")) > 0
    found = sitk.GetArrayFromImage(result.labels) == 1
    assert dice(found, truth) >= 0.6, (storage, dice(found, truth))


def test_a_click_with_the_models_map_adds_what_the_map_and_image_support(cases):
    """The model's probability (here the phantom's tumour, blurred, as a stand-in of a good
    map, on a coarser grid than the labels so refine must resample it) with one click: the
    tumour comes back at Dice >= 0.75 (0.83 measured)."""
    case = cases["LAS"]
    b0 = read(case, "dwi_b0")
    truth_image = read(case, "label")
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(truth_image > 0, sitk.sitkFloat32), 2.0)
    coarse = sitk.Resample(smooth, [s // 2 for s in b0.GetSize()], sitk.Transform(),
                           sitk.sitkLinear, b0.GetOrigin(), [2 * s for s in b0.GetSpacing()],
                           b0.GetDirection(), 0.0, sitk.sitkFloat32)
    result = refine([b0], coarse, empty_like(b0), 1, [Stroke.click(tumour_centre(
        cases["LPS"]))])
    truth = sitk.GetArrayFromImage(truth_image) > 0
    assert dice(sitk.GetArrayFromImage(result.labels) == 1, truth) >= 0.75


def two_segments() -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """A 40^3 image (1 mm, RAS-stored) with two touching boxes of equal brightness, labelled
    1 and 2, and a flat model map of 0.9 over both: nothing but the rules keeps 2 intact."""
    array = np.zeros((40, 40, 40), np.float32)
    array[10:30, 10:30, 5:35] = 100.0
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(array + rng.normal(0, 2, array.shape).astype(np.float32))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((20.0, 20.0, -20.0))
    labels = np.zeros(array.shape, np.uint8)
    labels[10:30, 10:30, 5:20] = 1
    labels[10:30, 10:30, 20:35] = 2
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    return image, label_image, labels


def probability_map(image: sitk.Image, value: float) -> sitk.Image:
    prob = sitk.Image(image.GetSize(), sitk.sitkFloat32) + value
    prob.CopyInformation(image)
    return prob


def test_a_negative_click_on_one_segment_never_changes_another():
    image, labels, array = two_segments()
    # on segment 1, one voxel from segment 2
    point = labels.TransformIndexToPhysicalPoint((19, 20, 20))
    result = refine([image], probability_map(image, 0.1), labels, 1,
                    [Stroke.click(point, positive=False)])
    out = sitk.GetArrayFromImage(result.labels)
    assert result.removed.any()  # segment 1 lost voxels under the click...
    np.testing.assert_array_equal(out == 2, array == 2)  # ...segment 2 none
    assert not (out[array == 0] != 0).any()


def test_a_positive_click_never_takes_another_segments_voxels():
    image, labels, array = two_segments()
    labels_1 = sitk.GetArrayFromImage(labels)
    labels_1[labels_1 == 1] = 0  # segment 1 emptied: the click must find it again
    emptied = sitk.GetImageFromArray(labels_1)
    emptied.CopyInformation(labels)
    point = labels.TransformIndexToPhysicalPoint((12, 20, 20))
    result = refine([image], probability_map(image, 0.9), emptied, 1, [Stroke.click(point)])
    out = sitk.GetArrayFromImage(result.labels)
    assert (out == 1).sum() > 0.5 * (array == 1).sum()
    np.testing.assert_array_equal(out == 2, array == 2)


def test_locked_voxels_never_change():
    image, labels, array = two_segments()
    point = labels.TransformIndexToPhysicalPoint((12, 20, 20))
    unlocked = refine([image], probability_map(image, 0.1), labels, 1,
                      [Stroke.click(point, positive=False)])
    locked = np.zeros(array.shape, bool)
    locked[:, :, :10] = True  # half of what the click removes without a lock
    assert (unlocked.removed & locked[unlocked.box]).any()
    result = refine([image], probability_map(image, 0.1), labels, 1,
                    [Stroke.click(point, positive=False)], locked=locked)
    out = sitk.GetArrayFromImage(result.labels)
    np.testing.assert_array_equal(out[locked], array[locked])
    assert result.removed.any()  # the rest still went


def test_hand_edits_are_what_differs_from_the_models_result():
    _, labels, array = two_segments()
    painted = array.copy()
    painted[0, 0, 0] = 1
    painted[15, 15, 15] = 0
    lock = hand_edits(painted, labels)
    assert lock.sum() == 2 and lock[0, 0, 0] and lock[15, 15, 15]


def test_changes_stay_inside_the_box_around_the_input():
    """A map of 1 everywhere and a flat image: only the box stops the growth."""
    size = (80, 80, 30)
    image = sitk.Image(size, sitk.sitkFloat32) + 50.0
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))  # axes swapped: the box is in mm, not index
    image = sitk.AdditiveGaussianNoise(image, 1.0, 0.0, 3)
    point = image.TransformIndexToPhysicalPoint((40, 40, 15))
    margin = 12.0
    result = refine([image], probability_map(image, 1.0), empty_like(image), 1,
                    [Stroke.click(point)], settings=RefineSettings(box_margin_mm=margin))
    out = sitk.GetArrayFromImage(result.labels) == 1
    z, y, x = np.nonzero(out)
    physical = np.array([image.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
                         for a, b, c in zip(x, y, z, strict=True)])
    reach = np.abs(physical - np.asarray(point)).max(axis=0)
    spacing = np.array([1.0, 1.0, 3.0])[[1, 0, 2]]  # per physical axis (direction swaps x, y)
    assert np.all(reach <= margin + spacing), reach
    assert np.all(reach >= margin - spacing)  # it did grow to the box: the bound mattered


def test_a_scribble_seeds_its_whole_path_and_earlier_clicks_are_kept():
    image, labels, _ = two_segments()
    labels_1 = sitk.GetArrayFromImage(labels)
    labels_1[labels_1 == 1] = 0
    emptied = sitk.GetImageFromArray(labels_1)
    emptied.CopyInformation(labels)
    a = labels.TransformIndexToPhysicalPoint((6, 12, 12))
    b = labels.TransformIndexToPhysicalPoint((18, 27, 27))
    flat = probability_map(image, 0.0)  # a map that sees nothing: the scribble alone adds
    result = refine([image], flat, emptied, 1, [Stroke((a, b))],
                    settings=RefineSettings(seed_radius_mm=0.0))
    out = sitk.GetArrayFromImage(result.labels)
    for t in np.linspace(0, 1, 7):
        p = np.asarray(a) + t * (np.asarray(b) - np.asarray(a))
        x, y, z = labels.TransformPhysicalPointToIndex(tuple(p))
        assert out[z, y, x] == 1
    # a later negative click elsewhere does not undo the scribble's voxels it was given again
    c = labels.TransformIndexToPhysicalPoint((12, 20, 20))
    again = refine([image], flat, result.labels, 1, [Stroke.click(c, positive=False)],
                   earlier=[Stroke((a, b))], settings=RefineSettings(seed_radius_mm=0.0))
    x, y, z = labels.TransformPhysicalPointToIndex(a)
    assert sitk.GetArrayFromImage(again.labels)[z, y, x] == 1


def volume(array: np.ndarray, kind) -> sitk.Image:
    """``array`` (z, y, x) as an image of ``kind`` on 1 mm voxels."""
    out = sitk.GetImageFromArray(array.astype(kind))
    out.SetSpacing((1.0, 1.0, 1.0))
    return out


def shell_case() -> tuple[sitk.Image, sitk.Image, sitk.Image, np.ndarray, np.ndarray]:
    """A bright ball of radius 8 mm that the model over-segments by a one-voxel shell (the
    shell at 0.80, the ball at 0.99, as the rectal demo model does), on 1 mm voxels; and a
    dark slab beside it that the model also calls the segment, at the ball's own probability.
    Returns image, map, labels, the true ball and the false slab."""
    zz, yy, xx = np.mgrid[:24, :40, :40].astype(float)
    r = np.sqrt((zz - 12) ** 2 + (yy - 20) ** 2 + (xx - 14) ** 2)
    ball = r <= 8
    shell = (r > 8) & (r <= 9)
    slab = (xx >= 26) & (xx <= 34) & (np.abs(yy - 20) <= 8) & (np.abs(zz - 12) <= 8)
    rng = np.random.default_rng(0)
    image = np.where(ball, 100.0, 20.0) + np.where(slab, 30.0, 0.0) + \
        np.where(shell, 40.0, 0.0) + rng.normal(0, 3, ball.shape)
    probability = np.where(ball, 0.99, np.where(shell, 0.80, np.where(slab, 0.99, 0.02)))
    labels = (ball | shell | slab).astype(np.uint8)
    return (volume(image, np.float32), volume(probability, np.float32),
            volume(labels, np.uint8), ball, slab)


@pytest.mark.parametrize("recalibrate", [True, False])
def test_a_negative_click_on_a_confident_shell_removes_the_shell_near_it(recalibrate):
    image, probability, labels, ball, slab = shell_case()
    shell = (sitk.GetArrayFromImage(labels) == 1) & ~ball & ~slab
    point = labels.TransformIndexToPhysicalPoint((14, 20, 12 + 9))  # on the shell, above
    settings = RefineSettings() if recalibrate else RefineSettings(recalibration_margin=0.0)
    result = refine([image], probability, labels, 1, [Stroke.click(point, positive=False)],
                    settings=settings)
    after = sitk.GetArrayFromImage(result.labels) == 1
    near = np.zeros_like(ball)
    near[12:, :, :] = True  # the ball's upper half: within 10-12 mm of the click
    assert (after & ball).sum() >= 0.98 * ball.sum()  # the confident ball stays
    assert (after & slab).sum() == slab.sum()  # and the other region, 12 mm away
    removed_near = 1 - (after & shell & near).sum() / (shell & near).sum()
    if recalibrate:
        assert removed_near > 0.8
    else:  # the walker alone follows the model's 0.80: the shell stays (what recalibration fixes)
        assert removed_near < 0.3


@pytest.mark.parametrize("similarity", [2.5, 0.0])
def test_a_negative_click_on_a_false_region_the_image_sets_apart_removes_it_alone(similarity):
    image, probability, labels, ball, slab = shell_case()
    point = labels.TransformIndexToPhysicalPoint((30, 20, 12))  # the slab's centre
    settings = RefineSettings(recalibration_similarity=similarity)
    result = refine([image], probability, labels, 1, [Stroke.click(point, positive=False)],
                    settings=settings)
    after = sitk.GetArrayFromImage(result.labels) == 1
    if similarity:  # most of the slab goes (its far corners fade with distance: a 2nd click)
        assert (after & slab).sum() <= 0.3 * slab.sum()
        assert (after & ball).sum() == ball.sum()  # same probability, other signal: kept
    else:  # distance alone also takes the ball's near side, at the slab's probability
        assert (after & ball).sum() < 0.97 * ball.sum()


def test_a_negative_click_on_a_sure_false_region_spares_the_less_sure_true_rim_beside_it():
    """The GI model's false shell round the stomach is surest where it is thickest (where the
    reader clicks) while the true stomach's rim sits lower, with the same signal: the click
    should correct what the model rates like the clicked voxel, not everything rated lower."""
    zz, yy, xx = np.mgrid[:32, :40, :48].astype(float)
    r = np.sqrt((zz - 16) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    interior, rim = r <= 6, (r > 6) & (r <= 8)
    false = (r > 8) & (r <= 13) & (xx > 24)  # a thick false cap on one side
    rng = np.random.default_rng(0)
    image = np.where(interior | rim | false, 100.0, 20.0) + rng.normal(0, 3, r.shape)
    probability = np.where(interior, 0.999, np.where(rim, 0.6, np.where(false, 0.98, 0.02)))
    image, labels = volume(image, np.float32), volume(interior | rim | false, np.uint8)
    point = labels.TransformIndexToPhysicalPoint((20 + 10, 20, 16))  # the cap, 10 mm out
    removed = {}
    for confidence in (2.0, 0.0):
        result = refine([image], volume(probability, np.float32), labels, 1,
                        [Stroke.click(point, positive=False)],
                        settings=RefineSettings(recalibration_confidence=confidence))
        after = sitk.GetArrayFromImage(result.labels) == 1
        removed[confidence] = (int((rim & ~after).sum()), int((false & ~after).sum()))
        assert (after & interior).sum() >= 0.98 * interior.sum()  # the sure interior stays
    (rim_with, false_with), (rim_without, false_without) = removed[2.0], removed[0.0]
    # the false cap goes as before (1615 of its 2037 voxels against 1622); of the true rim's
    # 1184 voxels 760 go instead of all of them: the click still takes the rim's nearest part
    assert false_with >= 0.95 * false_without > 0
    assert rim_with <= 0.75 * rim_without


def test_a_negative_margin_takes_a_rim_whose_probability_spreads():
    """A model whose over-segmentation rim spreads over 0.54-0.99 round a core at 0.98-1.0
    (the rectal demo until 2026-12-08): a click on one rim voxel with the default margin
    removes the rim voxels rated like it; with a negative margin (``Task.refine``: a negative
    click moves the boundary 3 logit units past the clicked voxel, over 25 mm; the rectal
    task's for that demo) most of the rim near it, never the core. A positive click is the
    same with and without the negative margin."""
    from oncoseg.tasks import all_tasks, get_task

    # every task's settings name RefineSettings fields (a wrong name fails here, not on a click)
    assert all(isinstance(t.refine_settings(), RefineSettings) for t in all_tasks())
    image, probability, labels, ball, slab = shell_case()
    shell = (sitk.GetArrayFromImage(labels) == 1) & ~ball & ~slab
    spread = sitk.GetArrayFromImage(probability)
    spread[shell] = np.random.default_rng(1).uniform(0.55, 0.97, int(shell.sum()))
    spread[21, 20, 14] = 0.65  # the clicked rim voxel, above the ball
    point = labels.TransformIndexToPhysicalPoint((14, 20, 21))
    near = np.zeros_like(ball)
    near[12:, :, :] = True
    # the rectal demo trained on 2026-12-08 has no rim: its task keeps the defaults
    assert get_task("rectal").refine_settings() == RefineSettings()
    rectal = RefineSettings(recalibration_margin_negative=3.0, recalibration_mm=25.0)
    assert rectal.margin(False) > rectal.margin(True) == RefineSettings().margin(True)
    removed = {}
    for name, settings in (("default", RefineSettings()), ("rectal", rectal)):
        result = refine([image], volume(spread, np.float32), labels, 1,
                        [Stroke.click(point, positive=False)], settings=settings)
        after = sitk.GetArrayFromImage(result.labels) == 1
        assert (after & ball).sum() >= 0.98 * ball.sum()  # the sure core stays
        removed[name] = 1 - (after & shell & near).sum() / (shell & near).sum()
    assert removed["rectal"] > 0.8 and removed["rectal"] > removed["default"] + 0.2, removed
    # a positive click in a piece cut out of the slab (243 voxels) ignores the negative margin
    cut = sitk.GetArrayFromImage(labels)
    cut[8:17, 16:25, 26:29] = 0
    grown = [refine([image], probability, volume(cut, np.uint8), 1,
                    [Stroke.click(labels.TransformIndexToPhysicalPoint((27, 20, 12)))],
                    settings=RefineSettings(recalibration_margin_negative=m))
             for m in (None, 3.0)]
    assert grown[0].added.sum() > 200
    assert np.array_equal(sitk.GetArrayFromImage(grown[0].labels),
                          sitk.GetArrayFromImage(grown[1].labels))


def test_a_click_deep_in_a_large_false_region_reaches_across_it():
    """A click at the centre of a false cube 25 mm across lies 12-13 mm from the segment's
    edge: the recalibration's reach grows with that depth (twice it, here 25 mm instead of
    15), so the click removes the whole region rather than the ball of 15 mm round it, and
    the true part beside it stays."""
    zz, yy, xx = np.mgrid[:40, :48, :72].astype(float)
    cube = (np.abs(zz - 20) <= 12) & (np.abs(yy - 24) <= 12) & (np.abs(xx - 24) <= 12)
    ball = np.sqrt((zz - 20) ** 2 + (yy - 24) ** 2 + (xx - 46) ** 2) <= 9
    rng = np.random.default_rng(0)
    image = np.where(cube, 60.0, np.where(ball, 100.0, 20.0)) + rng.normal(0, 3, cube.shape)
    probability = np.where(cube, 0.9, np.where(ball, 0.999, 0.02))
    labels = volume(cube | ball, np.uint8)
    point = labels.TransformIndexToPhysicalPoint((24, 24, 20))
    removed = {}
    for reach in (2.0, 0.0):
        result = refine([volume(image, np.float32)], volume(probability, np.float32), labels,
                        1, [Stroke.click(point, positive=False)],
                        settings=RefineSettings(recalibration_depth_reach=reach))
        after = sitk.GetArrayFromImage(result.labels) == 1
        assert (after & ball).sum() == ball.sum()
        removed[reach] = 1 - (after & cube).sum() / cube.sum()
    assert RefineSettings().recalibration_depth_reach == 2.0
    # 96 % of the cube against 60 % with the reach fixed at 15 mm
    assert removed[2.0] > 0.9 and removed[0.0] < 0.75, removed
