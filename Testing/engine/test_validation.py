import numpy as np
import pytest
import SimpleITK as sitk
from imaging import make_image

from oncoseg.errors import InputError
from oncoseg.validation import check_volume


def test_a_good_volume_passes():
    check_volume(make_image(), "t2w")


@pytest.mark.parametrize(("image", "message"), [
    (sitk.Image(8, 8, sitk.sitkFloat32), "t2w: is a 2D image"),
    (sitk.Image(8, 8, 1, sitk.sitkFloat32), "t2w: is a 2D image"),
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
    with pytest.raises(InputError, match="dwi_b0: contains 4 NaN or infinite voxels"):
        check_volume(sitk.GetImageFromArray(array), "dwi_b0")


def test_minimum_slices():
    with pytest.raises(InputError, match="only 2 slices"):
        check_volume(make_image(shape_zyx=(2, 20, 20)), "t2w", min_slices=3)
