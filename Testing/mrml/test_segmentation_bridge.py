"""Label image <-> segmentation node, probability overlays, on real MRML (slicer-core)."""

import numpy as np
import pytest
import SimpleITK as sitk
from imaging import OBLIQUE, assert_same_image, make_image

from oncoseg.tasks import SegmentSpec
from oncoseg.terminology import Code, Terminology
from OncoSegCommonLib.probability import (
    COLOR_TABLE_NAME,
    set_overlay_opacity,
    show_probability_map,
)
from OncoSegCommonLib.segmentations import (
    labels_from_segmentation_node,
    segment_id,
    segmentation_node_from_labels,
)
from OncoSegCommonLib.volumes import volume_node_from_image

BLADDER = Terminology(Code("SCT", "123037004", "Anatomical Structure"),
                      Code("SCT", "89837001", "Urinary bladder"))
SPECS = (
    SegmentSpec(1, "Femoral head L", (0.9, 0.8, 0.3)),
    SegmentSpec(3, "Bladder", (0.85, 0.65, 0.25), BLADDER),
    SegmentSpec(7, "Nodal CTV", (0.3, 0.6, 0.9)),  # left empty on purpose
)


def labels_on(reference):
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    array[1:3, 2:6, 2:7] = 1
    array[3:5, 5:8, 6:10] = 3
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(reference)
    return labels


def test_labels_round_trip_through_a_segmentation_node(mrml):
    reference = make_image(direction=OBLIQUE, shape_zyx=(6, 10, 12))
    volume = volume_node_from_image(mrml.scene, reference, "CT")
    before = mrml.scene.GetNumberOfNodes()
    labels = labels_on(reference)
    node = segmentation_node_from_labels(mrml.scene, labels, SPECS, volume, "OARs")
    # only the segmentation node and its display node were added (temporary labelmaps removed)
    added = mrml.scene.GetNumberOfNodes() - before
    assert added == 2, mrml.node_names()
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName()
            for i in range(segmentation.GetNumberOfSegments())] == [s.name for s in SPECS]
    bladder = segmentation.GetSegment(segment_id(SPECS[1]))
    np.testing.assert_allclose(bladder.GetColor(), SPECS[1].color)
    assert Terminology.from_slicer(bladder.GetTerminology()) == BLADDER
    back = labels_from_segmentation_node(node, volume, SPECS)
    assert_same_image(back, labels, atol=1e-6)
    assert mrml.scene.GetNumberOfNodes() - before == 2


def test_probability_overlay(mrml):
    reference = make_image(shape_zyx=(5, 8, 9))
    background = volume_node_from_image(mrml.scene, reference, "T2")
    composite = mrml.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # a slice view
    probability = sitk.GetImageFromArray(
        np.linspace(0, 1, 5 * 8 * 9, dtype=np.float32).reshape(5, 8, 9))
    probability.CopyInformation(reference)
    node = show_probability_map(mrml.scene, probability, "Tumour probability", background,
                                opacity=0.4)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == COLOR_TABLE_NAME
    assert display.GetApplyThreshold() and abs(display.GetLowerThreshold() - 0.05) < 1e-9
    assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)
    assert composite.GetForegroundVolumeID() == node.GetID()
    assert composite.GetBackgroundVolumeID() == background.GetID()
    assert abs(composite.GetForegroundOpacity() - 0.4) < 1e-9
    set_overlay_opacity(mrml.scene, 0.8)
    assert abs(composite.GetForegroundOpacity() - 0.8) < 1e-9
    # refreshing reuses the node and the colour table
    count = mrml.scene.GetNumberOfNodes()
    show_probability_map(mrml.scene, probability, "Tumour probability", node=node)
    assert mrml.scene.GetNumberOfNodes() == count


def test_comparing_a_segment_that_a_later_one_overlaps_keeps_all_its_voxels(mrml):
    """A reader's segmentation with a tumour core and, drawn after it, a whole tumour around
    it (Segment Editor with overlap allowed): compared from a label map of every segment, the
    core lost every voxel to the whole tumour and scored Dice 0.000 against itself (the
    RectalSeg and OARSeg compare panels, until 2026-12-07)."""
    from OncoSegCommonLib.compare import compare_segmentations
    from OncoSegCommonLib.segmentations import set_segments_from_labels

    reference = make_image(direction=OBLIQUE, shape_zyx=(10, 20, 20))
    volume = volume_node_from_image(mrml.scene, reference, "ct")
    core = np.zeros((10, 20, 20), bool)
    core[3:6, 5:10, 5:10] = True
    whole = np.zeros_like(core)
    whole[2:8, 3:15, 3:15] = True

    def labels(mask, value):
        image = sitk.GetImageFromArray(mask.astype(np.uint8) * value)
        image.CopyInformation(reference)
        return image

    core_spec, whole_spec = SegmentSpec(1, "core", (0.9, 0.2, 0.2)), \
        SegmentSpec(2, "whole", (0.2, 0.9, 0.2))
    drawn = segmentation_node_from_labels(mrml.scene, labels(core, 1), [core_spec], volume,
                                          "reader")
    set_segments_from_labels(drawn, labels(whole, 2), [whole_spec])
    alone = segmentation_node_from_labels(mrml.scene, labels(core, 1), [core_spec], volume,
                                          "core alone")
    figures = compare_segmentations(alone, drawn, volume, None, segment_id(core_spec),
                                    segment_id(core_spec))
    assert figures["dsc"] == 1.0 and figures["hd95_mm"] == 0.0
    union = compare_segmentations(alone, drawn, volume)  # all segments: their union
    assert union["dsc"] == pytest.approx(2 * core.sum() / (core.sum() + whole.sum()))
