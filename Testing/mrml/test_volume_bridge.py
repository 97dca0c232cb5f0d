"""Volume node <-> SimpleITK image on real MRML (slicer-core)."""

import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from imaging import FLIPS, OBLIQUE, assert_same_image, make_image

from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.volumes import image_from_volume_node, volume_node_from_image

DIRECTIONS = {"identity": np.eye(3), "oblique": OBLIQUE, "oblique-flipped": OBLIQUE @ FLIPS[5]}
DIRECTIONS.update({f"flip{tuple(int(v) for v in np.diag(f))}": f for f in FLIPS[1:]})


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_is_exact(mrml, name, dtype):
    image = make_image(direction=DIRECTIONS[name], dtype=dtype)
    node = volume_node_from_image(mrml.scene, image, "v")
    back = image_from_volume_node(node)
    assert back.GetPixelID() == image.GetPixelID()
    assert_same_image(back, image, atol=1e-9)


def test_node_geometry_is_ras(mrml):
    """A voxel lands at the RAS point Slicer computes from the node's own matrix."""
    image = make_image(direction=OBLIQUE @ FLIPS[3])
    node = volume_node_from_image(mrml.scene, image, "v")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    for ijk in [(0, 0, 0), (3, 7, 2), (10, 8, 5)]:
        ras = matrix.MultiplyPoint((*ijk, 1.0))[:3]
        lps = image.TransformIndexToPhysicalPoint(ijk)
        np.testing.assert_allclose(ras_lps(np.array(lps)), ras, atol=1e-9)


def test_reading_copies_and_never_changes_the_node(mrml):
    image = make_image()
    node = volume_node_from_image(mrml.scene, image, "user volume")
    mtime = node.GetImageData().GetMTime()
    back = image_from_volume_node(node)
    view = sitk.GetArrayViewFromImage(back)
    assert not np.shares_memory(view, image_from_volume_node(node))
    back[0, 0, 0] = 12345
    assert image_from_volume_node(node)[0, 0, 0] == image[0, 0, 0]
    assert node.GetImageData().GetMTime() == mtime


def test_ras_lps_is_its_own_inverse():
    rng = np.random.default_rng(0)
    for shape in [(3,), (3, 3), (4, 4)]:
        value = rng.normal(size=shape)
        np.testing.assert_allclose(ras_lps(ras_lps(value)), value)
    with pytest.raises(ValueError):
        ras_lps(np.zeros(5))
