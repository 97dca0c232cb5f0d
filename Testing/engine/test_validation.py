import numpy as np
import pytest
import SimpleITK as sitk
from imaging import make_image

from oncoseg.errors import InputError
from oncoseg.validation import (
    MAX_SLICE_TILT_DEGREES,
    check_axial,
    check_structure,
    check_volume,
    count_nonfinite,
    intensity_range,
    volume_problems,
)


def test_a_good_volume_passes():
    check_volume(make_image(), "t2w")


@pytest.mark.parametrize(("image", "message"), [
    (sitk.Image(8, 8, sitk.sitkFloat32), "t2w: is a 2D image"),
    (sitk.Image(8, 8, 1, sitk.sitkFloat32), "t2w: is a single slice; a 3D series is needed"),
    (sitk.Image(1, 8, 6, sitk.sitkFloat32), "t2w: is a single slice; a 3D series is needed"),
    (sitk.Image(1, 1, 1, sitk.sitkFloat32), "t2w: has 1 voxel; a 3D volume is needed"),
    (sitk.Image(1, 1, 9, sitk.sitkFloat32), "t2w: is a single row of voxels"),
    (sitk.Image([8, 8, 6, 3], sitk.sitkFloat32), "t2w: is a 4D image"),
    (sitk.Image([8, 8, 6], sitk.sitkVectorFloat32, 3), "3 components"),
    (sitk.Image(8, 8, 6, sitk.sitkInt16), "is constant"),
])
def test_unusable_images_are_named(image, message):
    with pytest.raises(InputError, match=message):
        check_volume(image, "t2w")


def test_nan_voxels_are_counted():
    array = sitk.GetArrayFromImage(make_image(dtype=np.float32))
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="dwi_b0: contains 3 NaN and 1 infinite voxels"):
        check_volume(sitk.GetImageFromArray(array), "dwi_b0")
    assert count_nonfinite(sitk.GetImageFromArray(array)) == (3, 1)
    assert count_nonfinite(make_image()) == (0, 0)  # integer voxels are always finite


def test_nan_beats_constant_and_the_range_ignores_nan():
    """A NaN-filled image is named for its NaN voxels, not called constant."""
    array = np.full((4, 5, 6), np.nan, np.float32)
    array[0, 0, 0] = 7.0
    image = sitk.GetImageFromArray(array)
    with pytest.raises(InputError, match="contains 119 NaN and 0 infinite voxels"):
        check_volume(image, "t1")
    assert intensity_range(image) == (7.0, 7.0)
    assert all(np.isnan(intensity_range(sitk.GetImageFromArray(array[1:]))))


def test_problems_are_listed_without_raising():
    """``info`` describes what a method refuses: the same words, as a list."""
    image = sitk.Image(1, 1, 1, sitk.sitkFloat32)
    assert volume_problems(image, "x", min_slices=2) == [
        "has 1 voxel; a 3D volume is needed (size 1 x 1 x 1)"]
    assert volume_problems(make_image(), "x") == []
    with pytest.raises(InputError, match="is a 4D image"):
        check_structure(sitk.Image([6, 6, 5, 3], sitk.sitkFloat32), "x")


def test_minimum_slices():
    with pytest.raises(InputError, match="only 2 slices"):
        check_volume(make_image(shape_zyx=(2, 20, 20)), "t2w", min_slices=3)


@pytest.mark.parametrize(("degrees", "accepted"), [(MAX_SLICE_TILT_DEGREES, True), (31.0, False)])
def test_slices_tilted_up_to_the_limit_are_axial_after_a_nifti_round_trip(tmp_path, degrees,
                                                                        accepted):
    """NIfTI keeps the direction in float32: a grid turned by exactly 30 degrees reads back as
    30.0000015 degrees and was refused as "tilted 30 degrees" (issue 17 asks for obliques up
    to 30 degrees)."""
    from scipy.spatial.transform import Rotation

    image = make_image((6, 10, 12), Rotation.from_euler("x", degrees, degrees=True).as_matrix(),
                       spacing=(2.0, 2.0, 5.0))
    sitk.WriteImage(image, str(tmp_path / "dwi.nii.gz"))
    stored = sitk.ReadImage(str(tmp_path / "dwi.nii.gz"))
    if accepted:
        check_axial(stored, "dwi_b0", "give the axial series")
    else:
        with pytest.raises(InputError, match=r"dwi_b0: is not an axial series .* tilted 31 "):
            check_axial(stored, "dwi_b0", "give the axial series")
