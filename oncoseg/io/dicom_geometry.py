"""Where each image of a DICOM series lies, and the regular grid the series is read onto.

Every slice (a single-frame instance, or one frame of an enhanced multi-frame instance) is a
plane: ImagePositionPatient (IPP, the centre of its first pixel), the row and column directions
of ImageOrientationPatient and PixelSpacing. Slices are ordered by IPP projected on the slice
normal (row x column), as Slicer's DICOM module (``DICOMUtils.getSortedImageFiles``), GDCM and
dcm2niix order them. Those projections, not the headers' SliceThickness nor the number of files,
say whether the series is a uniform stack: a missing slice, a varying step and a gantry tilt
(IPPs that move within the slice plane from slice to slice) are all visible in them.

A stack that is not uniform is resampled onto a regular orthogonal grid (linear interpolation
between the two nearest slices along the normal, in-plane shifts for a tilt), with a note for
the user, as dcm2niix does (its ``_Eq`` and ``_Tilt`` outputs) and as Slicer's "acquisition
geometry regularization" does with a transform. The grid's step is the median step, adjusted so
that whole steps run from the first slice to the last: dcm2niix takes the smallest step instead,
which for a series with missing slices is the same and for uneven steps adds slices. Where
interpolation would invent too much anatomy the series is refused (:data:`MAX_GAP_STEPS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import image_like

# Slicer's DICOM scalar volume plugin calls spacing uniform within 0.01 mm; headers round IPP
# to a few decimals, so the tolerance grows to 1 % of the slice step for thick slices.
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_FRACTION = 0.01
# Two slices closer than this along the normal are one position (a duplicated instance).
SAME_POSITION_MM = 0.01
# Slice planes whose orientations differ by more than this (direction cosines) are not a stack.
ORIENTATION_TOLERANCE = 1e-4
# A gap of more than 3 slice steps (more than 2 consecutive slices missing) is refused: linear
# interpolation across it would draw anatomy over 2 x the step that no image holds.
MAX_GAP_STEPS = 3.0


@dataclass(frozen=True)
class SlicePlane:
    """One 2D image of a series: where it lies (LPS mm), and how its stored values become the
    modality's (``rescale``: slope and intercept, the frame's own in an enhanced image)."""

    file: str
    frame: int | None  # 0-based frame of a multi-frame instance; None for a single frame
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    position: tuple[float, float, float]  # IPP: centre of the first pixel
    row: tuple[float, float, float]  # direction of increasing column index
    column: tuple[float, float, float]  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # DICOM order: between rows, between columns
    rows: int
    columns: int
    thickness: float | None = None
    rescale: tuple[float, float] = (1.0, 0.0)

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row, self.column)
        return normal / np.linalg.norm(normal)

    def label(self) -> str:
        """How a message names this slice: its file (and frame), and instance number."""
        name = Path(self.file).name + (f" frame {self.frame + 1}" if self.frame is not None
                                       else "")
        return name + (f" (instance {self.instance_number})" if self.instance_number is not None
                       else "")

    def grid(self) -> sitk.Image:
        """An empty one-slice image on this plane: resampling onto it samples the plane."""
        image = sitk.Image([self.columns, self.rows, 1], sitk.sitkUInt8)
        image.SetOrigin(self.position)
        image.SetSpacing([self.pixel_spacing[1], self.pixel_spacing[0], self.thickness or 1.0])
        image.SetDirection(np.stack([self.row, self.column, self.normal], axis=1).ravel()
                           .tolist())
        return image


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(map(math.isfinite, numbers)) else None


def _pixel_spacing(value: object) -> tuple[float, ...] | None:
    """Two positive lengths, or None: a zero or negative PixelSpacing places nothing (ITK
    refuses such a spacing with its own words)."""
    spacing = _floats(value, 2)
    return spacing if spacing is not None and min(spacing) > 0 else None


def _orientation_cosines(value: object) -> tuple[float, ...] | None:
    """Six numbers making two unit vectors at right angles (within rounding: both of length
    0.9 to 1.1, at least 80 degrees apart), or None: zeros or parallel vectors place nothing
    and made the geometry NaN."""
    cosines = _floats(value, 6)
    if cosines is None:
        return None
    row, column = np.asarray(cosines[:3]), np.asarray(cosines[3:])
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    if min(lengths) < 0.9 or max(lengths) > 1.1:
        return None
    sine = np.linalg.norm(np.cross(row, column)) / (lengths[0] * lengths[1])
    return cosines if sine >= np.sin(np.radians(80)) else None


def _number(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _thickness(*sources: object) -> float | None:
    for source in sources:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _floats([getattr(source, keyword, None)], 1)
            if value and value[0] > 0:
                return value[0]
    return None


def _rescale(*candidates: tuple[object, object]) -> tuple[float, float]:
    """The first (RescaleSlope, RescaleIntercept) pair that holds either (1 and 0 where none
    does, as GDCM reads a header without them)."""
    for slope_value, intercept_value in candidates:
        slope = _floats([slope_value], 1)
        intercept = _floats([intercept_value], 1)
        if slope or intercept:
            return (slope[0] if slope else 1.0, intercept[0] if intercept else 0.0)
    return (1.0, 0.0)


def _header_rescale(header: pydicom.Dataset) -> tuple[object, object]:
    return getattr(header, "RescaleSlope", None), getattr(header, "RescaleIntercept", None)


def functional_value(frame: pydicom.Dataset | None, shared: pydicom.Dataset | None, sequence: str,
                keyword: str) -> object:
    """An attribute of an enhanced multi-frame instance: the frame's own functional group
    first, else the shared one."""
    for group in (frame, shared):
        items = getattr(group, sequence, None) if group is not None else None
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def slice_planes(path: str, header: pydicom.Dataset) -> list[SlicePlane] | None:
    """The planes of one instance: one for a single-frame image, one per frame of an enhanced
    multi-frame image (positions from the per-frame or shared functional groups) or of a
    multi-frame image with GridFrameOffsetVector (RT dose); None when the header does not say
    where the image lies."""
    common = dict(file=path, sop_instance_uid=str(getattr(header, "SOPInstanceUID", "")),
                  sop_class_uid=str(getattr(header, "SOPClassUID", "")),
                  instance_number=_number(getattr(header, "InstanceNumber", None)),
                  rows=int(getattr(header, "Rows", 0) or 0),
                  columns=int(getattr(header, "Columns", 0) or 0))
    frames = _number(getattr(header, "NumberOfFrames", None)) or 1
    per_frame = getattr(header, "PerFrameFunctionalGroupsSequence", None)
    if per_frame:
        shared_items = getattr(header, "SharedFunctionalGroupsSequence", None)
        shared = shared_items[0] if shared_items else None
        planes = []
        for index, frame in enumerate(per_frame):
            def value(sequence: str, keyword: str, frame=frame) -> object:
                return functional_value(frame, shared, sequence, keyword)

            position = _floats(value("PlanePositionSequence", "ImagePositionPatient"), 3)
            orientation = _orientation_cosines(
                value("PlaneOrientationSequence", "ImageOrientationPatient"))
            spacing = _pixel_spacing(value("PixelMeasuresSequence", "PixelSpacing"))
            if position is None or orientation is None or spacing is None:
                return None
            thickness = _floats([value("PixelMeasuresSequence", "SpacingBetweenSlices")
                                 or value("PixelMeasuresSequence", "SliceThickness")], 1)
            transformation = tuple(value("PixelValueTransformationSequence", keyword)
                                   for keyword in ("RescaleSlope", "RescaleIntercept"))
            planes.append(SlicePlane(frame=index, position=position, row=orientation[:3],
                                     column=orientation[3:], pixel_spacing=spacing,
                                     thickness=thickness[0] if thickness else None,
                                     rescale=_rescale(transformation, _header_rescale(header)),
                                     **common))
        return planes
    position = _floats(getattr(header, "ImagePositionPatient", None), 3)
    orientation = _orientation_cosines(getattr(header, "ImageOrientationPatient", None))
    spacing = _pixel_spacing(getattr(header, "PixelSpacing", None))
    if position is None or orientation is None or spacing is None:
        return None
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    stored_rescale = _rescale(_header_rescale(header))
    if frames == 1:
        return [SlicePlane(frame=None, position=position, row=orientation[:3],
                           column=orientation[3:], pixel_spacing=spacing,
                           thickness=_thickness(header), rescale=stored_rescale, **common)]
    offsets = _floats(getattr(header, "GridFrameOffsetVector", None), frames)
    if offsets is None:
        return None
    normal = np.cross(row, column)
    return [SlicePlane(frame=index, position=tuple(float(v) for v in np.asarray(position)
                                                   + offset * normal),
                       row=orientation[:3], column=orientation[3:], pixel_spacing=spacing,
                       thickness=_thickness(header), rescale=stored_rescale, **common)
            for index, offset in enumerate(offsets)]


# What places an image in the patient (a single-frame file's own attributes; an enhanced
# multi-frame file's in its functional groups)
PLACEMENT_ATTRIBUTES = (("PlanePositionSequence", "ImagePositionPatient"),
                        ("PlaneOrientationSequence", "ImageOrientationPatient"),
                        ("PixelMeasuresSequence", "PixelSpacing"))


# How each placement attribute is read, and what it must hold to be used
_USABLE = {"ImagePositionPatient": (lambda value: _floats(value, 3), "3 numbers"),
           "ImageOrientationPatient": (_orientation_cosines,
                                       "6 numbers: two unit vectors at right angles"),
           "PixelSpacing": (_pixel_spacing, "2 numbers above 0")}


def missing_placement(header: pydicom.Dataset) -> list[str]:
    """The placement attributes an instance lacks or holds in no usable form (for an enhanced
    multi-frame one, in its first frame's or the shared functional groups): "PixelSpacing",
    or "PixelSpacing '0.7' (needs 2 numbers above 0)"."""
    frames = getattr(header, "PerFrameFunctionalGroupsSequence", None)
    shared_items = getattr(header, "SharedFunctionalGroupsSequence", None)
    shared = shared_items[0] if shared_items else None
    missing = []
    for sequence, keyword in PLACEMENT_ATTRIBUTES:
        value = functional_value(frames[0], shared, sequence, keyword) if frames \
            else getattr(header, keyword, None)
        if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
            missing.append(keyword)
            continue
        parse, needed = _USABLE[keyword]
        if parse(value) is None:
            text = "\\".join(map(str, value)) if isinstance(value, Sequence) and \
                not isinstance(value, str) else str(value)
            missing.append(f"{keyword} '{text}' (needs {needed})")
    return missing


def same_orientation(a: SlicePlane, b: SlicePlane) -> bool:
    return bool(np.allclose(a.row, b.row, atol=ORIENTATION_TOLERANCE)
                and np.allclose(a.column, b.column, atol=ORIENTATION_TOLERANCE))


def without_localizer(planes: Sequence[SlicePlane]) -> tuple[list[SlicePlane], list[SlicePlane]]:
    """(the stack in slice order, the localizer left out): when all images but one share an
    orientation, the odd one is a localizer (GE and Siemens CBCT series hold one), and Slicer's
    DICOM module likewise prefers the series without it. Any other mix is left for
    :func:`check_one_stack` to refuse."""
    if len(planes) < 3:
        return list(planes), []
    groups: list[list[SlicePlane]] = []
    for plane in planes:
        for group in groups:
            if same_orientation(group[0], plane):
                group.append(plane)
                break
        else:
            groups.append([plane])
    if len(groups) == 2 and min(len(g) for g in groups) == 1:
        stack, odd = sorted(groups, key=len, reverse=True)
        return sort_planes(stack), odd  # along the stack's normal, not the localizer's
    return list(planes), []


def distances_along_normal(planes: Sequence[SlicePlane]) -> np.ndarray:
    normal = planes[0].normal
    return np.array([float(np.dot(normal, p.position)) for p in planes])


def sort_planes(planes: Sequence[SlicePlane]) -> list[SlicePlane]:
    """Planes in increasing distance along the normal (ties by instance number, then frame)."""
    distances = distances_along_normal(planes)
    order = sorted(range(len(planes)), key=lambda i: (
        round(float(distances[i]) / SAME_POSITION_MM), planes[i].instance_number or 0,
        planes[i].frame or 0, planes[i].file))
    return [planes[i] for i in order]


def same_position_groups(planes: Sequence[SlicePlane]) -> list[list[int]]:
    """Indices (into ``planes``, sorted) of the planes that share one position, for each
    position held by more than one plane."""
    distances = distances_along_normal(planes)
    groups: list[list[int]] = []
    for index in range(1, len(planes)):
        if abs(distances[index] - distances[index - 1]) <= SAME_POSITION_MM:
            if groups and groups[-1][-1] == index - 1:
                groups[-1].append(index)
            else:
                groups.append([index - 1, index])
    return groups


@dataclass(frozen=True)
class StackLayout:
    """The sorted, distinct slice planes of a series and the regular grid they are read onto.

    ``regular`` means each plane is one slice of the grid (a uniform, untilted stack): the
    pixels are used as they are. Otherwise :func:`regularize` resamples them.
    """

    planes: tuple[SlicePlane, ...]
    distances: np.ndarray  # of each plane along the normal, from the first
    offsets: np.ndarray  # (n, 2) in-plane shift of each plane from the first: row, column (mm)
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]  # 3 x 3, row-major, columns: row, column, normal
    size: tuple[int, int, int]
    regular: bool
    notes: tuple[str, ...] = ()

    def grid(self) -> sitk.Image:
        """An empty image with the grid's geometry (for resampling and comparisons)."""
        image = sitk.Image(list(self.size), sitk.sitkUInt8)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image


def _positions(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:6])
    return shown + (f" and {len(values) - 6} more" if len(values) > 6 else "")


