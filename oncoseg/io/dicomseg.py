"""DICOM Segmentation objects, referencing the image series they were drawn on.

A BINARY SEG: one frame per source image and segment that holds voxels, each frame pointing at
its source instance and showing the segmentation where that image lies. A FRACTIONAL SEG
(SegmentationFractionalType PROBABILITY) holds probability maps the same way: 8 bits per pixel,
``round(p * MaximumFractionalValue)`` (255 by default), one frame per source image and segment
where the map is not 0 there, each map sampled on the image's plane by linear interpolation
(see :func:`fractions_on_planes`). Both types share every module but the pixels.

Segments carry their SNOMED CT category, type (with modifier) and anatomic region from the
segment's terminology, the display colour (CIELab), and OncoSeg as the algorithm. A segment
without terminology (added by hand in Segment Editor) is coded as Slicer codes new segments:
Tissue.

Written with pydicom alone, module by module of the Segmentation IOD (PS3.3 A.51), so that it
runs on every supported Slicer: Slicer 5.10 ships pydicom 2.4.4 and numpy 2.0.2, and no
highdicom release works there (0.23 and later need pydicom 3; 0.22 uses ``np.float_``, which
numpy 2 removed). dciodvfy judges the result and highdicom reads it back in the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.dicom import Algorithm, code_item, derived_object, save_dicom, sop_reference
from oncoseg.io.dicom_geometry import SlicePlane, masks_on_planes
from oncoseg.io.dicom_series import ImageOfSeries, ReferencedImage, referenced_images
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.terminology import Code, Terminology

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
TISSUE = Code("SCT", "85756007", "Tissue")
ARTIFICIAL_INTELLIGENCE = Code("DCM", "123110", "Artificial Intelligence")  # CID 7162
SEGMENTATION_DERIVATION = Code("DCM", "113076", "Segmentation")  # CID 7203
SOURCE_IMAGE_PURPOSE = Code("DCM", "121322", "Source image for image processing operation")
# A FRACTIONAL SEG's stored value for probability 1 (PS3.3 C.8.20.2.3: 8 bits per pixel, so
# at most 255; a map read back is within half a step, 0.5 / MaximumFractionalValue, of the map)
DEFAULT_MAXIMUM_FRACTIONAL_VALUE = 255
# Probabilities this far outside [0, 1] are not float rounding: the image is not a map.
PROBABILITY_SLACK = 1e-3


_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                         [0.0193, 0.1192, 0.9505]])
_WHITE_D65 = np.array([95.047, 100.0, 108.883])


def cielab(rgb: Sequence[int]) -> list[int]:
    """An sRGB colour (0-255) as DICOM's scaled CIELab triplet (PS3.3 C.10.7.1.1: L* 0-100
    and a*, b* -128-127 scaled onto 0-65535), through CIE XYZ under D65, as pixelmed and
    highdicom compute it."""
    def linear(c: float) -> float:
        c /= 255.0
        return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92

    xyz = _SRGB_TO_XYZ @ np.array([100 * linear(float(c)) for c in rgb])
    f = [c ** (1 / 3) if c >= 8.85645167903563082e-3 else (841 / 108) * c + 4 / 29
         for c in xyz / _WHITE_D65]
    lightness, a, b_ = 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    scaled = (lightness * 0xFFFF / 100.0, (a + 128.0) * 0xFFFF / 255.0,
              (b_ + 128.0) * 0xFFFF / 255.0)
    return [min(max(round(v), 0), 0xFFFF) for v in scaled]


def rgb_from_cielab(scaled: Sequence[int]) -> tuple[float, float, float]:
    """A DICOM scaled CIELab triplet as an sRGB colour (0-1): :func:`cielab` undone."""
    lightness = float(scaled[0]) * 100.0 / 0xFFFF
    a, b = (float(v) * 255.0 / 0xFFFF - 128.0 for v in scaled[1:3])
    fy = (lightness + 16) / 116
    f = np.array([fy + a / 500, fy, fy - b / 200])
    xyz = np.where(f > 6 / 29, f ** 3, (f - 4 / 29) * 108 / 841) * _WHITE_D65
    linear = np.linalg.solve(_SRGB_TO_XYZ, xyz) / 100
    rgb = np.where(linear > 0.0031308, 1.055 * np.abs(linear) ** (1 / 2.4) - 0.055,
                   12.92 * linear)
    red, green, blue = np.clip(rgb, 0.0, 1.0).tolist()
    return red, green, blue


def segment_description(number: int, segment: Segment, manual: bool = False,
                        algorithm: Algorithm | None = None) -> pydicom.Dataset:
    """A segment's Segment Sequence item (PS3.3 C.8.20.2) from its Slicer terminology
    string."""
    term = Terminology.from_slicer(segment.terminology) or Terminology(TISSUE, TISSUE)
    item = pydicom.Dataset()
    item.SegmentNumber = number
    item.SegmentLabel = segment.name[:64]
    if segment.description:
        item.SegmentDescription = segment.description[:64]
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


def write_dicom_seg(segmentation: Segmentation, series_files: Sequence[ImageOfSeries],
                    path: str | os.PathLike[str], overwrite: bool = False,
                    label: str = "OncoSeg", manual: bool = False,
                    reference_name: str = "the DICOM series",
                    algorithm: Algorithm | None = None) -> Path:
    """Write ``segmentation`` as a BINARY DICOM SEG referencing the images ``series_files``
    (files, each standing for every image it holds, or the planes of their images): frame by
    frame, the segmentation (on any grid) sampled where each source image actually lies, so a
    series with a missing slice or a gantry tilt is referenced correctly, and a frame of an
    enhanced multi-frame image by its frame number."""
    if not segmentation.segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    sources, planes = _referenced_images(series_files, reference_name)
    masks = masks_on_planes([(s.name, segmentation.mask(s.id)) for s in segmentation.segments],
                            segmentation.geometry, planes, reference_name)
    return _write_seg(path, overwrite, sources, planes, segmentation.segments, masks, label,
                      manual, algorithm, maximum=None)


def write_fractional_dicom_seg(maps: Iterable[tuple[Segment, sitk.Image]],
                               series_files: Sequence[ImageOfSeries],
                               path: str | os.PathLike[str], overwrite: bool = False,
                               label: str = "OncoSeg", reference_name: str = "the DICOM series",
                               algorithm: Algorithm | None = None,
                               maximum: int = DEFAULT_MAXIMUM_FRACTIONAL_VALUE) -> Path:
    """Write probability maps (each with the segment it belongs to, on any grid) as a
    FRACTIONAL DICOM SEG referencing ``series_files`` as :func:`write_dicom_seg` does.

    ``maps`` is consumed one map at a time and each is kept only as its 8-bit frames, so a
    caller that reads maps from files as they are asked for holds one float map at a time."""
    if not isinstance(maximum, int) or not 1 <= maximum <= 255:
        raise InputError("MaximumFractionalValue", f"is {maximum}: a FRACTIONAL SEG stores 8 "
                         "bits per pixel, so it is a whole number from 1 to 255")
    sources, planes = _referenced_images(series_files, reference_name)
    segments, stacks = [], []
    for segment, image in maps:
        segments.append(segment)
        stacks.append(fractions_on_planes(image, planes, maximum, segment.name, reference_name))
    if not segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    return _write_seg(path, overwrite, sources, planes, segments, stacks, label, False,
                      algorithm, maximum=maximum)


def fractions_on_planes(image: sitk.Image, planes: Sequence[SlicePlane], maximum: int,
                        name: str = "the probability map",
                        reference_name: str = "the DICOM series") -> np.ndarray:
    """A probability map (any grid) on each plane as stored fractions, (n, rows, columns)
    uint8 ``round(p * maximum)``.

    Sampled by linear interpolation, 0 outside the map, as :class:`oncoseg.prediction.
    ResampledMaps` puts maps on the CT's grid and Slicer's slice views show them: a map on a
    coarser working grid then gives the frames ``predict`` would have written on the series'
    own grid, not nearest neighbour's blocks. Where a plane is one of the map's slices, linear
    interpolation lands on the voxels (a stored uint8 map comes back exactly). Non-finite
    values, or values outside [0, 1] beyond float rounding, are refused: not a probability map.
    """
    array = sitk.GetArrayViewFromImage(image)
    out = np.empty((len(planes), planes[0].rows, planes[0].columns), np.uint8)
    for n, plane in enumerate(planes):
        sampled = sitk.Resample(image, plane.grid(), sitk.Transform(), sitk.sitkLinear, 0.0,
                                sitk.sitkFloat32)
        values = sitk.GetArrayViewFromImage(sampled)[0]
        if not np.isfinite(values).all():
            raise InputError(name, "holds values that are not numbers (NaN or infinite): it "
                             "is not a probability map")
        low, high = float(values.min()), float(values.max())
        if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK:
            raise InputError(name, f"holds values from {low:g} to {high:g}: a probability map "
                             "holds values from 0 to 1")
        # rounded half up in float64, as oncoseg.io.nifti.write_scaled_uint8 stores maps
        out[n] = np.floor(np.clip(values.astype(np.float64), 0.0, 1.0) * maximum + 0.5)
    if not out.any() and array.any():
        raise InputError(name, f"lies on no image of {reference_name}: is it the series it "
                         "was computed on?")
    return out


def _referenced_images(series_files: Sequence[ImageOfSeries], reference_name: str
                       ) -> tuple[list[ReferencedImage], list[SlicePlane]]:
    """The source images and their planes, refused unless a SEG can reference them all
    (UIDs, each placed, one size)."""
    sources = referenced_images(series_files, reference_name)
    planes = [s.plane for s in sources]
    sizes = {(p.rows, p.columns) for p in planes}
    if len(sizes) != 1:
        raise InputError(reference_name, f"has images of {len(sizes)} different sizes: a "
                         "DICOM SEG's frames all have one size")
    return sources, planes


def _write_seg(path: str | os.PathLike[str], overwrite: bool, sources: list[ReferencedImage],
               planes: list[SlicePlane], segments: Sequence[Segment], stacks: list[np.ndarray],
               label: str, manual: bool, algorithm: Algorithm | None,
               maximum: int | None) -> Path:
    """The SEG of ``segments``, each with its (n, rows, columns) stack on the source images:
    BINARY masks, or FRACTIONAL stored fractions (``maximum`` their MaximumFractionalValue)."""
    ds = _segmentation_dataset(sources, label, algorithm, maximum)
    ds.SegmentSequence = DicomSequence([segment_description(n, s, manual, algorithm)
                                        for n, s in enumerate(segments, start=1)])
    _add_frames(ds, sources, planes, stacks)
    with atomic_path(path, overwrite) as tmp:
        save_dicom(ds, tmp)
    return Path(path)


def _segmentation_dataset(sources: list[ReferencedImage], label: str,
                          algorithm: Algorithm | None, maximum: int | None) -> FileDataset:
    """Every module but the frames and segments: SOP common, patient, study, series,
    frame of reference, equipment, the image's description, references to the series; BINARY,
    or FRACTIONAL probabilities up to ``maximum``."""
    first = sources[0].header
    instances = list({s.header.SOPInstanceUID: s.header for s in sources}.values())
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
    ds.LossyImageCompression = "00"
    # Image Pixel: BINARY one bit per pixel, frames packed back to back; FRACTIONAL 8 bits
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if maximum is None:
        ds.SegmentationType = "BINARY"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    else:
        ds.SegmentationType = "FRACTIONAL"
        ds.SegmentationFractionalType = "PROBABILITY"
        ds.MaximumFractionalValue = maximum
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(first.Rows), int(first.Columns)
    # Common Instance Reference; General Image's Source Image Sequence: each instance once
    ds.SourceImageSequence = DicomSequence([sop_reference(s) for s in instances])
    series = pydicom.Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedInstanceSequence = DicomSequence([sop_reference(s) for s in instances])
    ds.ReferencedSeriesSequence = DicomSequence([series])
    return ds


def _add_frames(ds: FileDataset, sources: list[ReferencedImage], planes: list[SlicePlane],
                masks: list[np.ndarray]) -> None:
    """Multi-frame Functional Groups and Dimension modules and the pixels: a frame for each
    segment on each image where it holds voxels (BINARY) or a fraction above 0 (FRACTIONAL),
    every image if none does, ordered by segment, then along the images' normal. A frame left
    out reads as 0: highdicom's writer leaves empty frames out too."""
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
    orientations = {_orientation_values(p) for p in planes}
    measures = {_pixel_measures_values(p) for p in planes}
    if len(orientations) == 1:
        shared.PlaneOrientationSequence = DicomSequence([_orientation(planes[0])])
    if len(measures) == 1:
        shared.PixelMeasuresSequence = DicomSequence([_pixel_measures(planes[0], along)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    for n, k in frames:
        item = pydicom.Dataset()
        derivation = pydicom.Dataset()
        source = sources[k].reference()
        source.PurposeOfReferenceCodeSequence = DicomSequence([code_item(SOURCE_IMAGE_PURPOSE)])
        source.SpatialLocationsPreserved = "YES"
        derivation.SourceImageSequence = DicomSequence([source])
        derivation.DerivationCodeSequence = DicomSequence([code_item(SEGMENTATION_DERIVATION)])
        item.DerivationImageSequence = DicomSequence([derivation])
        content = pydicom.Dataset()
        content.DimensionIndexValues = [n + 1, int(position_index[k])]
        item.FrameContentSequence = DicomSequence([content])
        position = pydicom.Dataset()
        position.ImagePositionPatient = _decimals(planes[k].position)
        item.PlanePositionSequence = DicomSequence([position])
        if len(orientations) != 1:
            item.PlaneOrientationSequence = DicomSequence([_orientation(planes[k])])
        if len(measures) != 1:
            item.PixelMeasuresSequence = DicomSequence([_pixel_measures(planes[k], None)])
        segment = pydicom.Dataset()
        segment.ReferencedSegmentNumber = n + 1
        item.SegmentIdentificationSequence = DicomSequence([segment])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.NumberOfFrames = len(frames)
    ds.SegmentsOverlap = "YES" if _overlap(masks) else "NO"
    if ds.SegmentationType == "BINARY":
        # one bit per pixel, first pixel in the lowest bit, frames back to back (PS3.5 8.1.1,
        # 8.2); packed eight frames at a time, which always end on a byte, to keep one copy
        pixels = b"".join(
            np.packbits(np.stack([masks[n][k] for n, k in frames[start:start + 8]]).ravel(),
                        bitorder="little").tobytes()
            for start in range(0, len(frames), 8))
    else:  # one byte per pixel, frames back to back
        pixels = b"".join(masks[n][k].tobytes() for n, k in frames)
    # OB, as PS3.5 A.2 prefers for 8 bits or fewer (pydicom would guess OW for a new dataset)
    ds.add_new(Tag("PixelData"), "OB", pixels + b"\0" * (len(pixels) % 2))


def _overlap(masks: list[np.ndarray]) -> bool:
    """Does any pixel of any image belong to two segments (a fraction above 0 in both)?"""
    for k in range(masks[0].shape[0]):
        if (sum((mask[k] != 0).astype(np.uint16) for mask in masks) > 1).any():
            return True
    return False



def _dimension(organization: str, index: str, group: str, label: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.DimensionOrganizationUID = organization
    item.DimensionIndexPointer = Tag(index)
    item.FunctionalGroupPointer = Tag(group)
    item.DimensionDescriptionLabel = label
    return item


def _decimals(values: Iterable[float]) -> list[str]:
    """Decimal strings (DS, at most 16 characters) of the values a plane was read from."""
    return [str(DSfloat(float(v), auto_format=True)) for v in values]


def _orientation_values(plane: SlicePlane) -> tuple[str, ...]:
    return tuple(_decimals((*plane.row, *plane.column)))


def _orientation(plane: SlicePlane) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ImageOrientationPatient = list(_orientation_values(plane))
    return item


def _pixel_measures_values(plane: SlicePlane) -> tuple[str, ...]:
    thickness = _decimals([plane.thickness]) if plane.thickness is not None else [""]
    return (*_decimals(plane.pixel_spacing), *thickness)


def _pixel_measures(plane: SlicePlane, along: np.ndarray | None) -> pydicom.Dataset:
    """The image's pixel spacing and slice thickness; the spacing between slices too where
    the images are evenly spaced along their normal (``along``: their positions there)."""
    item = pydicom.Dataset()
    *spacing, thickness = _pixel_measures_values(plane)
    item.PixelSpacing = spacing
    if thickness:
        item.SliceThickness = thickness
    if along is not None and len(along) > 1:
        steps = np.diff(np.sort(along))
        if steps[0] > 0 and np.allclose(steps, steps[0], rtol=0, atol=1e-3):
            item.SpacingBetweenSlices = f"{steps[0]:.6g}"
    return item

