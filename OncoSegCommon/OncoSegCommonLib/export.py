"""Export a segmentation node through the engine's writers (DICOM SEG, RTSTRUCT, NRRD, NIfTI,
``.seg.nrrd``).

Each segment is exported on the reference volume's grid by Slicer's own segmentation logic (so
what is written is what Segment Editor shows, closed-surface edits included), one segment at a
time so that overlapping segments stay whole. The DICOM formats reference the series the
reference volume was loaded from (Slicer's DICOM database, through the volume's instance UIDs)
or a series folder the user names. Nothing is added to the scene.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import SimpleITK as sitk
import vtk

from oncoseg.errors import InputError
from oncoseg.export import ExportResult, export_segmentation
from oncoseg.export_formats import DICOM_FORMATS
from oncoseg.io.dicom import Algorithm
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.io.volumes import DicomSeries, choose_dicom_series, dicom_series_from_files
from OncoSegCommonLib.scenes import temporary_nodes
from OncoSegCommonLib.segmentations import MODEL_ATTRIBUTE
from OncoSegCommonLib.volumes import image_from_volume_node

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM volume plugin
SERIES_FOLDER_ATTRIBUTE = "OncoSeg.seriesFolder"  # set on volumes OncoSeg read from a folder


def segmentation_of_node(node: Any, reference_volume_node: Any) -> Segmentation:
    """The node's segments (names, colours, terminology) on the reference volume's grid."""
    import slicer

    scene = node.GetScene()
    segmentation = node.GetSegmentation()
    masks, segments = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(index)
        vtk_segment = segmentation.GetSegment(sid)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        with temporary_nodes(scene):
            labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "OncoSeg export")
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    node, ids, labelmap, reference_volume_node,
                    slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise RuntimeError(f"Slicer could not export segment '{vtk_segment.GetName()}'")
            image = image_from_volume_node(labelmap)
        masks.append(sitk.GetArrayViewFromImage(image) > 0)
        segments.append(Segment(sid, vtk_segment.GetName(), tuple(vtk_segment.GetColor()),
                                terminology=vtk_segment.GetTerminology() or ""))
    if not segments:
        raise InputError(node.GetName(), "has no segments to export")
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    return Segmentation.from_masks(reference, [np.array(m) for m in masks], segments)


def series_of_volume(volume_node: Any, database: Any = None) -> DicomSeries | None:
    """The DICOM series a volume was loaded from: the series folder OncoSeg read it from, or
    its instances in Slicer's DICOM database; None when it was not loaded from DICOM."""
    folder = volume_node.GetAttribute(SERIES_FOLDER_ATTRIBUTE)
    if folder:
        return choose_dicom_series(folder)
    uids = (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not uids or database is None:
        return None
    files = [database.fileForInstance(uid) for uid in uids]
    missing = [uid for uid, f in zip(uids, files, strict=True) if not f or not os.path.isfile(f)]
    if missing:
        raise InputError(volume_node.GetName(), f"was loaded from DICOM, but {len(missing)} of "
                         "its files are no longer in the DICOM database; choose the series "
                         "folder instead")
    return dicom_series_from_files(files)


def export_node(segmentation_node: Any, reference_volume_node: Any, output: str, fmt: str,
                series_folder: str | None = None, series_uid: str | None = None,
                overwrite: bool = False, database: Any = None,
                label: str = "OncoSeg") -> ExportResult:
    """Write the segmentation node as ``fmt``; DICOM formats need the reference volume's
    series, from ``series_folder`` or else from the DICOM database."""
    series = None
    if fmt in DICOM_FORMATS:
        series = choose_dicom_series(series_folder, series_uid) if series_folder else \
            series_of_volume(reference_volume_node, database)
        if series is None:
            raise InputError(reference_volume_node.GetName(), (
                f"was not loaded from Slicer's DICOM database, so {fmt} export needs the "
                "folder of its DICOM series"))
    segmentation = segmentation_of_node(segmentation_node, reference_volume_node)
    return export_segmentation(segmentation, output, fmt, series, overwrite, label,
                               algorithm_of_node(segmentation_node))


def algorithm_of_node(segmentation_node: Any) -> Algorithm:
    """The model an OncoSeg run recorded on the node (corrections by hand keep it: the
    reader's edits start from that model's result); OncoSeg alone for any other node."""
    text = segmentation_node.GetAttribute(MODEL_ATTRIBUTE)
    try:
        model = json.loads(text) if text else None
    except ValueError:
        model = None
    return Algorithm.of_model(model if isinstance(model, dict) else None)
