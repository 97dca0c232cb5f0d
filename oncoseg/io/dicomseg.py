"""DICOM Segmentation objects (highdicom), referencing the image series they were drawn on.

A BINARY SEG: one frame per source image and segment that holds voxels, each frame pointing at
its source instance and showing the segmentation where that image lies. Segments carry their
SNOMED CT category, type (with modifier) and anatomic region from the segment's terminology,
the display colour (CIELab), and OncoSeg as the algorithm. A segment without terminology (added
by hand in Segment Editor) is coded as Slicer codes new segments: Tissue.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import oncoseg
from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.dicom_geometry import SlicePlane, masks_on_planes, slice_planes
from oncoseg.io.dicom_series import check_referenceable
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.terminology import Code, Terminology

TISSUE = Code("SCT", "85756007", "Tissue")


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_description(number: int, segment: Segment, manual: bool = False
                        ) -> hd.seg.SegmentDescription:
    """A segment's DICOM description from its Slicer terminology string."""
    term = Terminology.from_slicer(segment.terminology) or Terminology(TISSUE, TISSUE)
    algorithm = None if manual else hd.AlgorithmIdentificationSequence(
        name="OncoSeg", version=oncoseg.__version__,
        family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name[:64],
        segmented_property_category=_concept(term.category),
        segmented_property_type=_concept(term.type),
        algorithm_type="MANUAL" if manual else "AUTOMATIC",
        algorithm_identification=algorithm,
        anatomic_regions=[_concept(term.region)] if term.region else None,
        display_color=hd.color.CIELabColor.from_rgb(
            *(round(255 * c) for c in segment.color)),
    )
    if term.type_modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence \
            = [_concept(term.type_modifier)]
    return description


def write_dicom_seg(segmentation: Segmentation, series_files: Sequence[str | os.PathLike[str]],
                    path: str | os.PathLike[str], overwrite: bool = False,
                    label: str = "OncoSeg", manual: bool = False,
                    reference_name: str = "the DICOM series") -> Path:
    """Write ``segmentation`` as a DICOM SEG referencing the single-frame images
    ``series_files``: frame by frame, the segmentation (on any grid) sampled where each source
    image actually lies, so a series with a missing slice or a gantry tilt is referenced
    correctly."""
    if not segmentation.segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    headers = [(str(f), pydicom.dcmread(str(f))) for f in series_files]
    check_referenceable(headers, reference_name)
    sources = [ds for _, ds in headers]
    planes = [_single_plane(f, ds) for f, ds in headers]
    masks = masks_on_planes([(s.name, segmentation.mask(s.id)) for s in segmentation.segments],
                            segmentation.geometry, planes, reference_name)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(masks, axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(n, s, manual)
                              for n, s in enumerate(segmentation.segments, start=1)],
        series_instance_uid=hd.UID(),
        series_number=998,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="OncoSeg",
        manufacturer_model_name="OncoSeg",
        software_versions=oncoseg.__version__,
        device_serial_number="0",
        content_label=label.upper().replace(" ", "_")[:16],
        content_description=f"{label} segmentation"[:64],
        series_description=f"{label} segmentation"[:64],
    )
    with atomic_path(path, overwrite) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


def _single_plane(path: str, header: pydicom.Dataset) -> SlicePlane:
    planes = slice_planes(path, header)
    if not planes or len(planes) != 1:
        raise InputError(path, "is not a single-frame image that says where it lies "
                         "(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)")
    return planes[0]