def check_one_stack(planes: Sequence[SlicePlane], name: str) -> None:
    """Refuse images that are not slices of one volume: other orientations, sizes or pixel
    spacings (after :func:`without_localizer`)."""
    first = planes[0]
    for plane in planes[1:]:
        if not same_orientation(plane, first):
            raise InputError(name, f"its slices have different orientations ({first.label()}: "
                             f"{_cosines(first)}, {plane.label()}: {_cosines(plane)}): a "
                             "localizer or several stacks in one series; put the stack to "
                             "read in a folder of its own")
        if (plane.rows, plane.columns) != (first.rows, first.columns) or not np.allclose(
                plane.pixel_spacing, first.pixel_spacing, atol=1e-4):
            raise InputError(name, f"its slices differ in size or pixel spacing ({first.label()}: "
                             f"{first.columns} x {first.rows} at {first.pixel_spacing}, "
                             f"{plane.label()}: {plane.columns} x {plane.rows} at "
                             f"{plane.pixel_spacing}): they are not one volume")


def orthonormal_axes(row: Sequence[float], column: Sequence[float]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The orthonormal pair of directions nearest to a header's row and column cosines (their
    polar decomposition, which shares the correction between the two). Headers round the
    cosines (to 3-6 decimals): taken as they are, the grid's axes are neither unit length nor
    at right angles, and ITK's NIfTI writer then coerces them with a warning."""
    u, _, vt = np.linalg.svd(np.stack([np.asarray(row, float), np.asarray(column, float)],
                                      axis=1), full_matrices=False)
    axes = u @ vt
    return axes[:, 0], axes[:, 1]


