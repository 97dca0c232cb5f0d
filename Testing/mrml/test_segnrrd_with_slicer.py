"""`.seg.nrrd` files cross between oncoseg.io and Slicer's own storage node unchanged.

Voxels are compared in physical space through Slicer's oriented image data (its own
image-to-world matrix), not through OncoSeg's bridge, so both sides are independent.
"""

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from imaging import OBLIQUE, blob_labels, make_image
from vtk.util import numpy_support

from oncoseg.io import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from OncoSegCommonLib.coordinates import ras_lps


def slicer_segment_points(segmentation, segment_id):
    """LPS points (rounded to 1e-4 mm) of one segment's voxels, read through Slicer."""
    segment = segmentation.GetSegment(segment_id)
    labelmap = segment.GetRepresentation("Binary labelmap")
    extent = labelmap.GetExtent()
    if extent[1] < extent[0]:
        return set()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
    k, j, i = np.nonzero(values == segment.GetLabelValue())
    ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)], axis=1)
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    lps = (ras_lps(m) @ ijk.T).T[:, :3]
    return {tuple(p) for p in np.round(lps, 4)}


def engine_segment_points(seg, key):
    mask = seg.mask(key)
    k, j, i = np.nonzero(mask)
    image = seg.layers[seg.segment(key).layer]
    return {tuple(np.round(image.TransformIndexToPhysicalPoint((int(a), int(b), int(c))), 4))
            for a, b, c in zip(i, j, k, strict=True)}


def overlapping_segmentation():
    reference = make_image(direction=OBLIQUE, shape_zyx=(7, 10, 12))
    shape = sitk.GetArrayViewFromImage(reference).shape
    a = np.zeros(shape, bool)
    a[1:5, 2:7, 3:9] = True
    b = np.zeros(shape, bool)
    b[3:6, 5:9, 6:11] = True
    return Segmentation.from_masks(reference, [a, b], [
        Segment("tumour", "Rectal tumour", (0.85, 0.2, 0.2)),
        Segment("wall", "Rectal wall", (0.2, 0.6, 0.9)),
    ])


def load_with_slicer(mrml, path):
    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node


def test_engine_file_reads_in_slicer(mrml, tmp_path):
    single = Segmentation.from_label_image(
        blob_labels(make_image(direction=OBLIQUE)),
        [Segment(f"s{i}", f"Organ {i}", (0.1 * i, 0.5, 1 - 0.1 * i), label_value=i)
         for i in (1, 2, 3)])
    for seg, name in [(single, "single"), (overlapping_segmentation(), "layers")]:
        path = write_seg_nrrd(seg, tmp_path / f"{name}.seg.nrrd")
        node = load_with_slicer(mrml, path)
        segmentation = node.GetSegmentation()
        assert segmentation.GetNumberOfSegments() == len(seg.segments)
        for expected in seg.segments:
            segment = segmentation.GetSegment(expected.id)
            assert segment.GetName() == expected.name
            np.testing.assert_allclose(segment.GetColor(), expected.color, atol=1e-5)
            assert slicer_segment_points(segmentation, expected.id) == \
                engine_segment_points(seg, expected.id)


def test_slicer_file_reads_in_engine(mrml, tmp_path):
    for name, seg in [("single", Segmentation.from_label_image(
            blob_labels(make_image(direction=OBLIQUE @ np.diag([1.0, -1.0, -1.0]))),
            [Segment(f"s{i}", f"Label {i}", (0.3, 0.2 * i, 0.4), label_value=i)
             for i in (1, 2, 3)])), ("layers", overlapping_segmentation())]:
        node = load_with_slicer(mrml, write_seg_nrrd(seg, tmp_path / f"in-{name}.seg.nrrd"))
        node.GetSegmentation().GetSegment(seg.segments[0].id).SetName("Renamed in Slicer")
        node.GetSegmentation().GetSegment(seg.segments[0].id).SetColor(0.25, 0.5, 0.75)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        mrml.scene.AddNode(storage)
        out = tmp_path / f"slicer-{name}.seg.nrrd"
        storage.SetFileName(str(out))
        assert storage.WriteData(node) == 1
        back = read_seg_nrrd(out)
        segmentation = node.GetSegmentation()
        assert [s.name for s in back.segments] == \
            ["Renamed in Slicer"] + [s.name for s in seg.segments[1:]]
        np.testing.assert_allclose(back.segments[0].color, (0.25, 0.5, 0.75), atol=1e-5)
        for expected in seg.segments:
            assert engine_segment_points(back, expected.id) == \
                slicer_segment_points(segmentation, expected.id) == \
                engine_segment_points(seg, expected.id)


def test_segment_names_beyond_ascii_cross_both_ways(mrml, tmp_path):
    """Slicer writes segment names as UTF-8; OncoSeg's writer failed on them
    (UnicodeEncodeError) and its reader dropped their letters ('Harnrhre'), until 2026-12-06."""
    names = ["Harnröhre", "Мочевой пузырь", "膀胱"]
    seg = Segmentation.from_label_image(
        blob_labels(make_image()),
        [Segment(f"s{i}", names[i - 1], (0.2, 0.3, 0.4), label_value=i) for i in (1, 2, 3)])
    path = write_seg_nrrd(seg, tmp_path / "names.seg.nrrd")
    assert [s.name for s in read_seg_nrrd(path).segments] == names
    node = load_with_slicer(mrml, path)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetSegment(f"s{i}").GetName() for i in (1, 2, 3)] == names
    segmentation.GetSegment("s1").SetName("Blase – Wand 膀胱壁")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml.scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node) == 1
    assert [s.name for s in read_seg_nrrd(tmp_path / "slicer.seg.nrrd").segments] == \
        ["Blase – Wand 膀胱壁", *names[1:]]
