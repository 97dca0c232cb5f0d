"""Export a segmentation to the formats other systems read: DICOM SEG and RTSTRUCT that
reference the source DICOM series, and NRRD, NIfTI and Slicer's ``.seg.nrrd``; and a result's
probability maps as a FRACTIONAL DICOM SEG that references the series the same way.

Every DICOM SEG frame and RTSTRUCT contour shows the segmentation where its source image lies
(its ImagePositionPatient), so a series with a missing slice, a varying step or a gantry tilt is
referenced image by image. A segmentation drawn on another grid than the series' own (the rectal
task's b0 grid, exported against the T2w series) is sampled there, nearest neighbour, and the
result says so; one that does not overlap the series is refused, and so is a series whose UIDs
were blanked (nothing to reference). Probability maps are sampled there by linear
interpolation (:func:`oncoseg.io.dicomseg.fractions_on_planes`). Files are written atomically
and never over an existing file unless asked.

A ``predict`` output folder is exported by naming the folder, its ``result.json`` or its
segmentation: the segmentation and the maps are the files ``result.json`` lists, and the DICOM
objects name the model it records.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.export_formats import DICOM_FORMATS, ENDINGS, FORMATS, FRACTIONAL, REPORT
from oncoseg.geometry import check_overlap, same_grid, voxel_volume_ml
from oncoseg.io.atomic import refuse_existing
from oncoseg.io.dicom import Algorithm
from oncoseg.io.dicom_geometry import SlicePlane, plan_stack
from oncoseg.io.dicom_series import (
    DicomSeries,
    choose_dicom_series,
    reference_planes,
    series_identity,
)
from oncoseg.io.segnrrd import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from oncoseg.io.volumes import read_image, write_image
from oncoseg.structure_names import DEFAULT_NAMING, structure_name
from oncoseg.terminology import ABNORMAL_STRUCTURE, SPATIAL_CONCEPT, Code, Terminology


@dataclass
class ExportResult:
    path: Path
    format: str
    segments: list[str]
    messages: list[str] = field(default_factory=list)


def load_segmentation(path: str | os.PathLike[str], task: str | None = None
                      ) -> tuple[Segmentation, list[str]]:
    """A ``.seg.nrrd`` as it is, or a label-map volume whose labels are named after ``task``'s
    segments (without a task: ``Label 1``, ``Label 2`` ...); and notes on labels the task
    names otherwise or not at all."""
    path = Path(path)
    if str(path).lower().endswith(".seg.nrrd"):
        return read_seg_nrrd(path), []
    labels = read_image(path)
    array = sitk.GetArrayViewFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(str(path), "is not a label map (integer labels, one component)")
    values = [int(v) for v in np.unique(array) if v != 0]
    specs, notes = _label_specs(values, task, path.name) if task is not None else ({}, [])
    segments = []
    for value in values:
        spec = specs.get(value)
        segments.append(Segment(
            id=f"label_{value}", name=spec.name if spec else f"Label {value}",
            color=spec.color if spec else _default_color(value), label_value=value,
            terminology=spec.terminology.to_slicer() if spec and spec.terminology else ""))
    return Segmentation.from_label_image(labels, segments), notes


def _label_specs(values: Sequence[int], task: str, name: str) -> tuple[dict[int, Any], list[str]]:
    """Which of ``task``'s segments each label value of file ``name`` is: its own value, or a
    value a data set stores it as where the file lacks its own (BraTS 2017-2021 store the
    enhancing tumour as 4 and have no 3; read as 'Label 4', a DICOM SEG would have carried
    the tumour's most telling part unnamed). Values that are none of them keep a generic name,
    with a note."""
    from oncoseg.tasks import get_task

    segments = get_task(task).segments
    specs = {s.label: s for s in segments}
    notes = []
    for value in sorted(set(values) - set(specs)):
        spec = next((s for s in segments if value in s.stored_as and s.label not in values),
                    None)
        if spec is not None:
            specs[value] = spec
            notes.append(f"{name}: label {value} read as '{spec.name}' (the file has no label "
                         f"{spec.label}; data sets such as BraTS 2017-2021 store it as {value})")
        else:
            own = ", ".join(f"{s.label} {s.name}" for s in segments)
            notes.append(f"{name}: label {value} is none of the {task} task's segments ({own}): "
                         f"exported as 'Label {value}'")
    return specs, notes


def _default_color(value: int) -> tuple[float, float, float]:
    hue = (value * 0.61803398875) % 1.0  # golden-ratio hues: neighbours differ
    return colorsys.hsv_to_rgb(hue, 0.75, 0.9)


def instance_grid_note(image: sitk.Image, planes: Sequence[SlicePlane], reference_name: str,
                       what: str = "the segmentation", how: str = "nearest neighbour"
                       ) -> list[str]:
    """Whether exporting samples ``image`` (``what``: the segmentation's grid, a probability
    map) off its own grid: none when it lies on the series' regular grid (each image is one of
    its slices), else a note (``how`` it is sampled onto each image's plane); an image
    elsewhere in space is refused."""
    try:
        grid = plan_stack(planes, reference_name).grid()
    except InputError:  # a gap no reader accepts: the images' own planes are still exact
        grid = None
    if grid is not None and same_grid(image, grid, tolerance=1e-3):
        return []
    extent = grid if grid is not None else _box_through(planes)
    check_overlap(image, extent, what, reference_name)
    return [f"{what} {'were' if what.endswith('s') else 'was'} resampled ({how}) onto the "
            f"planes of the images of {reference_name}"]


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
                        label: str = "OncoSeg", algorithm: Algorithm | None = None,
                        naming: str = DEFAULT_NAMING, what: str = "the segmentation"
                        ) -> ExportResult:
    """Write ``segmentation`` (called ``what`` in messages) as ``fmt``; the DICOM formats
    reference ``series``, name ``algorithm`` (the model that made it) as their processing
    equipment and name the structures by ``naming`` (TG-263 by default, OncoSeg's name kept as
    the description)."""
    output = _checked_output(output, fmt, overwrite)
    if fmt in (FRACTIONAL, REPORT):
        raise ValueError(f"{fmt} is written from a result: export_probabilities, export_report")
    messages: list[str] = []
    if fmt in DICOM_FORMATS and not segmentation.segments:
        # a SEG needs one segment, an RTSTRUCT one ROI (dciodvfy: "Bad Sequence number of
        # Items 0" for StructureSetROISequence); NRRD and NIfTI can hold an empty label map
        raise InputError(what, f"holds no segment (every voxel is 0): a {fmt} needs at least "
                         "one; nothing was written (NRRD and NIfTI exports can hold it)")
    if fmt in DICOM_FORMATS:
        planes, name = _referenced_planes(series, fmt)
        messages = instance_grid_note(segmentation.geometry, planes, name)
        segments, renamed = named_segments(segmentation.segments, naming)
        segmentation = Segmentation(segmentation.layers, segments)
        messages += renamed
        if fmt == "dicom-seg":
            from oncoseg.io.dicomseg import write_dicom_seg

            write_dicom_seg(segmentation, planes, output, overwrite, label,
                            reference_name=name, algorithm=algorithm)
        else:
            from oncoseg.io.rtstruct import StructureToWrite, write_rtstruct

            structures = [StructureToWrite(s.name, segmentation.mask(s.id),
                                           tuple(round(255 * c) for c in s.color),
                                           interpreted_type(s), s.description,
                                           _type_code(s))
                          for s in segmentation.segments]
            write_rtstruct(structures, segmentation.geometry, planes, output, label, overwrite,
                           reference_name=name, algorithm=algorithm)
    elif fmt == "seg.nrrd":
        write_seg_nrrd(segmentation, output, overwrite)
    else:
        write_image(segmentation.label_image(), output, overwrite)
        messages.append("label values: " + ", ".join(
            f"{i} = {s.name}" for i, s in enumerate(segmentation.segments, start=1)))
    return ExportResult(output, fmt, [s.name for s in segmentation.segments], messages)


def named_segments(segments: Sequence[Segment], naming: str = DEFAULT_NAMING
                   ) -> tuple[list[Segment], list[str]]:
    """The segments as a DICOM export names them (``naming``: TG-263 where it defines the
    structure, OncoSeg's name then kept as the description), and a note of the renaming."""
    named, changes = [], []
    for segment in segments:
        name = structure_name(segment.name, segment.terminology, naming)
        if name == segment.name:
            named.append(segment)
            continue
        named.append(replace(segment, name=name, description=segment.name))
        changes.append(f"{segment.name} -> {name}")
    note = [f"structures named by AAPM TG-263 ({', '.join(changes)}); OncoSeg's names are "
            "their descriptions (--names oncoseg keeps OncoSeg's)"] if changes else []
    return named, note


def _type_code(segment: Segment) -> Code | None:
    term = Terminology.from_slicer(segment.terminology)
    return term.type if term is not None else None


def export_probabilities(maps: Mapping[str, sitk.Image], segments: Sequence[Segment],
                         output: str | os.PathLike[str], series: DicomSeries | None,
                         overwrite: bool = False, label: str = "OncoSeg",
                         algorithm: Algorithm | None = None,
                         maximum: int | None = None,
                         naming: str = DEFAULT_NAMING) -> ExportResult:
    """Write the probability map of each of ``segments`` (``maps`` by segment name, each on
    any grid, read one at a time) as a FRACTIONAL DICOM SEG referencing ``series``, its
    MaximumFractionalValue ``maximum`` (default 255), segments named by ``naming``."""
    from oncoseg.io.dicomseg import DEFAULT_MAXIMUM_FRACTIONAL_VALUE, write_fractional_dicom_seg

    output = _checked_output(output, FRACTIONAL, overwrite)
    planes, name = _referenced_planes(series, FRACTIONAL)
    named, renamed = named_segments(segments, naming)
    messages: list[str] = []

    def checked() -> Iterator[tuple[Segment, sitk.Image]]:
        for original, segment in zip(segments, named, strict=True):
            image = maps[original.name]
            for note in instance_grid_note(image, planes, name, "the probability maps",
                                           "linear interpolation"):
                if note not in messages:
                    messages.append(note)
            yield segment, image

    write_fractional_dicom_seg(checked(), planes, output, overwrite, label,
                               reference_name=name, algorithm=algorithm,
                               maximum=DEFAULT_MAXIMUM_FRACTIONAL_VALUE if maximum is None
                               else maximum)
    return ExportResult(output, FRACTIONAL, [s.name for s in named], messages + renamed)


def export_report(folder: Path, document: Mapping[str, Any], output: str | os.PathLike[str],
                  series: DicomSeries | None, seg_file: str | os.PathLike[str] | None = None,
                  overwrite: bool = False, label: str = "OncoSeg",
                  naming: str = DEFAULT_NAMING) -> ExportResult:
    """A ``predict`` folder's measurements (the volumes its ``result.json`` lists, staging's
    P(T3)) as a TID 1500 DICOM SR: :func:`export_measurements`."""
    from oncoseg.io.dicomsr import staging_from_result

    relative = document.get("files", {}).get("segmentation")
    staging = staging_from_result(document)
    if not relative and staging is None:
        raise InputError(str(folder), "holds no measurements to report (no segmentation, no "
                         "staging result)")
    measured = {s["name"]: s["volume_ml"] for s in document.get("segments", [])
                if isinstance(s, dict)}
    return export_measurements(output, series, read_seg_nrrd(folder / relative)
                               if relative else None, measured, staging, seg_file, overwrite,
                               label, Algorithm.of_model(document.get("model")), naming)


def export_measurements(output: str | os.PathLike[str], series: DicomSeries | None,
                        segmentation: Segmentation | None = None,
                        volumes_ml: Mapping[str, float] | None = None,
                        staging: Any = None, seg_file: str | os.PathLike[str] | None = None,
                        overwrite: bool = False, label: str = "OncoSeg",
                        algorithm: Algorithm | None = None,
                        naming: str = DEFAULT_NAMING) -> ExportResult:
    """Measurements as a TID 1500 DICOM SR referencing ``series``: each segment's volume
    (``volumes_ml`` by segment name, as ``predict`` measured them, or else counted on
    ``segmentation`` as it is now), referencing its segment in ``seg_file`` or in a DICOM SEG
    written beside the report; and ``staging`` (:class:`oncoseg.io.dicomsr.Staging`)."""
    from oncoseg.io.dicomsr import segment_volumes, write_measurement_report

    output = _checked_output(output, REPORT, overwrite)
    planes, name = _referenced_planes(series, REPORT)
    if segmentation is None and staging is None:
        raise ValueError("a measurement report needs a segmentation or a staging result")
    messages: list[str] = []
    volumes, written = [], None
    if segmentation is not None:
        named, _ = named_segments(segmentation.segments, naming)
        counted = volumes_ml if volumes_ml is not None else segment_volumes_ml(segmentation)
        volumes = segment_volumes(
            [(n.name, n.terminology) for n in named],
            {n.name: counted[s.name] for s, n in zip(segmentation.segments, named, strict=True)
             if s.name in counted})
        if seg_file is None:
            written = seg_file = output.with_name(output.name[:-len(".dcm")] + ".seg.dcm")
            messages += export_segmentation(segmentation, written, "dicom-seg", series,
                                            overwrite, label, algorithm, naming).messages
            messages.append(f"the volumes reference their segments in {written.name}, written "
                            "beside the report: send both")
    try:
        # each instance once: an enhanced image's frames share its file
        write_measurement_report(output, list(dict.fromkeys(p.file for p in planes)), volumes,
                                 algorithm, seg_file, staging, overwrite, label, name)
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise
    return ExportResult(output, REPORT, [v.name for v in volumes], messages)


def segment_volumes_ml(segmentation: Segmentation) -> dict[str, float]:
    """Each segment's volume (mL) as its voxels on the segmentation's grid."""
    voxel_ml = voxel_volume_ml(segmentation.geometry)
    return {s.name: float(np.count_nonzero(segmentation.mask(s.id))) * voxel_ml
            for s in segmentation.segments}


def _checked_output(output: str | os.PathLike[str], fmt: str, overwrite: bool) -> Path:
    output = Path(output)
    if fmt not in FORMATS:
        raise InputError("--format", f"'{fmt}' is not one of {', '.join(FORMATS)}")
    if not str(output).lower().endswith(ENDINGS[fmt]):
        raise InputError(str(output), f"a {fmt} file name ends in {' or '.join(ENDINGS[fmt])}")
    refuse_existing(output, overwrite)
    return output


def _referenced_planes(series: DicomSeries | None, fmt: str) -> tuple[list[SlicePlane], str]:
    """The planes of the series' images a DICOM export references, and how messages name
    the series."""
    if series is None:
        raise InputError("--reference", f"{fmt} export needs the DICOM series the "
                         "segmentation belongs to")
    planes = reference_planes(series)  # refuses series without usable UIDs
    return planes, f"DICOM series {series.uid or series.name}"


def export_file(segmentation_path: str | os.PathLike[str], output: str | os.PathLike[str],
                fmt: str, reference: str | os.PathLike[str] | None = None,
                series_uid: str | None = None, task: str | None = None,
                overwrite: bool = False, label: str = "OncoSeg",
                maximum_fractional_value: int | None = None,
                naming: str = DEFAULT_NAMING,
                seg_file: str | os.PathLike[str] | None = None) -> ExportResult:
    """The command line's export: read, check, write. ``segmentation_path`` is a segmentation
    file, or a ``predict`` output folder (or its ``result.json``) for its segmentation; what
    lies in such a folder is exported with the identity of the model that made it. The
    probability maps (``dicom-seg-fractional``) are those the folder's ``result.json`` lists."""
    found = prediction_folder(segmentation_path)
    if fmt == REPORT:
        if found is None:
            raise InputError(str(segmentation_path), f"{REPORT} reports the measurements of a "
                             "predict output folder: name the folder, its result.json or its "
                             "segmentation")
        series = choose_dicom_series(reference, series_uid) if reference is not None else None
        check_reference_matches(found[1].get("input_series"), series, reference)
        return export_report(*found, output, series, seg_file, overwrite, label, naming)
    if fmt == FRACTIONAL:
        if found is None or not found[1].get("files", {}).get("probabilities"):
            raise InputError(str(segmentation_path), (
                f"has no probability maps beside it: {FRACTIONAL} exports the maps of a "
                "predict output folder (the files its result.json lists under "
                "'probabilities'); name that folder, its result.json or its segmentation. "
                "Tasks that classify (staging) write no maps"))
        folder, document = found
        maps = result_maps(folder, document["files"]["probabilities"])
        series = choose_dicom_series(reference, series_uid) if reference is not None else None
        check_reference_matches(document.get("input_series"), series, reference)
        return export_probabilities(maps, result_segments(document, list(maps)), output,
                                    series, overwrite, label,
                                    Algorithm.of_model(document.get("model")),
                                    maximum_fractional_value, naming)
    source = Path(segmentation_path)
    if found is not None and (source.is_dir() or source.name == "result.json"):
        relative = found[1].get("files", {}).get("segmentation")
        if not relative:
            raise InputError(str(segmentation_path), "holds no segmentation (its task "
                             f"'{found[1].get('task')}' makes none)")
        source = found[0] / relative
    segmentation, notes = load_segmentation(source, task)
    series = choose_dicom_series(reference, series_uid) if reference is not None else None
    check_reference_matches(found[1].get("input_series") if found else None, series,
                            reference)
    result = export_segmentation(segmentation, output, fmt, series, overwrite, label,
                                 Algorithm.of_model(found[1].get("model")) if found else
                                 Algorithm(), naming, str(source))
    result.messages[:0] = notes
    return result


def check_reference_matches(computed_on: Mapping[str, Mapping[str, str]] | None,
                            series: DicomSeries | None,
                            reference: str | os.PathLike[str] | None) -> None:
    """Refuse a reference series in another frame of reference, or of another patient, than
    the DICOM series a result was computed on (``computed_on``: input role -> its
    :func:`series_identity`, as ``result.json`` records them under ``input_series``): points
    in one frame of reference say nothing of another, and the export would carry that other
    series' patient. A series of the same frame of reference (another series of the same
    study and session) may be referenced."""
    recorded = [(role, ident) for role, ident in (computed_on or {}).items()
                if ident.get("frame_of_reference_uid")]
    if series is None or not recorded:
        return
    ident = series_identity(series)
    frames = {i["frame_of_reference_uid"] for _, i in recorded}
    patients = {i.get("patient_id", "") for _, i in recorded} - {""}
    other_patient = ident.get("patient_id") and patients and ident["patient_id"] not in patients
    if ident.get("frame_of_reference_uid") in frames and not other_patient:
        return
    role, first = recorded[0]
    raise InputError(f"--reference {reference}", (
        f"holds series {ident.get('series_uid') or '(no UID)'} of patient "
        f"'{ident.get('patient_id', '')}' in frame of reference "
        f"{ident.get('frame_of_reference_uid') or '(none)'}; the result was computed on input "
        f"{role}, series {first.get('series_uid')} of patient '{first.get('patient_id', '')}' "
        f"in frame of reference {first['frame_of_reference_uid']}: "
        + ("another patient" if other_patient else "coordinates in one frame of reference say "
           "nothing of another")
        + "; name the series the prediction read"))


def prediction_folder(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """(the folder, its ``result.json``) when ``path`` is a ``predict`` output folder, its
    ``result.json`` or a file that ``result.json`` lists beside it; else None."""
    path = Path(path)
    result = path / "result.json" if path.is_dir() else \
        path if path.name == "result.json" else path.parent / "result.json"
    try:
        document = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("files", {}), dict):
        return None
    if result.parent != path and path != result and \
            path.name not in document.get("files", {}).values():
        return None  # a result.json of something else
    return result.parent, document


def algorithm_beside(segmentation_path: str | os.PathLike[str]) -> Algorithm:
    """The model named by the ``result.json`` of the folder a segmentation file lies in (as
    ``predict`` writes them), or OncoSeg alone."""
    found = prediction_folder(segmentation_path)
    return Algorithm.of_model(found[1].get("model")) if found else Algorithm()


class LazyMaps(Mapping[str, sitk.Image]):
    """Probability maps by segment name, each made by its reader (read from its file, copied
    out of a scene) when it is asked for and not kept: an export holds one at a time."""

    def __init__(self, readers: Mapping[str, Callable[[], sitk.Image]]):
        self.readers = dict(readers)

    def __getitem__(self, name: str) -> sitk.Image:
        return self.readers[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self.readers)

    def __len__(self) -> int:
        return len(self.readers)


def result_maps(folder: Path, files: Mapping[str, str]) -> LazyMaps:
    """The maps a ``result.json`` lists (segment name -> file in ``folder``); uint8 ones read
    back as float through their NIfTI slope."""
    def reader(name: str, path: Path) -> Callable[[], sitk.Image]:
        def read() -> sitk.Image:
            if not path.is_file():
                raise InputError(str(path), "is missing: result.json lists it as the "
                                 f"probability map of {name}")
            return read_image(path)
        return read

    return LazyMaps({name: reader(name, folder / relative) for name, relative in files.items()})


def result_segments(document: Mapping[str, Any], names: Sequence[str]) -> list[Segment]:
    """The segments of maps ``names`` as ``predict`` describes them in the segmentation: the
    task's colour and terminology for each, else the colour ``result.json`` lists (Tissue, as
    any segment without terminology)."""
    from oncoseg.prediction import file_stem
    from oncoseg.tasks import get_task

    try:
        specs = {s.name: s for s in get_task(str(document.get("task"))).segments}
    except InputError:  # a task this installation lacks
        specs = {}
    listed = {s.get("name"): s for s in document.get("segments", []) if isinstance(s, dict)}
    segments = []
    for value, name in enumerate(names, start=1):
        spec = specs.get(name)
        color = spec.color if spec else listed.get(name, {}).get("color") or \
            _default_color(value)
        segments.append(Segment(
            id=file_stem(name), name=name, color=tuple(color),
            label_value=spec.label if spec else value,
            terminology=spec.terminology.to_slicer() if spec and spec.terminology else ""))
    return segments