def plan_stack(planes: Sequence[SlicePlane], name: str) -> StackLayout:
    """The regular grid for distinct planes sorted along their normal (see the module's
    docstring); refuses, naming ``name`` and the positions, what cannot be read safely."""
    check_one_stack(planes, name)
    first = planes[0]
    row, column = orthonormal_axes(first.row, first.column)
    normal = np.cross(row, column)
    direction = tuple(np.stack([row, column, normal], axis=1).ravel().tolist())
    along = distances_along_normal(planes)
    distances = along - along[0]
    shifts = (np.asarray([p.position for p in planes]) - np.asarray(first.position)
              - distances[:, None] * normal)
    offsets = np.stack([shifts @ row, shifts @ column], axis=1)
    in_plane = (first.pixel_spacing[1], first.pixel_spacing[0])
    if len(planes) == 1:
        return StackLayout(tuple(planes), distances, offsets, first.position,
                           (*in_plane, first.thickness or 1.0), direction,
                           (first.columns, first.rows, 1), regular=True)
    steps = np.diff(distances)
    step = float(np.median(steps))
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * step)
    gaps = np.flatnonzero(steps > MAX_GAP_STEPS * step + tolerance)
    if gaps.size:
        k = int(gaps[0])
        raise InputError(name, (
            f"slices are missing between {along[k]:g} mm ({planes[k].label()}) and "
            f"{along[k + 1]:g} mm ({planes[k + 1].label()}) along the slice normal: a "
            f"{steps[k]:g} mm gap is {steps[k] / step:.1f} x the {step:g} mm slice step "
            f"(more than {MAX_GAP_STEPS - 1:g} consecutive slices missing"
            + (f"; {gaps.size} such gaps" if gaps.size > 1 else "")
            + "). Interpolating across it would invent anatomy: export the complete series "
            "again, or put each part in a folder of its own"))
    tilt = float(np.abs(offsets).max())
    uniform = bool(np.all(np.abs(steps - step) <= tolerance))
    span = float(distances[-1])
    if uniform and tilt <= tolerance:
        return StackLayout(tuple(planes), distances, offsets, first.position,
                           (*in_plane, span / (len(planes) - 1)), direction,
                           (first.columns, first.rows, len(planes)), regular=True)
    count = max(1, round(span / step))
    spacing = span / count
    notes = []
    multiples = np.rint(steps / step)
    missing = (multiples >= 2) & (np.abs(steps - multiples * step) <= tolerance)
    missing_at = [along[k] + step * m for k in np.flatnonzero(missing)
                  for m in range(1, int(multiples[k]))]
    if missing_at:
        notes.append(f"{len(missing_at)} slice(s) missing at {_positions(missing_at)} mm along "
                     f"the slice normal (the other slices are {step:g} mm apart)")
    if np.any((np.abs(steps - step) > tolerance) & ~missing):
        notes.append(f"the slice step varies from {steps.min():g} to {steps.max():g} mm "
                     f"(median {step:g} mm)")
    if tilt > tolerance:
        angle = math.degrees(math.atan2(float(np.hypot(*offsets[-1])), span))
        notes.append(f"the slices are not stacked along their normal (gantry tilt "
                     f"{angle:.1f} degrees: the last slice is shifted by {tilt:.2f} mm in its "
                     "plane)")
    notes.append(f"the volume was resampled onto a uniform, orthogonal {spacing:g} mm slice "
                 f"grid ({count + 1} slices from {len(planes)}; linear interpolation), as "
                 "dcm2niix and Slicer's DICOM geometry regularization do")
    return StackLayout(tuple(planes), distances, offsets, first.position,
                       (*in_plane, spacing), direction, (first.columns, first.rows, count + 1),
                       regular=False, notes=tuple(notes))


