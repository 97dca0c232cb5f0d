"""DICOM Segmentation objects, referencing the image series they were drawn on.

A BINARY SEG: one frame per source image and segment that holds voxels, each frame pointing at
its source instance and showing the segmentation where that image lies. Segments carry their
SNOMED CT category, type (with modifier) and anatomic region from the segment's terminology,
the display colour (CIELab), and OncoSeg as the algorithm. A segment without terminology (added
by hand in Segment Editor) is coded as Slicer codes new segments: Tissue.

Written with pydicom alone, module by module of the Segmentation IOD (PS3.3 A.51), so that it
runs on every supported Slicer: Slicer 5.10 ships pydicom 2.4.4 and numpy 2.0.2, and no
highdicom release works there (0.23 and later need pydicom 3; 0.22 uses ``np.float_``, which
numpy 2 removed). dciodvfy judges the result and highdicom reads it back in the tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.dicom import Algorithm, code_item, derived_object, save_dicom
from oncoseg.io.dicom_geometry import SlicePlane, masks_on_planes, slice_planes
from oncoseg.io.dicom_series import check_referenceable
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.terminology import Code, Terminology

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
TISSUE = Code("SCT", "85756007", "Tissue")
ARTIFICIAL_INTELLIGENCE = Code("DCM", "123110", "Artificial Intelligence")  # CID 7162
SEGMENTATION_DERIVATION = Code("DCM", "113076", "Segmentation")  # CID 7203
SOURCE_IMAGE_PURPOSE = Code("DCM", "121322", "Source image for image processing operation")


def cielab(rgb: Sequence[int]) -> list[int]:
    """An sRGB colour (0-255) as DICOM's scaled CIELab triplet (PS3.3 C.10.7.1.1: L* 0-100
    and a*, b* -128-127 scaled onto 0-65535), through CIE XYZ under D65, as pixelmed and
    highdicom compute it."""
    def linear(c: float) -> float:
        c /= 255.0
        return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92

    r, g, b = (100 * linear(float(c)) for c in rgb)
    xyz = (r * 0.4124 + g * 0.3576 + b * 0.1805,
           r * 0.2126 + g * 0.7152 + b * 0.0722,
           r * 0.0193 + g * 0.1192 + b * 0.9505)
    f = [c ** (1 / 3) if c >= 8.85645167903563082e-3 else (841 / 108) * c + 4 / 29
         for c in (xyz[0] / 95.047, xyz[1] / 100.0, xyz[2] / 108.883)]
    lightness, a, b_ = 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    scaled = (lightness * 0xFFFF / 100.0, (a + 128.0) * 0xFFFF / 255.0,
              (b_ + 128.0) * 0xFFFF / 255.0)
    return [min(max(round(v), 0), 0xFFFF) for v in scaled]


def segment_description(number: int, segment: Segment, manual: bool = False,
                        algorithm: Algorithm | None = None) -> pydicom.Dataset:
    """A segment's Segment Sequence item (PS3.3 C.8.20.2) from its Slicer terminology
    string."""
    term = Terminology.from_slicer(segment.terminology) or Terminology(TISSUE, TISSUE)
    item = pydicom.Dataset()
    item.SegmentNumber = number
    item.SegmentLabel = segment.name[:64]
    item.SegmentedPropertyCategoryCodeSequence = DicomSequence([code_item(term.category)])
    type_item = code_item(term.type)
    if term.type_modifier is not None:
        type_item.SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
            [code_item(term.type_modifier)])
    item.SegmentedPropertyTypeCodeSequence = DicomSequence([type_item])
    if term.region is not None:
        item.AnatomicRegionSequence = DicomSequence([code_item(term.region)])
    item.SegmentAlgorithmType = "MANUAL" if manual else "AUTOMATIC"
    if not manual:
        algorithm = algorithm or Algorithm()
        item.SegmentAlgorithmName = algorithm.name[:64]
        identity = pydicom.Dataset()
        identity.AlgorithmFamilyCodeSequence = DicomSequence(
            [code_item(ARTIFICIAL_INTELLIGENCE)])
        identity.AlgorithmName = algorithm.name[:64]
        identity.AlgorithmVersion = algorithm.version
        identity.AlgorithmParameters = algorithm.description()
        item.SegmentationAlgorithmIdentificationSequence = DicomSequence([identity])
    item.RecommendedDisplayCIELabValue = cielab([round(255 * c) for c in segment.color])
    return item


def write_dicom_seg(segmentation: Segmentation, series_files: Sequence[str | os.PathLike[str]],
                    path: str | os.PathLike[str], overwrite: bool = False,
                    label: str = "OncoSeg", manual: bool = False,
                    reference_name: str = "the DICOM series",
                    algorithm: Algorithm | None = None) -> Path:
    """Write ``segmentation`` as a DICOM SEG referencing the single-frame images
    ``series_files``: frame by frame, the segmentation (on any grid) sampled where each source
    image actually lies, so a series with a missing slice or a gantry tilt is referenced
    correctly."""
    if not segmentation.segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    headers = [(str(f), pydicom.dcmread(str(f), stop_before_pixels=True))
               for f in series_files]
    check_referenceable(headers, reference_name)
    sources = [ds for _, ds in headers]
    planes = [_single_plane(f, ds) for f, ds in headers]
    sizes = {(p.rows, p.columns) for p in planes}
    if len(sizes) != 1:
        raise InputError(reference_name, f"has images of {len(sizes)} different sizes: a "
                         "DICOM SEG's frames all have one size")
    masks = masks_on_planes([(s.name, segmentation.mask(s.id)) for s in segmentation.segments],
                            segmentation.geometry, planes, reference_name)
    ds = _segmentation_dataset(sources, label, algorithm)
    ds.SegmentSequence = DicomSequence([segment_description(n, s, manual, algorithm)
                                        for n, s in enumerate(segmentation.segments, start=1)])
    _add_frames(ds, sources, planes, masks)
    with atomic_path(path, overwrite) as tmp:
        save_dicom(ds, tmp)
    return Path(path)


def _segmentation_dataset(sources: list[pydicom.Dataset], label: str,
                          algorithm: Algorithm | None) -> FileDataset:
    """Every module but the frames and segments: SOP common, patient, study, series,
    frame of reference, equipment, the image's description, references to the series."""
    first = sources[0]
    ds = derived_object(SEGMENTATION_STORAGE, first, "SEG", 998, f"{label} segmentation",
                        algorithm)
    ds.DeviceSerialNumber = "0"  # Enhanced General Equipment
    # General Image, Segmentation Image (its Content Identification macro)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentLabel = label.upper().replace(" ", "_")[:16]
    ds.ContentDescription = f"{label} segmentation"[:64]
    ds.ContentCreatorName = ""
    ds.SegmentationType = "BINARY"
    ds.LossyImageCompression = "00"
    # Image Pixel: one bit per pixel, frames packed back to back
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(first.Rows), int(first.Columns)
    # Common Instance Reference; General Image's Source Image Sequence
    ds.SourceImageSequence = DicomSequence([_reference(s) for s in sources])
    series = pydicom.Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedInstanceSequence = DicomSequence([_reference(s) for s in sources])
    ds.ReferencedSeriesSequence = DicomSequence([series])
    return ds


