"""DICOM Segmentation objects (highdicom), referencing the image series they were drawn on.

A BINARY SEG: one frame per source slice and segment that holds voxels, each frame pointing at
its source instance. Segments carry their SNOMED CT category, type (with modifier) and anatomic
region from the segment's terminology, the display colour (CIELab), and OncoSeg as the
algorithm. A segment without terminology (added by hand in Segment Editor) is coded as Slicer
codes new segments: Tissue.
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
from oncoseg.io.atomic import atomic_path
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
                    label: str = "OncoSeg", manual: bool = False) -> Path:
    """Write ``segmentation`` (on the grid of the series, slice k = ``series_files[k]``) as a
    DICOM SEG referencing that series."""
    sources = [pydicom.dcmread(str(f)) for f in series_files]
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    grid = sitk_shape(segmentation)
    if grid != shape:
        raise ValueError(f"segmentation grid {grid} is not the series' {shape}")
    if not segmentation.segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    pixels = np.stack([segmentation.mask(s.id) for s in segmentation.segments], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels.astype(np.uint8),
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


def sitk_shape(segmentation: Segmentation) -> tuple[int, int, int]:
    size = segmentation.geometry.GetSize()
    return (size[2], size[1], size[0])
