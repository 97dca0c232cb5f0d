"""Reading DICOM Segmentation objects (BINARY and FRACTIONAL) as segmentations on a grid.

Public collections now publish annotations as DICOM SEG (NCI's Imaging Data Commons, TCIA),
and PACS-connected tools export them; a case whose labels are a SEG was read by ITK as a stack
of its frames, 1 mm apart, and refused as "not on the grid of any image". Each frame holds one
segment on one plane (PS3.3 C.8.20: the segment in SegmentIdentificationSequence, the plane in
PlanePositionSequence / PlaneOrientationSequence, the pixel size in PixelMeasuresSequence,
shared or per frame); writers leave out frames where a segment has no pixel (highdicom by
default), so the planes present need not be evenly spaced: each is put on the regular grid
the spacing between slices (or, where none is given, the smallest step between planes) makes,
and planes off that grid are refused. A FRACTIONAL frame's pixel counts where its value is at
least half of MaximumFractionalValue (a probability of 0.5). Read with pydicom alone, as the
writer (:mod:`oncoseg.io.dicomseg`), so that it runs on Slicer 5.10's pydicom 2.4.4.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.dicom_series import read_dicom_header
from oncoseg.io.dicomseg import rgb_from_cielab
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.memory import require_memory
from oncoseg.terminology import Code, Terminology

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_GREY = (0.5, 0.5, 0.5)
# how far (mm) a plane may lie from the grid it is put on, and frames' orientations differ
_PLANE_TOLERANCE = 0.01
_ORIENTATION_TOLERANCE = 1e-4


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    header = read_dicom_header(str(path), ["SOPClassUID"])
    return header is not None and str(getattr(header, "SOPClassUID", "")) == \
        SEGMENTATION_STORAGE


def _code(item: pydicom.Dataset | None) -> Code | None:
    if item is None or ("CodeValue" not in item and "LongCodeValue" not in item):
        return None
    value = item.get("CodeValue") or item.get("LongCodeValue")
    return Code(str(item.get("CodingSchemeDesignator", "")), str(value),
                str(item.get("CodeMeaning", "")))


def _first(item: pydicom.Dataset, keyword: str) -> pydicom.Dataset | None:
    sequence = item.get(keyword)
    return sequence[0] if sequence else None


def _terminology(item: pydicom.Dataset) -> str:
    """The segment's coded meaning as Slicer writes it (its TerminologyEntry string)."""
    category = _code(_first(item, "SegmentedPropertyCategoryCodeSequence"))
    type_item = _first(item, "SegmentedPropertyTypeCodeSequence")
    kind = _code(type_item)
    if category is None or kind is None:
        return ""
    region_item = _first(item, "AnatomicRegionSequence")
    return Terminology(
        category, kind,
        _code(_first(type_item, "SegmentedPropertyTypeModifierCodeSequence")),
        _code(region_item),
        _code(_first(region_item, "AnatomicRegionModifierSequence"))
        if region_item is not None else None).to_slicer()


def _colour(item: pydicom.Dataset) -> tuple[float, float, float]:
    """The segment's recommended display colour; grey where the SEG recommends none."""
    lab = item.get("RecommendedDisplayCIELabValue")
    return rgb_from_cielab([int(v) for v in lab]) if lab is not None and len(lab) == 3 \
        else _GREY


def _segments(header: pydicom.Dataset) -> list[Segment]:
    return [Segment(f"Segment_{int(item.SegmentNumber)}",
                    str(item.get("SegmentLabel", "") or f"Segment {int(item.SegmentNumber)}"),
                    _colour(item), label_value=int(item.SegmentNumber), layer=0,
                    terminology=_terminology(item))
            for item in header.get("SegmentSequence", [])]


def dicom_seg_segments(path: str | os.PathLike[str]) -> list[Segment] | None:
    """The segments a DICOM SEG describes (its header alone; ``label_value`` is the segment
    number); None for a file that is no DICOM SEG."""
    return _described(path, read_dicom_header(str(path), ["SOPClassUID", "SegmentSequence"]))


