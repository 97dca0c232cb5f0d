"""Multi-b DWI nodes as Slicer makes them, read into the engine's DiffusionSeries.

Three kinds of node hold every b-value of a DWI acquisition in Slicer:

- a MultiVolume node (``vtkMRMLMultiVolumeNode``, a scalar volume whose image has one component
  per frame; MultiVolumeExplorer's ``MRML/vtkMRMLMultiVolumeNode.h``), as the DICOM module's
  MultiVolumeImporter plugin loads a DWI series grouped by b-value. Its attributes
  (``MultiVolumeImporterPlugin.py``, ``initMultiVolumes``) are ``MultiVolume.FrameLabels``: the
  frames' b-values, comma-separated; ``MultiVolume.FrameIdentifyingDICOMTagName``: one of
  ``Siemens.B-value`` (0019,100c), ``GE.B-value`` (0043,1039, the 10^9 offset already taken off),
  ``Philips.B-value`` (2001,1003), ``Standard.B-value`` (0018,9087); and
  ``MultiVolume.FrameIdentifyingDICOMTagUnits`` ``sec/mm2``;
- a Sequence node of scalar volumes (``Libs/MRML/Core/vtkMRMLSequenceNode.h``:
  ``GetNumberOfDataNodes``, ``GetNthDataNode``, ``GetNthIndexValue``, ``GetIndexName``,
  ``GetIndexUnit``). The same plugin's "Volume Sequence" loadable makes one with index values
  "0", "1", ... (frame numbers) and copies the MultiVolume attributes onto the sequence node
  (``MultiVolumeImporterPlugin.load``); a sequence indexed by b-value (index name 'b-value' or
  unit s/mm2), or whose volumes carry a b-value attribute, is read too;
- a DiffusionWeightedVolume node (``Libs/MRML/Core/vtkMRMLDiffusionWeightedVolumeNode.h``:
  ``GetBValues``, ``GetDiffusionGradients``, one image component per gradient), as Slicer loads
  a DWMRI NRRD (``vtkMRMLNRRDStorageNode::ParseDiffusionInformation``).

Every frame is copied out of the scene (the engine never sees a node), with its geometry.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.diffusion import DiffusionImage, DiffusionSeries
from OncoSegCommonLib.volumes import image_from_volume_node

FRAME_LABELS = "MultiVolume.FrameLabels"
FRAME_TAG = "MultiVolume.FrameIdentifyingDICOMTagName"
# MultiVolumeImporterPlugin.multiVolumeTags: the frame tags that are b-values
B_VALUE_FRAME_TAGS = {
    "Siemens.B-value": "Siemens B_value (0019,100C)",
    "GE.B-value": "GE slop_int_6 (0043,1039)",
    "Philips.B-value": "Philips DiffusionBValue (2001,1003)",
    "Standard.B-value": "DiffusionBValue (0018,9087)",
}
B_VALUE_UNITS = ("s/mm2", "s/mm^2", "sec/mm2", "s/mm²", "s mm-2")


def is_diffusion_node(node: Any) -> bool:
    """A node that can hold every b-value of a DWI acquisition (see the module docstring)."""
    if node is None:
        return False
    if node.IsA("vtkMRMLDiffusionWeightedVolumeNode") or node.IsA("vtkMRMLMultiVolumeNode"):
        return True
    if node.IsA("vtkMRMLSequenceNode"):
        return node.GetDataNodeClassName() in ("vtkMRMLScalarVolumeNode",
                                               "vtkMRMLMultiVolumeNode") or \
            node.GetAttribute(FRAME_LABELS) is not None
    return node.IsA("vtkMRMLScalarVolumeNode") and node.GetAttribute(FRAME_LABELS) is not None


def diffusion_nodes(scene: Any) -> list[Any]:
    """Every node in the scene a DWI input could be."""
    found = []
    for class_name in ("vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLScalarVolumeNode",
                       "vtkMRMLSequenceNode"):
        nodes = scene.GetNodesByClass(class_name)
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if is_diffusion_node(node) and node not in found:
                found.append(node)
    return found


def _name(node: Any) -> str:
    return f"dwi ('{node.GetName()}')"


def _frame_labels(node: Any, count: int) -> tuple[list[float], str]:
    """b-values from a MultiVolume node's (or its sequence's) attributes."""
    tag = node.GetAttribute(FRAME_TAG) or ""
    if tag not in B_VALUE_FRAME_TAGS:
        raise InputError(_name(node), f"its frames are labelled by '{tag or 'nothing'}', not by "
                         f"b-value ({', '.join(B_VALUE_FRAME_TAGS)}): it is not a DWI series")
    try:
        values = [float(v) for v in (node.GetAttribute(FRAME_LABELS) or "").split(",") if v]
    except ValueError:
        raise InputError(_name(node), f"its {FRAME_LABELS} attribute is not a list of numbers: "
                         f"'{node.GetAttribute(FRAME_LABELS)}'") from None
    if len(values) != count:
        raise InputError(_name(node), f"has {count} frames but {len(values)} b-values in its "
                         f"{FRAME_LABELS} attribute")
    return values, f"{B_VALUE_FRAME_TAGS[tag]}, as Slicer's MultiVolumeImporter read it"


def _components(image: sitk.Image) -> list[sitk.Image]:
    if image.GetNumberOfComponentsPerPixel() == 1:
        return [image]
    return [sitk.VectorIndexSelectionCast(image, k)
            for k in range(image.GetNumberOfComponentsPerPixel())]


def _copy(node: Any, what: str) -> sitk.Image:
    try:
        return image_from_volume_node(node)
    except ValueError as error:
        raise InputError(what, str(error)) from None


def _from_multi_component(node: Any) -> DiffusionSeries:
    frames = _components(_copy(node, _name(node)))
    if node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        b_values = node.GetBValues()
        gradients = node.GetDiffusionGradients()
        count = 0 if b_values is None else b_values.GetNumberOfTuples()
        if count != len(frames):
            raise InputError(_name(node), f"has {len(frames)} image components but {count} "
                             "b-values")
        images = []
        for k in range(count):
            direction = None
            if gradients is not None and gradients.GetNumberOfTuples() == count:
                vector = np.asarray(gradients.GetTuple3(k), float)
                norm = float(np.linalg.norm(vector))
                direction = tuple(float(v) for v in vector / norm) if norm else (0.0, 0.0, 0.0)
            images.append(DiffusionImage(frames[k], float(b_values.GetValue(k)), direction))
        return DiffusionSeries(tuple(images), _name(node),
                               "the DWI node's b-values (DWMRI keys)")
    values, source = _frame_labels(node, len(frames))
    return DiffusionSeries(tuple(DiffusionImage(frames[k], values[k])
                                 for k in range(len(frames))), _name(node), source)


_B_ATTRIBUTE = re.compile(r"(^|[^a-z])(diffusion)?b-?value$", re.IGNORECASE)


def _attribute_b_value(node: Any) -> float | None:
    for name in node.GetAttributeNames() or ():
        if _B_ATTRIBUTE.search(name.replace("_", "-").replace(" ", "")):
            try:
                return float(node.GetAttribute(name))
            except (TypeError, ValueError):
                continue
    return None


def _from_sequence(node: Any) -> DiffusionSeries:
    count = node.GetNumberOfDataNodes()
    if count == 0:
        raise InputError(_name(node), "is an empty sequence")
    volumes = [node.GetNthDataNode(i) for i in range(count)]
    for i, volume in enumerate(volumes):
        if volume is None or not volume.IsA("vtkMRMLScalarVolumeNode"):
            kind = volume.GetClassName() if volume is not None else "nothing"
            raise InputError(_name(node), f"item {i} is a {kind}, not a scalar volume")
    if node.GetAttribute(FRAME_LABELS) is not None:  # MultiVolumeImporter's volume sequence
        values, source = _frame_labels(node, count)
        try:
            frames = [int(float(node.GetNthIndexValue(i))) for i in range(count)]
        except ValueError:
            frames = list(range(count))
        if sorted(frames) != list(range(count)):
            frames = list(range(count))
        b_values = [values[f] for f in frames]
    elif any(w in node.GetIndexName().lower().replace(" ", "").replace("_", "-")
             for w in ("b-value", "bvalue")) or node.GetIndexUnit().strip() in B_VALUE_UNITS:
        try:
            b_values = [float(node.GetNthIndexValue(i)) for i in range(count)]
        except ValueError:
            raise InputError(_name(node), "its index values are not numbers") from None
        source = f"the sequence's index ({node.GetIndexName() or node.GetIndexUnit()})"
    else:
        attributes = [_attribute_b_value(v) for v in volumes]
        if any(b is None for b in attributes):
            raise InputError(_name(node), "has no b-values: neither a MultiVolume.FrameLabels "
                             "attribute, nor a b-value index (index name 'b-value' or unit "
                             "s/mm2), nor a b-value attribute on each volume")
        b_values = [float(b) for b in attributes]  # type: ignore[arg-type]
        source = "the volumes' b-value attributes"
    series = []
    for k, volume in enumerate(volumes):
        parts = _components(_copy(volume, f"{_name(node)} item {k}"))
        series += [DiffusionImage(part, b_values[k]) for part in parts]
    return DiffusionSeries(tuple(series), _name(node), source)


def diffusion_series_from_node(node: Any) -> DiffusionSeries:
    """Copies of every frame of a MultiVolume, Sequence or DiffusionWeightedVolume node, each
    with its b-value. Main thread (reads the scene)."""
    if node.IsA("vtkMRMLSequenceNode"):
        return _from_sequence(node)
    if node.IsA("vtkMRMLScalarVolumeNode"):
        return _from_multi_component(node)
    raise InputError(_name(node), f"is a {node.GetClassName()}: the DWI input is a MultiVolume, "
                     "Sequence or DiffusionWeightedVolume node")
