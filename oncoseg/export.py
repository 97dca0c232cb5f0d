"""Export a segmentation to the formats other systems read: DICOM SEG and RTSTRUCT that
reference the source DICOM series, and NRRD, NIfTI and Slicer's ``.seg.nrrd``.

Every DICOM SEG frame and RTSTRUCT contour shows the segmentation where its source image lies
(its ImagePositionPatient), so a series with a missing slice, a varying step or a gantry tilt is
referenced image by image. A segmentation drawn on another grid than the series' own (the rectal
task's b0 grid, exported against the T2w series) is sampled there, nearest neighbour, and the
result says so; one that does not overlap the series is refused, and so is a series whose UIDs
were blanked (nothing to reference). Files are written atomically and never over an existing
file unless asked.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.export_formats import DICOM_FORMATS, ENDINGS, FORMATS
from oncoseg.geometry import check_overlap, same_grid
from oncoseg.io.atomic import refuse_existing
from oncoseg.io.dicom import Algorithm
from oncoseg.io.dicom_geometry import SlicePlane, plan_stack
from oncoseg.io.dicom_series import DicomSeries, choose_dicom_series, reference_planes
from oncoseg.io.segnrrd import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from oncoseg.io.volumes import read_image, write_image
from oncoseg.terminology import ABNORMAL_STRUCTURE, SPATIAL_CONCEPT, Terminology


@dataclass
class ExportResult:
    path: Path
    format: str
    segments: list[str]
    messages: list[str] = field(default_factory=list)


def load_segmentation(path: str | os.PathLike[str], task: str | None = None) -> Segmentation:
    """A ``.seg.nrrd`` as it is, or a label-map volume whose labels are named after ``task``'s
    segments (without a task: ``Label 1``, ``Label 2`` ...)."""
    path = Path(path)
    if str(path).lower().endswith(".seg.nrrd"):
        return read_seg_nrrd(path)
    labels = read_image(path)
    array = sitk.GetArrayViewFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(str(path), "is not a label map (integer labels, one component)")
    values = [int(v) for v in np.unique(array) if v != 0]
    specs = {}
    if task is not None:
        from oncoseg.tasks import get_task

        specs = {s.label: s for s in get_task(task).segments}
    segments = []
    for value in values:
        spec = specs.get(value)
        segments.append(Segment(
            id=f"label_{value}", name=spec.name if spec else f"Label {value}",
            color=spec.color if spec else _default_color(value), label_value=value,
            terminology=spec.terminology.to_slicer() if spec and spec.terminology else ""))
    return Segmentation.from_label_image(labels, segments)


def _default_color(value: int) -> tuple[float, float, float]:
    hue = (value * 0.61803398875) % 1.0  # golden-ratio hues: neighbours differ
    return colorsys.hsv_to_rgb(hue, 0.75, 0.9)


def instance_grid_note(segmentation: Segmentation, planes: Sequence[SlicePlane],
                       reference_name: str) -> list[str]:
    """Whether exporting samples the segmentation off its own grid: none when it lies on the
    series' regular grid (each image is one of its slices), else a note (nearest neighbour onto
    each image's plane); a segmentation elsewhere in space is refused."""
    try:
        grid = plan_stack(planes, reference_name).grid()
    except InputError:  # a gap no reader accepts: the images' own planes are still exact
        grid = None
    if grid is not None and same_grid(segmentation.geometry, grid, tolerance=1e-3):
        return []
    extent = grid if grid is not None else _box_through(planes)
    check_overlap(segmentation.geometry, extent, "the segmentation", reference_name)
    return [f"the segmentation was resampled (nearest neighbour) onto the planes of the "
            f"images of {reference_name}"]


def _box_through(planes: Sequence[SlicePlane]) -> sitk.Image:
    """A two-slice grid from the first plane to the last: the series' extent."""
    first, last = planes[0], planes[-1]
    span = float(np.dot(first.normal, np.subtract(last.position, first.position)))
    box = first.grid()
    grid = sitk.Image([first.columns, first.rows, 2], sitk.sitkUInt8)
    grid.SetOrigin(box.GetOrigin())
    grid.SetDirection(box.GetDirection())
    grid.SetSpacing([*box.GetSpacing()[:2], max(span, 1e-3)])
    return grid