def _cosines(plane: SlicePlane) -> str:
    return "\\".join(f"{v:g}" for v in (*plane.row, *plane.column))


def regularize(stack: np.ndarray, layout: StackLayout) -> np.ndarray:
    """The slices ``stack`` (n, rows, columns[, components]), one per plane of ``layout``,
    resampled onto its grid: each output slice is the linear blend of the two planes around it
    along the normal, each plane first shifted in-plane by its offset (a gantry tilt). Pixels
    outside a shifted plane take the stack's minimum (air in CT). The pixel type is kept
    (integers are rounded and clipped)."""
    from scipy import ndimage

    if layout.regular:
        return stack
    count = layout.size[2]
    targets = np.arange(count) * layout.spacing[2]
    distances = layout.distances
    out = np.empty((count, *stack.shape[1:]), stack.dtype)
    fill = float(stack.min())
    pixel = (layout.spacing[1], layout.spacing[0])  # mm per row, per column
    cache: dict[int, np.ndarray] = {}

    def plane(k: int) -> np.ndarray:
        if k not in cache:
            data = stack[k].astype(np.float32)
            shift = (layout.offsets[k, 1] / pixel[0], layout.offsets[k, 0] / pixel[1])
            if abs(shift[0]) > 1e-3 or abs(shift[1]) > 1e-3:
                # output (r, c) lies at in-plane (c, r) - offset of plane k: sample there
                data = ndimage.shift(data, (*shift, *([0] * (data.ndim - 2))), order=1,
                                     mode="constant", cval=fill)
            if len(cache) > 4:  # output slices walk forward: older planes are done
                cache.clear()
            cache[k] = data
        return cache[k]

    for m, target in enumerate(targets):
        upper = int(np.clip(np.searchsorted(distances, target - 1e-6), 1, len(distances) - 1))
        lower = upper - 1
        weight = float(np.clip((target - distances[lower])
                               / (distances[upper] - distances[lower]), 0.0, 1.0))
        value = (1 - weight) * plane(lower) + weight * plane(upper)
        if np.issubdtype(stack.dtype, np.integer):
            info = np.iinfo(stack.dtype)
            value = np.clip(np.rint(value), info.min, info.max)
        out[m] = value
    return out