def _add_frames(ds: FileDataset, sources: list[pydicom.Dataset], planes: list[SlicePlane],
                masks: list[np.ndarray]) -> None:
    """Multi-frame Functional Groups and Dimension modules and the pixels: a frame for each
    segment on each image where it holds voxels (every image, if none does), ordered by
    segment, then along the images' normal."""
    normal = planes[0].normal
    along = np.array([np.dot(p.position, normal) for p in planes])
    order = np.argsort(along, kind="stable")
    position_index = np.empty(len(planes), int)
    position_index[order] = np.arange(1, len(planes) + 1)
    frames = [(n, k) for n, mask in enumerate(masks) for k in order if mask[k].any()]
    if not frames:  # a SEG has at least one frame: an empty segmentation keeps them all
        frames = [(n, k) for n in range(len(masks)) for k in order]

    organization = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([pydicom.Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = organization
    ds.DimensionIndexSequence = DicomSequence([
        _dimension(organization, "ReferencedSegmentNumber", "SegmentIdentificationSequence",
                   "Referenced Segment Number"),
        _dimension(organization, "ImagePositionPatient", "PlanePositionSequence",
                   "Image Position Patient")])

    shared = pydicom.Dataset()
    orientations = {tuple(str(v) for v in s.ImageOrientationPatient) for s in sources}
    measures = {_pixel_measures_key(s) for s in sources}
    if len(orientations) == 1:
        shared.PlaneOrientationSequence = DicomSequence([_orientation(sources[0])])
    if len(measures) == 1:
        shared.PixelMeasuresSequence = DicomSequence([_pixel_measures(sources[0], along)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    for n, k in frames:
        item = pydicom.Dataset()
        derivation = pydicom.Dataset()
        source = _reference(sources[k])
        source.PurposeOfReferenceCodeSequence = DicomSequence([code_item(SOURCE_IMAGE_PURPOSE)])
        source.SpatialLocationsPreserved = "YES"
        derivation.SourceImageSequence = DicomSequence([source])
        derivation.DerivationCodeSequence = DicomSequence([code_item(SEGMENTATION_DERIVATION)])
        item.DerivationImageSequence = DicomSequence([derivation])
        content = pydicom.Dataset()
        content.DimensionIndexValues = [n + 1, int(position_index[k])]
        item.FrameContentSequence = DicomSequence([content])
        position = pydicom.Dataset()
        position.ImagePositionPatient = list(sources[k].ImagePositionPatient)
        item.PlanePositionSequence = DicomSequence([position])
        if len(orientations) != 1:
            item.PlaneOrientationSequence = DicomSequence([_orientation(sources[k])])
        if len(measures) != 1:
            item.PixelMeasuresSequence = DicomSequence([_pixel_measures(sources[k], None)])
        segment = pydicom.Dataset()
        segment.ReferencedSegmentNumber = n + 1
        item.SegmentIdentificationSequence = DicomSequence([segment])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(frames)
    ds.SegmentsOverlap = "YES" if _overlap(masks) else "NO"
    # one bit per pixel, first pixel in the lowest bit, frames back to back (PS3.5 8.1.1, 8.2);
    # packed eight frames at a time, which always end on a byte, to keep one copy in memory
    packed = b"".join(
        np.packbits(np.stack([masks[n][k] for n, k in frames[start:start + 8]]).ravel(),
                    bitorder="little").tobytes()
        for start in range(0, len(frames), 8))
    # OB, as PS3.5 A.2 prefers for 8 bits or fewer (pydicom would guess OW for a new dataset)
    ds.add_new(Tag("PixelData"), "OB", packed + b"\0" * (len(packed) % 2))


def _overlap(masks: list[np.ndarray]) -> bool:
    """Does any pixel of any image belong to two segments?"""
    for k in range(masks[0].shape[0]):
        if (sum(mask[k].astype(np.uint16) for mask in masks) > 1).any():
            return True
    return False


def _reference(source: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _dimension(organization: str, index: str, group: str, label: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.DimensionOrganizationUID = organization
    item.DimensionIndexPointer = Tag(index)
    item.FunctionalGroupPointer = Tag(group)
    item.DimensionDescriptionLabel = label
    return item


def _orientation(source: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ImageOrientationPatient = list(source.ImageOrientationPatient)
    return item


def _pixel_measures_key(source: pydicom.Dataset) -> tuple[str, ...]:
    return (*(str(v) for v in source.PixelSpacing), str(getattr(source, "SliceThickness", "")))


def _pixel_measures(source: pydicom.Dataset, along: np.ndarray | None) -> pydicom.Dataset:
    """The source's pixel spacing and slice thickness; the spacing between slices too where
    the images are evenly spaced along their normal (``along``: their positions there)."""
    item = pydicom.Dataset()
    item.PixelSpacing = list(source.PixelSpacing)
    if getattr(source, "SliceThickness", None) not in (None, ""):
        item.SliceThickness = source.SliceThickness
    if along is not None and len(along) > 1:
        steps = np.diff(np.sort(along))
        if steps[0] > 0 and np.allclose(steps, steps[0], rtol=0, atol=1e-3):
            item.SpacingBetweenSlices = f"{steps[0]:.6g}"
    return item


def _single_plane(path: str, header: pydicom.Dataset) -> SlicePlane:
    planes = slice_planes(path, header)
    if not planes or len(planes) != 1:
        raise InputError(path, "is not a single-frame image that says where it lies "
                         "(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)")
    return planes[0]