def interpreted_type(segment: Segment) -> str:
    """The RT ROI Interpreted Type a planning system expects of the segment."""
    term = Terminology.from_slicer(segment.terminology)
    if term is None:
        return "ORGAN"
    if term.category == SPATIAL_CONCEPT and "target volume" in term.type.meaning.lower():
        return term.type.meaning.split()[0][0] + "TV"  # Clinical / Planning target volume
    if term.category == ABNORMAL_STRUCTURE:
        return "GTV"
    return "ORGAN"


def export_segmentation(segmentation: Segmentation, output: str | os.PathLike[str], fmt: str,
                        series: DicomSeries | None = None, overwrite: bool = False,
                        label: str = "OncoSeg", algorithm: Algorithm | None = None
                        ) -> ExportResult:
    """Write ``segmentation`` as ``fmt``; the DICOM formats reference ``series`` and name
    ``algorithm`` (the model that made it) as their processing equipment."""
    output = Path(output)
    if fmt not in FORMATS:
        raise InputError("--format", f"'{fmt}' is not one of {', '.join(FORMATS)}")
    if not str(output).lower().endswith(ENDINGS[fmt]):
        raise InputError(str(output), f"a {fmt} file name ends in {' or '.join(ENDINGS[fmt])}")
    refuse_existing(output, overwrite)
    messages: list[str] = []
    names = [s.name for s in segmentation.segments]
    if fmt in DICOM_FORMATS:
        if series is None:
            raise InputError("--reference", f"{fmt} export needs the DICOM series the "
                             "segmentation belongs to")
        planes = reference_planes(series)  # refuses series without usable UIDs
        name = f"DICOM series {series.uid or series.name}"
        messages = instance_grid_note(segmentation, planes, name)
        files = [p.file for p in planes]
        if fmt == "dicom-seg":
            from oncoseg.io.dicomseg import write_dicom_seg

            write_dicom_seg(segmentation, files, output, overwrite, label,
                            reference_name=name, algorithm=algorithm)
        else:
            from oncoseg.io.rtstruct import write_rtstruct

            structures = [(s.name, segmentation.mask(s.id),
                           tuple(round(255 * c) for c in s.color), interpreted_type(s))
                          for s in segmentation.segments]
            write_rtstruct(structures, segmentation.geometry, files, output, label, overwrite,
                           reference_name=name, algorithm=algorithm)
    elif fmt == "seg.nrrd":
        write_seg_nrrd(segmentation, output, overwrite)
    else:
        write_image(segmentation.label_image(), output, overwrite)
        messages.append("label values: " + ", ".join(
            f"{i} = {name}" for i, name in enumerate(names, start=1)))
    return ExportResult(output, fmt, names, messages)


def export_file(segmentation_path: str | os.PathLike[str], output: str | os.PathLike[str],
                fmt: str, reference: str | os.PathLike[str] | None = None,
                series_uid: str | None = None, task: str | None = None,
                overwrite: bool = False, label: str = "OncoSeg") -> ExportResult:
    """The command line's export: read, check, write. A segmentation in a ``predict`` output
    folder is exported with the identity of the model that made it (its ``result.json``)."""
    segmentation = load_segmentation(segmentation_path, task)
    series = choose_dicom_series(reference, series_uid) if reference is not None else None
    return export_segmentation(segmentation, output, fmt, series, overwrite, label,
                               algorithm_beside(segmentation_path))


def algorithm_beside(segmentation_path: str | os.PathLike[str]) -> Algorithm:
    """The model named by the ``result.json`` of the folder a segmentation file lies in (as
    ``predict`` writes them), or OncoSeg alone."""
    import json

    result = Path(segmentation_path).parent / "result.json"
    try:
        document = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Algorithm()
    files = document.get("files", {}).values() if isinstance(document, dict) else ()
    if Path(segmentation_path).name not in files:
        return Algorithm()  # a result.json of something else
    return Algorithm.of_model(document.get("model"))
