"""Label images <-> segmentation nodes, with the segments' names, colours and terminology.

A result is imported through a temporary labelmap node that is always removed again, so the only
node a call adds is the segmentation node it returns. The segmentation's reference geometry is
the source volume, which DICOM export and Segment Editor both need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from oncoseg.errors import InputError
from oncoseg.tasks import SegmentSpec
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since, temporary_nodes
from OncoSegCommonLib.volumes import image_from_volume_node, volume_node_from_image

# The node attribute naming the model that made a segmentation (result.json's "model", as
# JSON): exports name it in their DICOM objects, and it is saved with the scene.
MODEL_ATTRIBUTE = "OncoSeg.model"
# ... and the task it belongs to (its name): what the "OncoSeg refine" effect reads its
# settings from (oncoseg.tasks.Task.refine_settings)
TASK_ATTRIBUTE = "OncoSeg.task"
# A run's probability maps: a node reference from its segmentation to each map, the map's
# attribute naming its segment (the link survives renaming); scenes saved before the links
# existed are read by add_prediction's names, '<prefix> segmentation' and
# '<prefix> <segment> probability'.
PROBABILITY_REFERENCE_ROLE = "OncoSeg.probability"
PROBABILITY_SEGMENT_ATTRIBUTE = "OncoSeg.segment"
INPUT_REFERENCE_ROLE = "OncoSeg.input"
SEGMENTATION_SUFFIX = " segmentation"
PROBABILITY_SUFFIX = " probability"


def link_probability(segmentation_node: Any, segment: str, volume_node: Any) -> None:
    """Record that ``volume_node`` is the probability map of ``segment`` of the run that made
    ``segmentation_node``."""
    volume_node.SetAttribute(PROBABILITY_SEGMENT_ATTRIBUTE, segment)
    segmentation_node.AddNodeReferenceID(PROBABILITY_REFERENCE_ROLE, volume_node.GetID())


def probability_nodes(segmentation_node: Any) -> dict[str, Any]:
    """Segment name -> probability volume of the run that made ``segmentation_node`` (its
    links, else add_prediction's names); empty for a segmentation OncoSeg did not make. A name
    that several volumes share (a run repeated without removing the first, in a scene without
    links) is refused: which map belongs to this segmentation is then unknown."""
    found: dict[str, Any] = {}
    for index in range(segmentation_node.GetNumberOfNodeReferences(PROBABILITY_REFERENCE_ROLE)):
        node = segmentation_node.GetNthNodeReference(PROBABILITY_REFERENCE_ROLE, index)
        name = node.GetAttribute(PROBABILITY_SEGMENT_ATTRIBUTE) if node is not None else None
        if name:
            found[name] = node
    scene = segmentation_node.GetScene()
    own = segmentation_node.GetName() or ""
    if found or scene is None or not own.endswith(SEGMENTATION_SUFFIX):
        return found
    prefix = own[: -len(SEGMENTATION_SUFFIX)]
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        name = segmentation.GetNthSegment(index).GetName()
        wanted = f"{prefix} {name}{PROBABILITY_SUFFIX}"
        nodes = scene.GetNodesByClassByName("vtkMRMLScalarVolumeNode", wanted)
        if nodes.GetNumberOfItems() > 1:
            raise InputError(wanted, f"names {nodes.GetNumberOfItems()} volumes: which one is "
                             f"the map of '{own}' is unknown; remove or rename the others")
        if nodes.GetNumberOfItems() == 1:
            found[name] = nodes.GetItemAsObject(0)
    return found


def link_inputs(segmentation_node: Any, volume_nodes: Iterable[Any]) -> None:
    """Record the volumes holding the images the model read to make ``segmentation_node``
    (each sequence where the model saw it: a registered one's registered copy), so that a
    correction reads the images the model did, not only the one Segment Editor shows."""
    for node in volume_nodes:
        segmentation_node.AddNodeReferenceID(INPUT_REFERENCE_ROLE, node.GetID())


def input_nodes(segmentation_node: Any) -> list[Any]:
    """The volumes :func:`link_inputs` recorded that are still in the scene; empty for a
    segmentation OncoSeg did not make, or made before it recorded them."""
    count = segmentation_node.GetNumberOfNodeReferences(INPUT_REFERENCE_ROLE)
    found = (segmentation_node.GetNthNodeReference(INPUT_REFERENCE_ROLE, i)
             for i in range(count))
    return [node for node in found if node is not None]


def _consecutive_labels(labels: sitk.Image, segments: Sequence[SegmentSpec]) -> sitk.Image:
    """Segment i -> value i + 1 (what Slicer's import maps onto the i-th segment ID)."""
    array = sitk.GetArrayViewFromImage(labels)
    lookup = np.zeros(max(int(array.max(initial=0)), max(s.label for s in segments)) + 1,
                      np.uint8)
    for index, segment in enumerate(segments, start=1):
        lookup[segment.label] = index
    out = sitk.GetImageFromArray(lookup[array])
    out.CopyInformation(labels)
    return out


def segment_id(spec: SegmentSpec) -> str:
    """Stable IDs let a module find and replace its own segments later."""
    return "OncoSeg_" + "".join(c if c.isalnum() else "_" for c in spec.name)


def segmentation_node_from_labels(
    scene: Any, labels: sitk.Image, segments: Sequence[SegmentSpec], reference_volume_node: Any,
    name: str,
) -> Any:
    """A new segmentation node with one segment per spec (empty segments included)."""
    before = set(node_ids(scene))
    try:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        node.CreateDefaultDisplayNodes()
        set_segments_from_labels(node, labels, segments)
    except Exception:
        remove_nodes_added_since(scene, before)
        raise
    return node


def set_segments_from_labels(node: Any, labels: sitk.Image,
                             segments: Sequence[SegmentSpec]) -> None:
    """Create or overwrite the specs' segments of ``node`` from a label image."""
    scene = node.GetScene()
    segmentation = node.GetSegmentation()
    ids = vtk.vtkStringArray()
    for spec in segments:
        sid = segment_id(spec)
        if segmentation.GetSegment(sid) is None:
            segmentation.AddEmptySegment(sid, spec.name, list(spec.color))
        segment = segmentation.GetSegment(sid)
        segment.SetName(spec.name)
        segment.SetColor(*spec.color)
        if spec.terminology is not None:
            segment.SetTerminology(spec.terminology.to_slicer())
        ids.InsertNextValue(sid)
    with temporary_nodes(scene):
        temporary = volume_node_from_image(scene, _consecutive_labels(labels, segments),
                                           "OncoSeg temporary labelmap", labelmap=True)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            temporary, node, ids)
    if not ok:
        raise RuntimeError(f"Slicer could not import the label map into '{node.GetName()}'")


def exported_segments(node: Any, ids: Sequence[str], reference_volume_node: Any) -> sitk.Image:
    """Slicer's export of the segments ``ids`` onto the reference volume's grid: segment i at
    i + 1, a later segment over an earlier one where they overlap."""
    scene = node.GetScene()
    id_array = vtk.vtkStringArray()
    for sid in ids:
        id_array.InsertNextValue(sid)
    with temporary_nodes(scene):
        temporary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "OncoSeg export")
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            node, id_array, temporary, reference_volume_node,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok:
            raise RuntimeError(f"Slicer could not export '{node.GetName()}' to a label map")
        return image_from_volume_node(temporary)


def segment_mask(node: Any, reference_volume_node: Any, segment: str | None = None
                 ) -> np.ndarray:
    """One segment (by ID), or the union of all, as a boolean (z, y, x) mask on the reference
    volume's grid: exported alone, so a segment another one overlaps keeps all its voxels (in
    a label map of every segment the later one takes them)."""
    segmentation = node.GetSegmentation()
    ids = [segment] if segment is not None else \
        [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return sitk.GetArrayFromImage(exported_segments(node, ids, reference_volume_node)) > 0


def labels_from_segmentation_node(
    node: Any, reference_volume_node: Any, segments: Sequence[SegmentSpec] | None = None,
) -> sitk.Image:
    """The segmentation on the reference volume's grid as a label image.

    With ``segments``, segment IDs are looked up from the specs and voxels get the specs' labels;
    without, every segment in order gets label 1, 2, ...
    """
    segmentation = node.GetSegmentation()
    if segments is None:
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        values = list(range(1, len(ids) + 1))
    else:
        ids = [segment_id(s) for s in segments]
        values = [s.label for s in segments]
        absent = [i for i in ids if segmentation.GetSegment(i) is None]
        if absent:
            raise KeyError(f"segmentation '{node.GetName()}' has no segment {absent[0]}")
    exported = exported_segments(node, ids, reference_volume_node)
    array = sitk.GetArrayViewFromImage(exported)
    lookup = np.zeros(len(ids) + 1, np.uint16 if max(values, default=0) > 255 else np.uint8)
    lookup[1:] = values
    out = sitk.GetImageFromArray(lookup[np.clip(array, 0, len(ids))])
    out.CopyInformation(exported)
    return out
