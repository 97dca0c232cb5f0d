"""Export a segmentation node through the engine's writers (DICOM SEG, RTSTRUCT, NRRD, NIfTI,
``.seg.nrrd``), and the probability maps of the run that made it as a FRACTIONAL DICOM SEG.

Each segment is exported on the reference volume's grid by Slicer's own segmentation logic (so
what is written is what Segment Editor shows, closed-surface edits included), one segment at a
time so that overlapping segments stay whole. The DICOM formats reference the series the
reference volume was loaded from (Slicer's DICOM database, through the volume's instance UIDs)
or a series folder the user names. The probability maps are the volume nodes the run added
beside the segmentation (:func:`OncoSegCommonLib.segmentations.probability_nodes`), copied
out one at a time and sampled onto the series' images as ``oncoseg export`` samples the maps
of an output folder. Nothing is added to the scene.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.export import (
    ExportResult,
    LazyMaps,
    check_reference_matches,
    export_measurements,
    export_probabilities,
    export_segmentation,
)
from oncoseg.export_formats import DICOM_FORMATS, FRACTIONAL, REPORT
from oncoseg.io.dicom import Algorithm
from oncoseg.io.dicom_series import series_identity
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.io.volumes import DicomSeries, choose_dicom_series, dicom_series_from_files
from oncoseg.structure_names import DEFAULT_NAMING
from OncoSegCommonLib import segmentations
from OncoSegCommonLib.segmentations import MODEL_ATTRIBUTE, PROBABILITY_SUFFIX, exported_segments
from OncoSegCommonLib.volumes import image_from_volume_node, refuse_unhardened_transform

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM volume plugin
SERIES_FOLDER_ATTRIBUTE = "OncoSeg.seriesFolder"  # set on volumes OncoSeg read from a folder
# ... and, where that folder holds several series, how the volume's was chosen (UID or pattern)
SERIES_CHOICE_ATTRIBUTE = "OncoSeg.seriesChoice"


def segmentation_of_node(node: Any, reference_volume_node: Any) -> Segmentation:
    """The node's segments (names, colours, terminology) on the reference volume's grid."""
    segmentation = node.GetSegmentation()
    masks, segments = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(index)
        image = exported_segments(node, [sid], reference_volume_node)  # alone: overlaps kept
        masks.append(sitk.GetArrayViewFromImage(image) > 0)
        segments.append(_segment(sid, segmentation.GetSegment(sid)))
    if not segments:
        raise InputError(node.GetName(), "has no segments to export")
    reference = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    reference.CopyInformation(image)
    return Segmentation.from_masks(reference, [np.array(m) for m in masks], segments)


def _segment(sid: str, vtk_segment: Any) -> Segment:
    """A segment's description: name, colour, terminology."""
    return Segment(sid, vtk_segment.GetName(), tuple(vtk_segment.GetColor()),
                   terminology=vtk_segment.GetTerminology() or "")


def series_of_volume(volume_node: Any, database: Any = None) -> DicomSeries | None:
    """The DICOM series a volume was loaded from: the series folder OncoSeg read it from, or
    its instances in Slicer's DICOM database; None when it was not loaded from DICOM."""
    folder = volume_node.GetAttribute(SERIES_FOLDER_ATTRIBUTE)
    if folder:
        return choose_dicom_series(folder, volume_node.GetAttribute(SERIES_CHOICE_ATTRIBUTE))
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


def referenced_series(volume_node: Any, what: str, series_folder: str | None = None,
                      series_uid: str | None = None, database: Any = None) -> DicomSeries:
    """The DICOM series ``what`` (an export) references for ``volume_node``: the one in
    ``series_folder``, else the one the node was loaded from; refused when there is none."""
    series = choose_dicom_series(series_folder, series_uid) if series_folder else \
        series_of_volume(volume_node, database)
    if series_folder:  # chosen by hand: of the patient and coordinates the volume came from
        own = series_of_volume(volume_node, database)
        if own is not None:
            check_reference_matches({volume_node.GetName(): series_identity(own)}, series,
                                    series_folder)
    if series is None:
        raise InputError(volume_node.GetName(), f"was not loaded from Slicer's DICOM database, "
                         f"so {what} needs the folder of its DICOM series")
    return series


def export_node(segmentation_node: Any, reference_volume_node: Any, output: str, fmt: str,
                series_folder: str | None = None, series_uid: str | None = None,
                overwrite: bool = False, database: Any = None,
                label: str = "OncoSeg", probability_nodes: Mapping[str, Any] | None = None,
                maximum_fractional_value: int | None = None,
                naming: str = DEFAULT_NAMING) -> ExportResult:
    """Write the segmentation node as ``fmt``; DICOM formats need the reference volume's
    series, from ``series_folder`` or else from the DICOM database, and name structures by
    ``naming`` (AAPM TG-263 by default). ``dicom-seg-fractional`` writes the run's probability
    maps instead: ``probability_nodes`` (segment name -> volume node), or else the run's
    (:func:`OncoSegCommonLib.segmentations.probability_nodes`). ``dicom-sr`` reports each
    segment's volume as the node holds it now (corrections included), referencing a DICOM SEG
    written beside it."""
    for node in (segmentation_node, reference_volume_node):  # written where it is shown
        refuse_unhardened_transform(f"'{node.GetName()}'", node)
    series = referenced_series(reference_volume_node, f"{fmt} export", series_folder,
                               series_uid, database) if fmt in DICOM_FORMATS else None
    algorithm = algorithm_of_node(segmentation_node)
    if fmt == FRACTIONAL:
        nodes = dict(probability_nodes) if probability_nodes is not None else \
            segmentations.probability_nodes(segmentation_node)
        if not nodes:
            raise InputError(segmentation_node.GetName(), (
                f"has no probability maps in the scene: {FRACTIONAL} exports the maps an "
                f"OncoSeg run adds beside its segmentation ('<name> <segment>{PROBABILITY_SUFFIX}'"
                " volumes); choose the segmentation of such a run"))
        segments = segment_descriptions(segmentation_node, list(nodes))
        maps = LazyMaps({name: partial(image_from_volume_node, node)
                         for name, node in nodes.items()})
        return export_probabilities(maps, segments, output, series, overwrite, label,
                                    algorithm, maximum_fractional_value, naming)
    segmentation = segmentation_of_node(segmentation_node, reference_volume_node)
    if fmt == REPORT:
        return export_measurements(output, series, segmentation, overwrite=overwrite,
                                   label=label, algorithm=algorithm, naming=naming)
    return export_segmentation(segmentation, output, fmt, series, overwrite, label, algorithm,
                               naming)


def segment_descriptions(segmentation_node: Any, names: list[str]) -> list[Segment]:
    """The node's description (colour, terminology) of each segment named, by name; Tissue in
    a default colour for a map whose segment the node no longer has."""
    segmentation = segmentation_node.GetSegmentation()
    described = {}
    for index in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(index)
        segment = _segment(sid, segmentation.GetSegment(sid))
        described.setdefault(segment.name, segment)
    return [described.get(name) or Segment(f"map_{n}", name, (0.5, 0.5, 0.5))
            for n, name in enumerate(names, start=1)]


def algorithm_of_node(segmentation_node: Any) -> Algorithm:
    """The model an OncoSeg run recorded on the node (corrections by hand keep it: the
    reader's edits start from that model's result); OncoSeg alone for any other node."""
    text = segmentation_node.GetAttribute(MODEL_ATTRIBUTE)
    try:
        model = json.loads(text) if text else None
    except ValueError:
        model = None
    return Algorithm.of_model(model if isinstance(model, dict) else None)
