import numpy as np
import pytest
import SimpleITK as sitk
from imaging import FLIPS, OBLIQUE, make_image

from oncoseg.errors import InputError
from oncoseg.geometry import (
    check_overlap,
    grid_with_spacing,
    orientation_code,
    overlap_fraction,
    physical_bounds,
    resample_to_reference,
)


def test_bounds_of_flipped_and_oblique_grids_match_corner_points():
    for direction in [*FLIPS, OBLIQUE]:
        image = make_image(direction=direction)
        low, high = physical_bounds(image)
        size = image.GetSize()
        corners = []
        for i in (-0.5, size[0] - 0.5):
            for j in (-0.5, size[1] - 0.5):
                for k in (-0.5, size[2] - 0.5):
                    corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
        np.testing.assert_allclose(low, np.min(corners, axis=0), atol=1e-9)
        np.testing.assert_allclose(high, np.max(corners, axis=0), atol=1e-9)


def test_non_overlapping_images_are_refused():
    a = make_image(origin=(0, 0, 0))
    b = make_image(origin=(500, 0, 0))
    assert overlap_fraction(a, b) == 0.0
    with pytest.raises(InputError, match="dwi_b0: does not overlap t2w in physical space"):
        check_overlap(b, a, "dwi_b0", "t2w")
    with pytest.raises(InputError, match="b1000: does not overlap b0"):
        resample_to_reference(b, a, names=("b1000", "b0"))


def test_flipped_copy_resamples_back_exactly():
    image = make_image(dtype=np.float32)
    array = sitk.GetArrayFromImage(image)
    for flip in FLIPS:
        # the same voxels stored in the opposite order along flipped axes
        flipped_array = array[::int(flip[2, 2]), ::int(flip[1, 1]), ::int(flip[0, 0])]
        flipped = sitk.GetImageFromArray(np.ascontiguousarray(flipped_array))
        flipped.SetSpacing(image.GetSpacing())
        flipped.SetDirection(tuple((np.eye(3) @ flip).ravel()))
        size = np.array(image.GetSize()) - 1
        last = np.where(np.diag(flip) < 0, size, 0)
        flipped.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in last]))
        for interpolation in ("nearest", "linear"):
            back = resample_to_reference(flipped, image, interpolation)
            np.testing.assert_allclose(sitk.GetArrayViewFromImage(back), array, atol=1e-3)


def test_oblique_resampling_matches_physical_points():
    reference = make_image(direction=np.eye(3), spacing=(1.0, 1.0, 1.0), shape_zyx=(10, 12, 14),
                           origin=(0, 0, 0))
    # a smooth function of physical position, sampled on an oblique grid
    oblique = make_image(direction=OBLIQUE, spacing=(0.5, 0.5, 0.5), shape_zyx=(40, 40, 40),
                         origin=(-4, -4, -4), dtype=np.float32)
    zyx = np.indices(sitk.GetArrayViewFromImage(oblique).shape).reshape(3, -1)
    ijk = zyx[::-1].T.astype(float)
    matrix = OBLIQUE * 0.5
    points = ijk @ matrix.T + np.array(oblique.GetOrigin())
    values = (points[:, 0] * 0.3 + points[:, 1] * 0.2 - points[:, 2] * 0.1).astype(np.float32)
    smooth = sitk.GetImageFromArray(values.reshape(40, 40, 40))
    smooth.CopyInformation(oblique)
    out = sitk.GetArrayFromImage(resample_to_reference(smooth, reference, "linear", -999))
    zyx_r = np.indices(out.shape).reshape(3, -1)
    p = zyx_r[::-1].T.astype(float)  # reference has identity direction, unit spacing
    expected = (p[:, 0] * 0.3 + p[:, 1] * 0.2 - p[:, 2] * 0.1).reshape(out.shape)
    # points at least one voxel inside the oblique grid (ITK falls back to nearest neighbour
    # within half a voxel of the border)
    continuous = (p - np.array(oblique.GetOrigin())) @ np.linalg.inv(matrix).T
    inside = np.all((continuous >= 1) & (continuous <= 38), axis=1).reshape(out.shape)
    assert inside.mean() > 0.2
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-3)


def test_labels_stay_labels():
    labels = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 4, (5, 6, 7))
                                    .astype(np.uint8))
    target = grid_with_spacing(labels, (0.5, 0.5, 0.5))
    out = resample_to_reference(labels, target, "nearest")
    assert out.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(out))) <= {0, 1, 2, 3}
    assert target.GetSize() == (14, 12, 10)
    np.testing.assert_allclose(physical_bounds(target)[0], physical_bounds(labels)[0])


def test_orientation_codes():
    assert orientation_code(make_image(direction=np.eye(3))) == "LPS"
    assert orientation_code(make_image(direction=np.diag([-1.0, -1.0, 1.0]))) == "RAS"
    assert orientation_code(make_image(direction=OBLIQUE)) == "oblique"