def _slice_of(image: sitk.Image, plane: SlicePlane) -> int | None:
    """The index of ``image``'s slice that is exactly ``plane`` (same pixels, same place), or
    None when the plane cuts the grid elsewhere."""
    size = image.GetSize()
    if (size[0], size[1]) != (plane.columns, plane.rows) or not np.allclose(
            image.GetSpacing()[:2], (plane.pixel_spacing[1], plane.pixel_spacing[0]), atol=1e-4):
        return None
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not (np.allclose(direction[:, 0], plane.row, atol=1e-4)
            and np.allclose(direction[:, 1], plane.column, atol=1e-4)):
        return None
    index = image.TransformPhysicalPointToContinuousIndex(plane.position)
    k = round(index[2])
    if abs(index[0]) > 1e-3 or abs(index[1]) > 1e-3 or abs(index[2] - k) > 1e-3 \
            or not 0 <= k < size[2]:
        return None
    return k


def sample_on_planes(image: sitk.Image, planes: Sequence[SlicePlane]) -> np.ndarray:
    """``image`` (a label map or mask, any grid) sampled, nearest neighbour, on each plane:
    (n, rows, columns); 0 where a plane lies outside the image.

    Exports use this so that every DICOM SEG frame and RTSTRUCT contour shows the segmentation
    where its source image actually lies, whatever grid the segmentation was drawn on."""
    array = sitk.GetArrayViewFromImage(image)
    out = np.zeros((len(planes), planes[0].rows, planes[0].columns), array.dtype)
    for n, plane in enumerate(planes):
        k = _slice_of(image, plane)
        if k is not None:  # the plane is one of the grid's slices: no resampling
            out[n] = array[k]
        else:
            sampled = sitk.Resample(image, plane.grid(), sitk.Transform(),
                                    sitk.sitkNearestNeighbor, 0, image.GetPixelID())
            out[n] = sitk.GetArrayViewFromImage(sampled)[0]  # copied while ``sampled`` lives
    return out


def masks_on_planes(masks: Sequence[tuple[str, np.ndarray]], grid: sitk.Image,
                    planes: Sequence[SlicePlane], series_name: str) -> list[np.ndarray]:
    """Each named (z, y, x) mask on ``grid``, sampled on the planes; a mask with voxels that
    lands on no plane is refused (it was drawn on another series)."""
    sampled, lost = [], []
    for name, mask in masks:
        image = image_like(np.asarray(mask, np.uint8), grid)
        on_planes = sample_on_planes(image, planes).astype(bool)
        if np.any(mask) and not on_planes.any():
            lost.append(name)
        sampled.append(on_planes)
    if lost:
        raise InputError("segmentation", f"segments {', '.join(lost)} lie on no image of "
                         f"{series_name}: is it the series they were drawn on?")
    return sampled