def _described(path: str | os.PathLike[str], header: pydicom.Dataset | None
               ) -> list[Segment] | None:
    if header is None or str(getattr(header, "SOPClassUID", "")) != SEGMENTATION_STORAGE:
        return None
    segments = _segments(header)
    if not segments:
        raise InputError(str(path), "is a DICOM SEG that describes no segment "
                         "(SegmentSequence is empty)")
    return segments


def dicom_seg_reference(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(the image series the SEG was drawn on, its patient ID), from its header."""
    header = read_dicom_header(str(path), ["ReferencedSeriesSequence", "PatientID"])
    series = header.get("ReferencedSeriesSequence") if header is not None else None
    if not series or not str(series[0].get("SeriesInstanceUID", "")):
        raise InputError(str(path), "is a DICOM SEG that names no image series it was drawn "
                         "on (ReferencedSeriesSequence)")
    return str(series[0].SeriesInstanceUID), str(header.get("PatientID", "") or "")


def _frame_value(frame: pydicom.Dataset, shared: pydicom.Dataset | None, sequence: str,
                 keyword: str):
    for group in (frame, shared):
        item = _first(group, sequence) if group is not None else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _planes(path: Path, ds: pydicom.Dataset
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """Per frame: orientation (row, column), position, segment number; and the step between
    slices where the object states it (SpacingBetweenSlices, else SliceThickness: the planes
    present may skip slices, so their own smallest step need not be the grid's)."""
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if len(frames) != count:
        raise InputError(str(path), f"is a DICOM SEG whose {count} frames have "
                         f"{len(frames)} per-frame descriptions")
    if not frames:
        raise InputError(str(path), "is a DICOM SEG that holds no frame")
    orientations, positions, numbers = [], [], []
    spacing = thickness = None
    for index, frame in enumerate(frames):
        orientation = _frame_value(frame, shared, "PlaneOrientationSequence",
                                   "ImageOrientationPatient")
        position = _frame_value(frame, shared, "PlanePositionSequence",
                                "ImagePositionPatient")
        number = _frame_value(frame, shared, "SegmentIdentificationSequence",
                              "ReferencedSegmentNumber")
        pixel = _frame_value(frame, shared, "PixelMeasuresSequence", "PixelSpacing")
        if orientation is None or position is None or number is None or pixel is None or \
                len(orientation) != 6 or len(position) != 3 or len(pixel) != 2:
            raise InputError(str(path), f"is a DICOM SEG whose frame {index + 1} does not say "
                             "where it lies or which segment it shows (plane position, "
                             "orientation, pixel spacing, segment number)")
        orientations.append([float(v) for v in orientation] + [float(v) for v in pixel])
        positions.append([float(v) for v in position])
        numbers.append(int(number))
        between = _frame_value(frame, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
        if between is not None and float(between) > 0:
            spacing = float(between)
        thick = _frame_value(frame, shared, "PixelMeasuresSequence", "SliceThickness")
        if thick is not None and float(thick) > 0:
            thickness = float(thick)
    return np.asarray(orientations), np.asarray(positions), np.asarray(numbers), \
        spacing or thickness


@dataclass(frozen=True)
class FrameGrid:
    """The regular grid a SEG's frames lie on (ITK's LPS placement; x along a frame's rows)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]


def _grid(path: Path, ds: pydicom.Dataset) -> tuple[FrameGrid, np.ndarray, np.ndarray]:
    """The regular grid the frames lie on, and per frame its slice and segment number."""
    geometry, positions, numbers, stated = _planes(path, ds)
    if np.abs(geometry - geometry[0]).max() > _ORIENTATION_TOLERANCE:
        raise InputError(str(path), "is a DICOM SEG whose frames lie in different "
                         "orientations or pixel sizes: it is no volume")
    row, column, pixel = geometry[0][:3], geometry[0][3:6], geometry[0][6:8]
    normal = np.cross(row, column)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3) or np.any(pixel <= 0):
        raise InputError(str(path), "is a DICOM SEG with an unusable plane orientation or "
                         f"pixel spacing ({geometry[0][:6].tolist()}, {pixel.tolist()})")
    offsets = positions - positions[0]
    if np.abs(offsets @ row).max() > _PLANE_TOLERANCE or \
            np.abs(offsets @ column).max() > _PLANE_TOLERANCE:
        raise InputError(str(path), "is a DICOM SEG whose frames are shifted against each "
                         "other within their plane: they lie on no one grid")
    depth = positions @ normal
    levels = np.unique(np.round(depth, 3))
    smallest = float(np.diff(levels).min()) if len(levels) > 1 else None
    # the stated step first (the planes present may skip slices), then the smallest present
    # (a slice thickness that is not the spacing)
    steps = [s for s in (stated, smallest) if s is not None] or [1.0]
    for step in steps:
        slices = np.rint((depth - levels[0]) / step).astype(int)
        if np.abs(levels[0] + slices * step - depth).max() <= max(_PLANE_TOLERANCE,
                                                                  0.05 * step):
            break
    else:
        raise InputError(str(path), f"is a DICOM SEG whose planes lie off a regular grid "
                         f"{steps[0]:g} mm apart")
    grid = FrameGrid((int(ds.Columns), int(ds.Rows), int(slices.max()) + 1),
                     (float(pixel[1]), float(pixel[0]), float(step)),  # columns, rows, slices
                     tuple((positions[0] + (levels[0] - depth[0]) * normal).tolist()),
                     tuple(np.column_stack([row, column, normal]).ravel().tolist()))
    return grid, slices, numbers


def dicom_seg_grid(path: str | os.PathLike[str]) -> FrameGrid:
    """The grid a DICOM SEG's frames lie on, from its header (no pixels read)."""
    return _grid(Path(path), pydicom.dcmread(str(path), stop_before_pixels=True))[0]


def read_dicom_seg(path: str | os.PathLike[str]) -> Segmentation:
    """A DICOM SEG (BINARY or FRACTIONAL) as a segmentation on the regular grid its frames
    lie on, each segment at its segment number (segments that overlap in layers of their
    own)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception:  # truncated or corrupt: no DICOM object anyone can read
        ds = None
    segments = _described(path, ds)
    if segments is None:
        raise InputError(str(path), "is not a DICOM Segmentation object")
    grid, slices, numbers = _grid(path, ds)
    known = {s.label_value for s in segments}
    strange = sorted(set(numbers.tolist()) - known)
    if strange:
        raise InputError(str(path), f"is a DICOM SEG whose frames show segment(s) "
                         f"{strange[:5]}, which its SegmentSequence does not describe")
    columns, rows, depth = grid.size
    shape = (depth, rows, columns)
    require_memory(str(path), 2 * int(np.prod(shape)), "to read its segments")
    try:
        pixels = ds.pixel_array
    except Exception as error:  # an encoding pydicom cannot decode here
        raise InputError(str(path), f"is a DICOM SEG whose pixels cannot be decoded "
                         f"({type(error).__name__}: {error})") from None
    pixels = pixels.reshape(len(numbers), rows, columns)
    fractional = str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255)) if fractional else 0.5

    def masks() -> Iterator[np.ndarray]:
        for segment in segments:
            mask = np.zeros(shape, bool)
            for frame in np.flatnonzero(numbers == segment.label_value):
                mask[slices[frame]] |= pixels[frame] >= threshold
            yield mask

    reference = sitk.Image(columns, rows, depth, sitk.sitkUInt8)
    reference.SetOrigin(grid.origin)
    reference.SetSpacing(grid.spacing)
    reference.SetDirection(grid.direction)
    return Segmentation.from_masks(reference, masks(), segments)
