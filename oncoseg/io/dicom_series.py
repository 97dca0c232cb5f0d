"""DICOM image series in folders: finding them, choosing one, reading it as a volume.

Folders are scanned with pydicom's header reader, not GDCM's series grouping: anonymised series
with empty or absent UIDs are still found (grouped by folder, series number and description),
files of one series may lie in several folders, and a study folder with one sub-folder per series
(or a DICOMDIR tree) is listed down to :data:`MAX_DEPTH` levels. Non-image objects (RT structure
sets, DICOM SEG, reports, DICOMDIR) are not series to read and are skipped.

Reading takes the slice geometry from the headers (:mod:`oncoseg.io.dicom_geometry`) and the
pixels from GDCM (SimpleITK), which decodes every transfer syntax; a series that is not a uniform
stack comes back resampled onto a regular grid with notes saying so, or is refused. Each slice
and each frame gets its own rescale slope and intercept (:func:`same_rescale`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.dicom import PYDICOM_3, sop_reference
from oncoseg.io.dicom_geometry import (
    PLACEMENT_ATTRIBUTES,
    SAME_POSITION_MM,
    SlicePlane,
    StackLayout,
    check_one_stack,
    distances_along_normal,
    functional_value,
    missing_placement,
    plan_stack,
    regularize,
    same_position_groups,
    slice_planes,
    sort_planes,
    without_localizer,
)
from oncoseg.io.endings import is_volume_file
from oncoseg.io.folders import may_follow, walk
from oncoseg.validation import UNPLACED_KEY

# Folder levels searched below the folder given: a PACS or CD export's
# DICOM/patient/study/series/files is 4, and dcm2niix searches 5 by default (its -d)
MAX_DEPTH = 5
# Files a folder search reads headers of at most (a header takes about 1 ms: a minute), far
# above a study's (a CT study of many series: thousands)
MAX_FILES = 50_000
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
NOT_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC"}
UNDECODABLE = "no reader recognises its pixel data: truncated, or an unknown encoding"
# What tells the acquisitions of one series apart where they share slice positions: a Dixon
# series' water, fat, in- and opposed-phase images (ImageType), pre- and post-contrast runs, the
# echoes of a multi-echo series, the time points of a dynamic one. Slicer's DICOM module offers
# the parts of a series by AcquisitionNumber and ImageType (DICOMScalarVolumePlugin's subseries
# tags, v5.10.0); OncoSeg lists them as series of their own where each is one stack.
ACQUISITION_TAGS = ("AcquisitionNumber", "ImageType", "EchoNumbers", "TemporalPositionIdentifier")
# Their counterparts in an enhanced image's functional groups, as (sequence, attribute): Philips
# stores a Dixon series' water and fat images, or several echoes, as frames of one file; a
# legacy converted enhanced image (PACS converters, highdicom) keeps the single-frame
# attributes in its frames' unassigned groups
_UNASSIGNED = "UnassignedPerFrameConvertedAttributesSequence"
FRAME_ACQUISITION_TAGS = (("MRImageFrameTypeSequence", "FrameType"),
                          ("CTImageFrameTypeSequence", "FrameType"),
                          ("MREchoSequence", "EffectiveEchoTime"),
                          ("FrameContentSequence", "TemporalPositionIndex"),
                          ("FrameContentSequence", "StackID"),
                          *((_UNASSIGNED, tag) for tag in (*ACQUISITION_TAGS, "EchoTime")))
_LISTING_TAGS = ["SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID",
                 "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Rows", "Columns",
                 "NumberOfFrames", "InstanceNumber", "ImagePositionPatient",
                 "ImageOrientationPatient", *ACQUISITION_TAGS]


@dataclass(frozen=True)
class DicomSeries:
    """One image series, described well enough for a user to choose it."""

    uid: str  # SeriesInstanceUID; "" when the files have none
    files: tuple[str, ...]  # in slice order along the normal (where the headers say)
    description: str
    modality: str
    number: str = ""  # SeriesNumber
    size_bytes: int = 0
    folder: str = ""  # the folder holding its files (their common parent)
    part: str = ""  # one acquisition of a series that holds several: "ImageType ORIGINAL\..."
    frames: tuple[int, ...] = ()  # of a multi-frame file holding several acquisitions: this one's

    @property
    def label(self) -> str:
        """The description, and the acquisition where the series holds several: what a
        description pattern is matched against."""
        return f"{self.description} ({self.part})".strip() if self.part else self.description

    def summary(self) -> str:
        text = f"{self.uid or '(no series UID)'} ({self.modality or '?'}, {len(self.files)} files"
        return text + (f", '{self.label}')" if self.label else ")")

    @property
    def name(self) -> str:
        """How messages name the series: the folder holding its files."""
        return self.folder or (str(Path(self.files[0]).parent) if self.files else "DICOM series")


class SeriesChoiceError(InputError):
    """A folder holds several series (or none that matches): the message lists them, and
    ``series`` lets a front end say how to choose in its own words."""

    def __init__(self, what: str, problem: str, series: Sequence[DicomSeries]):
        super().__init__(what, problem)
        self.series = list(series)


def read_dicom_header(path: str, tags: list[str] | None = None) -> pydicom.Dataset | None:
    """The file's header, or None when it is not DICOM. Files without the DICOM preamble (old
    ACR-NEMA style, which GDCM reads too) count when they hold an SOP class and an image."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except pydicom.errors.InvalidDicomError:
        pass
    except Exception:  # truncated or corrupt: not a file anyone can read
        return None
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags, force=True)
        return header if "SOPClassUID" in header and "Rows" in header else None
    except Exception:
        return None


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """A file ending in .dcm, or a DICOM Part 10 file by its preamble's 'DICM' marker, read from
    132 bytes without parsing: PACS and CD exports name files without an ending (IM000001,
    1.3.12.2...), and a tree of folders is looked through file by file."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicomdir(header: pydicom.Dataset) -> bool:
    meta = getattr(header, "file_meta", None)
    return str(getattr(meta, "MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS or \
        "DirectoryRecordSequence" in header


def is_image(header: pydicom.Dataset) -> bool:
    """An object with pixels to read as a volume (not a SEG, RTSTRUCT, report, DICOMDIR)."""
    return ("Rows" in header and "Columns" in header and not is_dicomdir(header)
            and str(getattr(header, "SOPClassUID", "")) != SEGMENTATION_SOP_CLASS
            and str(getattr(header, "Modality", "")).upper() not in NOT_IMAGE_MODALITIES)


def non_image_object(path: str | os.PathLike[str]) -> str | None:
    """What a DICOM object that holds no image is (an RT structure set, plan or dose
    summary, a structured report, a segmentation, a waveform: "RT Structure Set Storage
    (RTSTRUCT)"), read from its header; None for an image or a file that is not DICOM."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # not DICOM, or damaged: the reader says what it can
        return None
    uid = getattr(header, "SOPClassUID", None)
    if uid is None or is_image(header):
        return None
    name = getattr(uid, "name", "") or str(uid)
    modality = str(getattr(header, "Modality", "") or "")
    return f"{name} ({modality})" if modality and modality not in name else name


def _walk(folder: Path, depth: int) -> list[Path]:
    """The files down to ``depth`` folder levels below ``folder``; refused past
    :data:`MAX_FILES` (a home folder given by mistake, a link to a whole disk) before any
    header is read."""
    files = []
    for current, _, names in walk(folder, depth):
        files += [current / n for n in names if n.upper() != "DICOMDIR"]  # an index, no image
        if len(files) > MAX_FILES:
            raise InputError(str(folder), f"holds more than {MAX_FILES:,} files within {depth} "
                             "folder levels: give the study's or the series' own folder")
    return files


def _volume_files_hint(folder: Path) -> str:
    """Where a folder holds volume files but no DICOM series: which to give instead (a folder
    is read as a DICOM series; a NIfTI or NRRD file is given by its own path)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and is_volume_file(p))
    if not names:
        return ""
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"; it holds volume files ({shown}): give the file itself"


def _has_deeper_folders(folder: Path, depth: int) -> bool:
    """Whether ``folder`` has folders more than ``depth`` levels below it (what a search to
    that depth did not look into)."""
    return any(len(current.relative_to(folder).parts) > depth
               for current, _, _ in walk(folder, depth + 1))


def dicomdir_files(folder: Path) -> list[Path]:
    """The files the DICOMDIR in ``folder`` lists (a CD/DVD or archive export), wherever they
    lie below it; [] without a readable DICOMDIR. A reference that is not a path of plain
    names below the folder (PS3.10 8.3 allows only letters, digits and '_'; a '..' or an
    absolute part would reach outside it), or that leads through a link a server's confinement
    does not allow (:func:`oncoseg.io.folders.links_within`), is left out."""
    path = folder / "DICOMDIR"
    if not path.is_file():
        return []
    try:
        records = pydicom.dcmread(str(path), force=True).get("DirectoryRecordSequence", [])
    except Exception:
        return []
    files = []
    for record in records:
        reference = record.get("ReferencedFileID")
        if reference:
            parts = [str(p) for p in ([reference] if isinstance(reference, str)
                                      else list(reference))]
            if all(_plain_name(part) for part in parts) and may_follow(folder.joinpath(*parts)):
                files.append(folder.joinpath(*parts))
    return files


def _plain_name(part: str) -> bool:
    return bool(part.strip()) and part not in (".", "..") and not any(
        c in part for c in "/\\:")


def _slice_order(headers: list[tuple[str, pydicom.Dataset]]) -> list[str]:
    """Files along the first file's slice normal where every header has a position, else by
    instance number, then name."""
    def key(item: tuple[str, pydicom.Dataset]) -> tuple[float, int, str]:
        path, header = item
        position = getattr(header, "ImagePositionPatient", None)
        distance = float(np.dot(normal, np.asarray(position, float))) if normal is not None \
            and position is not None and len(position) == 3 else 0.0
        number = getattr(header, "InstanceNumber", None)
        return distance, int(number) if str(number or "").strip().lstrip("-").isdigit() else 0, \
            path
    orientation = getattr(headers[0][1], "ImageOrientationPatient", None)
    normal = None
    if orientation is not None and len(orientation) == 6:
        values = np.asarray(orientation, float)
        normal = np.cross(values[:3], values[3:])
    return [path for path, _ in sorted(headers, key=key)]


def _common_folder(files: Sequence[str]) -> str:
    return os.path.commonpath([str(Path(f).parent) for f in files])


def _series_from_headers(uid: str, headers: list[tuple[str, pydicom.Dataset]], part: str = "",
                         frames: Sequence[int] = ()) -> DicomSeries:
    first = headers[0][1]
    files = tuple(_slice_order(headers))
    size = 0
    for path in files:
        with contextlib.suppress(OSError):
            size += os.path.getsize(path)
    return DicomSeries(uid, files, str(getattr(first, "SeriesDescription", "") or "").strip(),
                       str(getattr(first, "Modality", "") or ""),
                       str(getattr(first, "SeriesNumber", "") or ""), size,
                       _common_folder(files), part, tuple(frames))


def _location_key(position: Sequence[float], orientation: Sequence[float]) -> tuple:
    return tuple(round(v / SAME_POSITION_MM) for v in position) + \
        tuple(round(v, 4) for v in orientation)


def _position_key(header: pydicom.Dataset) -> tuple | None:
    """Where a single-frame image lies, to :data:`SAME_POSITION_MM`; None for a multi-frame
    image or one without a position."""
    position = getattr(header, "ImagePositionPatient", None)
    orientation = getattr(header, "ImageOrientationPatient", None)
    if int(getattr(header, "NumberOfFrames", 1) or 1) > 1 or position is None \
            or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    try:
        values = [float(v) for v in (*position, *orientation)]
    except (TypeError, ValueError):
        return None
    return _location_key(values[:3], values[3:])


def _text(value: object) -> str:
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value if value is not None else "").strip()


def _tag_text(header: pydicom.Dataset, keyword: str) -> str:
    return _text(getattr(header, keyword, ""))


def acquisitions(headers: list[tuple[str, pydicom.Dataset]]
                 ) -> list[tuple[str, list[tuple[str, pydicom.Dataset]]]] | None:
    """A series' single-frame images split into its acquisitions, as (what tells them apart,
    their headers), where images share slice positions and the first of
    :data:`ACQUISITION_TAGS` that differs among them splits them into stacks of two or more
    images at distinct positions; None otherwise (one stack, or nothing splits it cleanly: the
    reader then skips or refuses what shares a position)."""
    keys = [_position_key(h) for _, h in headers]
    if any(k is None for k in keys) or len(set(keys)) == len(keys):
        return None
    for tag in ACQUISITION_TAGS:
        groups: dict[str, list[int]] = {}
        for index, (_, header) in enumerate(headers):
            groups.setdefault(_tag_text(header, tag), []).append(index)
        if _split(groups, keys):
            return [(f"{tag} {value}" if value else f"no {tag}",
                     [headers[i] for i in members]) for value, members in groups.items()]
    return None


def _split(groups: dict[str, list[int]], keys: Sequence[tuple]) -> bool:
    """Whether ``groups`` (indices by a tag's value) are several stacks of two or more images
    at distinct positions (``keys``)."""
    return len(groups) > 1 and all(
        len(members) >= 2 and len({keys[i] for i in members}) == len(members)
        for members in groups.values())


def frame_acquisitions(path: str, header: pydicom.Dataset
                       ) -> list[tuple[str, tuple[int, ...]]] | None:
    """An enhanced multi-frame image's frames split into its acquisitions, as (what tells them
    apart, their 0-based frame numbers), where frames share positions and the first of
    :data:`FRAME_ACQUISITION_TAGS` that differs among them splits them into stacks (as
    :func:`acquisitions` splits single-frame images); None otherwise. ``header``: the file's
    whole header (its functional groups)."""
    planes = slice_planes(path, header)
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if not planes or not per_frame or len(planes) != len(per_frame):
        return None
    keys = [_location_key(p.position, (*p.row, *p.column)) for p in planes]
    if len(set(keys)) == len(keys):
        return None
    shared_items = header.get("SharedFunctionalGroupsSequence")
    shared = shared_items[0] if shared_items else None
    for sequence, keyword in FRAME_ACQUISITION_TAGS:
        groups: dict[str, list[int]] = {}
        for index, frame in enumerate(per_frame):
            value = _text(functional_value(frame, shared, sequence, keyword))
            groups.setdefault(value, []).append(index)
        if _split(groups, keys):
            return [(f"{keyword} {value}" if value else f"no {keyword}", tuple(members))
                    for value, members in groups.items()]
    return None


def find_dicom_series(folder: str | os.PathLike[str], depth: int = MAX_DEPTH,
                      split: bool = True) -> list[DicomSeries]:
    """Every DICOM image series in ``folder`` and its sub-folders down to ``depth`` levels
    (0: the folder's own files), grouped by SeriesInstanceUID. Files without one are grouped by
    folder, series number, description and modality (anonymised archives blank UIDs). With
    ``split``, a series holding several acquisitions at the same slice positions is listed as
    one series per acquisition (:func:`acquisitions`); a diffusion series, whose volumes
    share positions by design, is read whole (``split=False``)."""
    groups: dict[tuple[str, ...], list[tuple[str, pydicom.Dataset]]] = {}
    paths = _walk(Path(folder), depth)
    seen = set(paths)
    paths += [f for f in dicomdir_files(Path(folder)) if f not in seen and f.is_file()]
    for path in paths:
        header = read_dicom_header(str(path), _LISTING_TAGS)
        if header is None or not is_image(header):
            continue
        uid = str(getattr(header, "SeriesInstanceUID", "") or "").strip()
        key = (uid,) if uid else ("", str(path.parent), str(getattr(header, "SeriesNumber", "")),
                                  str(getattr(header, "SeriesDescription", "")),
                                  str(getattr(header, "Modality", "")))
        groups.setdefault(key, []).append((str(path), header))
    series = []
    for key, headers in groups.items():
        parts = acquisitions(headers) if split else None
        framed = _frames_of_one_file(headers) if split and parts is None else None
        if framed:
            series += [_series_from_headers(key[0], headers, part, frames)
                       for part, frames in framed]
            continue
        series += [_series_from_headers(key[0], members, part)
                   for part, members in parts or [("", headers)]]
    return sorted(series, key=lambda s: (s.folder, _as_number(s.number), s.description, s.uid,
                                         s.part))


def _frames_of_one_file(headers: list[tuple[str, pydicom.Dataset]]
                        ) -> list[tuple[str, tuple[int, ...]]] | None:
    """:func:`frame_acquisitions` of a series that is one multi-frame file (its whole header
    read only then)."""
    if len(headers) != 1 or int(getattr(headers[0][1], "NumberOfFrames", 1) or 1) < 4:
        return None
    path = headers[0][0]
    header = read_dicom_header(path)
    return frame_acquisitions(path, header) if header is not None else None


def _as_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM image series directly in ``folder`` (not its sub-folders)."""
    return find_dicom_series(folder, depth=0)


def dicom_series_from_files(files: Sequence[str | os.PathLike[str]]) -> DicomSeries:
    """One series from its files wherever they lie (Slicer's DICOM database keeps them in
    several folders), in slice order along the slice normal."""
    if not files:
        raise InputError("DICOM files", "none were given")
    headers = []
    for f in files:
        header = read_dicom_header(str(f), _LISTING_TAGS)
        if header is None:
            raise InputError(str(f), "is not a readable DICOM file")
        headers.append((str(f), header))
    uids = {str(getattr(h, "SeriesInstanceUID", "") or "") for _, h in headers}
    if len(uids) != 1:
        raise InputError("DICOM files", f"belong to {len(uids)} series, not one")
    return _series_from_headers(uids.pop(), headers)


def series_table(series: Sequence[DicomSeries], root: str | os.PathLike[str] | None = None
                 ) -> str:
    """The series as an aligned table: UID, number, modality, files, size, description,
    folder (relative to ``root``)."""
    rows = [("series UID", "no.", "modality", "files", "size", "description", "folder")]
    for s in series:
        folder = s.folder
        if root is not None and folder:
            with contextlib.suppress(ValueError):  # another drive (Windows)
                folder = os.path.relpath(folder, root)
        rows.append((s.uid or "(none)", s.number or "-", s.modality or "?", str(len(s.files)),
                     _size(s.size_bytes), f"'{s.label}'" if s.label else "-", folder or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(row[i].ljust(widths[i]) for i in range(len(row))).rstrip()
                     for row in rows)


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"


def matches(series: DicomSeries, selector: str) -> bool:
    """A selector names a series by UID, by series number, or by a shell pattern on its
    description (case-insensitive: ``'*t2*'``), the acquisition in parentheses included where a
    series holds several (``'*(ImageType*\\W\\*'``)."""
    selector = selector.strip()
    return selector == series.uid or (selector.isdigit() and selector == series.number) or \
        selector.lower() == series.label.lower() or \
        fnmatch.fnmatchcase(series.label.lower(), selector.lower())  # '[ax]' is a pattern


def choose_dicom_series(folder: str | os.PathLike[str], series: str | None = None,
                        split: bool = True) -> DicomSeries:
    """The series to read from ``folder``: the one ``series`` names (UID, series number or
    description pattern; see :func:`matches`), or else the only one. Series directly in the
    folder come before those in its sub-folders; several candidates are an error that lists
    them all, so the caller can say which."""
    folder = Path(folder)
    if folder.is_file() and folder.name.upper() == "DICOMDIR":
        folder = folder.parent  # the DICOMDIR's tree: its series lie in the sub-folders
    if not folder.is_dir():
        raise InputError(str(folder), "is not a folder of DICOM files")
    found = find_dicom_series(folder, split=split)
    if not found:
        listed = dicomdir_files(folder)
        dicomdir = f" (its DICOMDIR lists {len(listed)} files, "\
            f"{sum(f.is_file() for f in listed)} of them present, none an image with pixels)" \
            if listed else ""
        deeper = "" if dicomdir or not _has_deeper_folders(folder, MAX_DEPTH) else \
            (f" within {MAX_DEPTH} folder levels; it has deeper folders: give the series "
             "folder, or one nearer to it")
        raise InputError(str(folder), f"contains no readable DICOM image series{dicomdir}"
                         f"{deeper}{_volume_files_hint(folder)}")
    if series is None:
        direct = [s for s in found if Path(s.folder) == folder]
        candidates = direct or found
        if len(candidates) == 1:
            return candidates[0]
        where = "" if direct else f" in its sub-folders (up to {MAX_DEPTH} levels)"
        how = "its series UID, number or a description pattern" \
            if len({s.uid for s in candidates}) == len(candidates) else \
            "its series UID, number or a description pattern (one that names the acquisition " \
            "in parentheses where a series holds several)"
        raise SeriesChoiceError(str(folder), f"contains {len(candidates)} DICOM series"
                                f"{where}; choose one by {how}:\n"
                                f"{series_table(candidates, folder)}", candidates)
    chosen = [s for s in found if s.uid == series.strip()] or \
        [s for s in found if matches(s, series)]
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise SeriesChoiceError(str(folder), f"has no DICOM image series whose UID, number or "
                                f"description matches '{series}'; it holds:\n"
                                f"{series_table(found, folder)}", found)
    how = "a description pattern naming its acquisition (in parentheses)" \
        if len({s.uid for s in chosen}) < len(chosen) else "its series UID"
    raise SeriesChoiceError(str(folder), f"has {len(chosen)} DICOM image series matching "
                            f"'{series}'; choose one by {how}:\n"
                            f"{series_table(chosen, folder)}", chosen)


# ---------------------------------------------------------------------------------------------
# reading


def itk_error_message(error: Exception) -> str:
    """The line of an ITK/GDCM exception that says what went wrong, in words for a user."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK's messages start with a file:line location; the description is the last line.
    text = lines[-1] if lines else type(error).__name__
    text = text.removeprefix("sitk::ERROR:").strip()
    if text.startswith("Unable to determine ImageIO reader"):
        return UNDECODABLE
    if "orthonormal direction cosines" in text:  # ITK: a sheared NIfTI sform, no qform
        return SHEARED
    return text


# what a grid whose axes are not at right angles is told (ITK refuses a sheared NIfTI sform;
# it reads a sheared NRRD or MetaImage and keeps the shear in its direction matrix)
SHEARED = ("its voxel axes are not at right angles or not scaled like its spacing (a sheared "
           "placement: a NIfTI sform without a qform, NRRD space directions at other angles): "
           "OncoSeg, like ITK's NIfTI reader and DICOM, places only rotated, orthogonal grids; "
           "resample it onto one first")


class _QuietITK:
    """ITK prints its own 'Non uniform sampling' warnings to stderr; the notes say it better."""

    def __enter__(self) -> None:
        self.before = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)

    def __exit__(self, *exc: object) -> None:
        sitk.ProcessObject.SetGlobalWarningDisplay(self.before)


def _read_files(files: Sequence[str]) -> sitk.Image:
    if len(files) == 1:
        image = sitk.ReadImage(files[0])
        return sitk.JoinSeries([image]) if image.GetDimension() == 2 else image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))  # stacked in this order, whatever GDCM would sort
    return reader.Execute()


def _frames(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    return array if image.GetDimension() == 3 else array[None]


def same_rescale(planes: Sequence[SlicePlane]) -> bool:
    """Whether every plane maps stored values to the modality's alike. GDCM applies one slope
    and intercept to all it reads at once: a series read whole (ITK's series reader takes the
    first file's pixel type, so a later file's slope of 0.001 gives zeros and one of 100
    overflows 16 bits) or an enhanced image whose frames carry their own (Philips writes
    diffusion and other multi-frame MR that way)."""
    return len({p.rescale for p in planes}) <= 1


def _stored_frames(path: str) -> np.ndarray:
    """The stored values of every frame of a multi-frame image, before any rescale (pydicom
    decodes native, RLE and, through Pillow, JPEG baseline and JPEG 2000 pixel data)."""
    try:
        array = pydicom.dcmread(path).pixel_array
    except Exception as error:
        raise InputError(path, "has frames with different rescale slopes or intercepts, "
                         "which GDCM would read as one, and its pixel data could not be "
                         f"decoded frame by frame ({type(error).__name__}: {error})") from None
    return array if array.ndim > 2 and array.shape[0] > 1 else array[None]


def decoded_frames(path: str, single_frame: bool = False) -> np.ndarray:
    """(frames, rows, columns[, components]) of one file in the modality's values, each frame
    rescaled by its own slope and intercept. ``single_frame``: the caller knows the file holds
    one frame, whose one rescale GDCM applies (its header is not read again). GDCM's
    RuntimeError passes through."""
    if single_frame:
        return _frames(sitk.ReadImage(path))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    planes = slice_planes(path, header) if int(header.get("NumberOfFrames", 1) or 1) > 1 \
        else None
    if not planes or same_rescale(planes):
        return _frames(sitk.ReadImage(path))
    stored = _stored_frames(path)
    values = np.zeros(stored.shape, np.float32)
    for plane in planes:
        slope, intercept = plane.rescale
        values[plane.frame] = stored[plane.frame] * np.float32(slope) + np.float32(intercept)
    return values


def _pixels(planes: Sequence[SlicePlane]) -> np.ndarray:
    """(n, rows, columns[, components]) for the planes, in their order, in the modality's
    values (each plane's own rescale applied; float32 where they differ)."""
    uniform = same_rescale(planes)
    if uniform and all(p.frame is None for p in planes):
        return _frames(_read_files([p.file for p in planes]))
    stacks: dict[str, np.ndarray] = {}
    out = []
    for plane in planes:
        if plane.file not in stacks:
            frames = decoded_frames(plane.file, single_frame=plane.frame is None)
            stacks[plane.file] = frames if uniform else frames.astype(np.float32, copy=False)
        out.append(stacks[plane.file][plane.frame or 0])
    return np.stack(out)


def _undecodable(planes: list[SlicePlane]) -> dict[str, str]:
    """The files among the planes' that GDCM cannot decode, with why."""
    bad: dict[str, str] = {}
    for path in dict.fromkeys(p.file for p in planes):
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(path)
            reader.Execute()
        except RuntimeError as error:
            bad[path] = itk_error_message(error)
    return bad


def _without_duplicates(planes: list[SlicePlane], name: str, notes: list[str]
                        ) -> list[SlicePlane]:
    """One plane per position: instances repeated with identical pixels (a file copied twice,
    or sent twice by a PACS) are skipped; different pixels at one position are refused."""
    groups = same_position_groups(planes)
    if not groups:
        return planes
    distances = distances_along_normal(planes)
    skipped: set[int] = set()
    for group in groups:
        pixels = _pixels([planes[i] for i in group])
        for n, i in enumerate(group[1:], start=1):
            if not np.array_equal(pixels[n], pixels[0]):
                one_file = planes[i].file == planes[group[0]].file
                tags = [f"{keyword} ({sequence})" for sequence, keyword in
                        FRAME_ACQUISITION_TAGS] if one_file else list(ACQUISITION_TAGS)
                remedy = ("export its acquisitions as series of their own" if one_file else
                          "put each in a folder of its own")
                raise InputError(name, (
                    f"{planes[group[0]].label()} and {planes[i].label()} lie at the same "
                    f"position ({distances[i]:g} mm along the slice normal) with different "
                    "pixels: the series mixes several acquisitions (echoes, phases, "
                    "repetitions or two series sharing one UID) that none of "
                    f"{', '.join(tags)} tells apart; {remedy}"))
        skipped.update(group[1:])
    shown = ", ".join(f"{distances[g[0]]:g}" for g in groups[:6])
    notes.append(f"{len(skipped)} duplicated instance(s) with the same pixels at {shown} mm "
                 "along the slice normal were skipped")
    return [p for i, p in enumerate(planes) if i not in skipped]


@dataclass
class SeriesVolume:
    """A series read as a volume, with what the user should know about how."""

    image: sitk.Image
    notes: list[str]
    layout: StackLayout | None  # None when the headers hold no slice geometry


def _full_headers(series: DicomSeries, cut_short: set[str] | None = None
                  ) -> list[tuple[str, pydicom.Dataset]]:
    """Every file's header; the files whose pixel data is cut short go into ``cut_short``
    (when given), found while the header is read."""
    headers = []
    for path in series.files:
        try:
            with open(path, "rb") as fp:
                header = pydicom.dcmread(fp, stop_before_pixels=True)
                if cut_short is not None and _pixel_data_cut_short(fp, header):
                    cut_short.add(path)
        except Exception as error:
            raise InputError(path, f"is not a readable DICOM file ({error})") from None
        headers.append((path, header))
    return headers


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}


def _pixel_data_cut_short(fp: BinaryIO, header: pydicom.Dataset) -> bool:
    """Whether native (not encapsulated) pixel data claims more bytes than the file holds;
    ``fp`` stands where ``stop_before_pixels`` left it, at the Pixel Data element.

    GDCM refuses such a file in SimpleITK 2.5.7 but reads it in 2.5.2, the version Slicer 5.10
    ships, filling in what is missing: checked here, every release leaves the file out alike.
    Encapsulated pixel data (undefined length) is left to GDCM, which fails to decode it."""
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8 or head[:4] != _PIXEL_DATA_TAG:
        return False
    implicit = header.original_encoding[0] if PYDICOM_3 else header.is_implicit_VR
    if implicit:
        length, offset = int.from_bytes(head[4:8], "little"), 8
    elif head[4:6] in _LONG_LENGTH_VRS:
        length, offset = int.from_bytes(head[8:12], "little"), 12
    else:
        length, offset = int.from_bytes(head[6:8], "little"), 8
    if length == 0xFFFFFFFF:
        return False
    return start + offset + length > os.fstat(fp.fileno()).st_size


def _placed(headers: list[tuple[str, pydicom.Dataset]], frames: Sequence[int] = ()
            ) -> tuple[list[SlicePlane], list[str]]:
    """The slice planes of the files that say where they lie (of a multi-frame file, only
    ``frames`` where given: one of its acquisitions), sorted along the normal, and the files
    that do not (no ImagePositionPatient, ImageOrientationPatient or PixelSpacing: a screen
    capture or derived image filed in the series, a damaged header)."""
    planes: list[SlicePlane] = []
    unplaced = []
    chosen = set(frames)
    for path, header in headers:
        found = slice_planes(path, header)
        if found and chosen:
            found = [p for p in found if p.frame in chosen]
        if found:
            planes += found
        else:
            unplaced.append(path)
    return (sort_planes(planes) if planes else []), unplaced


def _too_short_note(series: DicomSeries) -> list[str]:
    """Files beside the series' own, named as DICOM files are (``.dcm`` or no ending, as PACS
    exports name them), too short to be DICOM (under the 132 bytes of preamble and marker):
    what an interrupted copy leaves, often where a slice is missing."""
    folder = Path(series.folder) if series.folder else None
    if folder is None or not folder.is_dir():
        return []
    short = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in ("", ".dcm"):
            continue
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size < 132:
                short.append(f"{path.name}, {path.stat().st_size} bytes")
    if not short:
        return []
    more = f" and {len(short) - 1} more" if len(short) > 1 else ""
    return [f"{len(short)} file(s) in the series' folder are too short to be DICOM "
            f"({short[0]}{more}): an interrupted copy? A missing slice may be one of them"]


def _unplaced_note(unplaced: list[str]) -> list[str]:
    if not unplaced:
        return []
    more = f" and {len(unplaced) - 1} more" if len(unplaced) > 1 else ""
    return [f"{len(unplaced)} file(s) do not say where they lie (no ImagePositionPatient, "
            f"ImageOrientationPatient or PixelSpacing: {Path(unplaced[0]).name}{more}) and were "
            "left out"]


def series_planes(series: DicomSeries) -> list[SlicePlane] | None:
    """Every slice plane of the series' files that say where they lie (frames of multi-frame
    files included), sorted along the normal, as reading takes them; None when none does."""
    return _placed(_full_headers(series), series.frames)[0] or None


REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                  "SOPClassUID", "SOPInstanceUID")


def missing_reference_uids(headers: Sequence[tuple[str, pydicom.Dataset]]) -> list[str]:
    """What keeps a DICOM SEG or RTSTRUCT from referencing these images: each UID attribute
    that is absent, empty or (instance UIDs) repeated, with how many files it concerns."""
    problems = []
    for keyword in REFERENCE_UIDS:
        values = [str(getattr(h, keyword, "") or "").strip() for _, h in headers]
        empty = sum(not v for v in values)
        if empty:
            problems.append(f"{keyword} (absent or empty in {empty} of {len(values)} files)")
        elif keyword == "SOPInstanceUID" and len(set(values)) < len(values):
            problems.append(f"SOPInstanceUID (the same UID in several files: "
                            f"{len(values) - len(set(values))} repeats)")
        elif keyword != "SOPInstanceUID" and keyword != "SOPClassUID" and len(set(values)) > 1:
            problems.append(f"{keyword} ({len(set(values))} different values)")
    return problems


SERIES_IDENTITY = {"series_uid": "SeriesInstanceUID", "study_uid": "StudyInstanceUID",
                   "frame_of_reference_uid": "FrameOfReferenceUID", "patient_id": "PatientID"}


def series_identity(series: DicomSeries) -> dict[str, str]:
    """Whose images these are and in which coordinates: the series, study, frame of reference
    and patient of its first file (what ``result.json`` records of a DICOM input, and what an
    export's reference is checked against)."""
    header = read_dicom_header(series.files[0], list(SERIES_IDENTITY.values())) \
        if series.files else None
    return {key: str(getattr(header, keyword, "") or "").strip()
            for key, keyword in SERIES_IDENTITY.items()} if header is not None else {}


def check_referenceable(headers: Sequence[tuple[str, pydicom.Dataset]], name: str) -> None:
    """Refuse (naming the attributes) images without usable UIDs: anonymisers that blank them
    leave a DICOM SEG or RTSTRUCT nothing to reference. Volume formats (NIfTI, NRRD) need no
    UIDs and still work."""
    missing = missing_reference_uids(headers)
    if missing:
        raise InputError(name, "its images cannot be referenced by a DICOM SEG or RTSTRUCT: "
                         f"{'; '.join(missing)}. Export NIfTI or NRRD instead, or use the "
                         "series as the archive holds it (with its UIDs)")


@dataclass(frozen=True)
class ReferencedImage:
    """One image a DICOM SEG or RTSTRUCT references: where it lies, and its file's header (an
    enhanced image's for each of its frames)."""

    plane: SlicePlane
    header: pydicom.Dataset

    def reference(self) -> pydicom.Dataset:
        """The item naming it: SOP Class and Instance UIDs, and the frame of a multi-frame
        image."""
        return sop_reference(self.header, self.plane.frame)


# What an export references: an image file (each image it holds), or the plane of one image
ImageOfSeries = str | os.PathLike[str] | SlicePlane


def referenced_images(images: Sequence[ImageOfSeries], name: str) -> list[ReferencedImage]:
    """The images an export references, in the order given: a file stands for every image it
    holds (each frame of an enhanced multi-frame image), a plane for itself. Refused without
    usable UIDs (:func:`check_referenceable`) or where a file does not say where its images
    lie. Each file's header is read once."""
    paths = [image.file if isinstance(image, SlicePlane) else str(image) for image in images]
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in paths}
    check_referenceable(list(headers.items()), name)
    referenced = []
    for image, path in zip(images, paths, strict=True):
        planes = [image] if isinstance(image, SlicePlane) else slice_planes(path, headers[path])
        if not planes:
            raise InputError(path, "is not an image that says where it lies "
                             "(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)")
        referenced += [ReferencedImage(plane, headers[path]) for plane in planes]
    return referenced


def reference_planes(series: DicomSeries) -> list[SlicePlane]:
    """The images a DICOM SEG or RTSTRUCT references, one per slice position in slice order
    (see :func:`check_referenceable`)."""
    headers = _full_headers(series)
    check_referenceable(headers, series.name)
    return _stack_planes(headers, series, "so no frame or contour can be placed on them")


def _stack_planes(headers: list[tuple[str, pydicom.Dataset]], series: DicomSeries,
                  consequence: str) -> list[SlicePlane]:
    """The planes the reader stacks, from the headers alone: those that say where they lie,
    without a localizer, one per position, in slice order; refused (``consequence``: what
    cannot be done) when none says where it lies."""
    planes, _ = _placed(headers, series.frames)  # what does not say where it lies: left out
    if not planes:
        raise InputError(series.name, "its images do not say where they lie "
                         f"(ImagePositionPatient, ImageOrientationPatient, PixelSpacing), "
                         f"{consequence}")
    planes, _ = without_localizer(planes)  # the reader left it out too
    groups = same_position_groups(planes)
    repeated = {i for group in groups for i in group[1:]}  # the reader skipped them too
    return [p for i, p in enumerate(planes) if i not in repeated]


def series_grid(series: DicomSeries) -> StackLayout:
    """The regular grid the series is read onto (origin, spacing, direction, size), from its
    headers alone: what a data set's check compares a label file with."""
    planes = _stack_planes(_full_headers(series), series, "so they make no grid")
    return plan_stack(planes, series.name)


def _localizer_note(dropped: list[SlicePlane]) -> list[str]:
    return [f"{dropped[0].label()} has another orientation than the other images (a localizer) "
            "and was left out, as Slicer's DICOM module does"] if dropped else []


def _read_planes(planes: list[SlicePlane], name: str) -> SeriesVolume:
    planes, dropped = without_localizer(planes)
    check_one_stack(planes, name)
    notes = _localizer_note(dropped)
    planes = _without_duplicates(planes, name, notes)
    layout = plan_stack(planes, name)
    if layout.regular and same_rescale(planes) and all(p.frame is None for p in planes):
        image = _read_files([p.file for p in planes])  # the pixel type GDCM chose, as it is
    else:
        pixels = regularize(_pixels(planes), layout)
        image = sitk.GetImageFromArray(pixels, isVector=pixels.ndim == 4)
    image.SetOrigin(layout.origin)
    image.SetSpacing(layout.spacing)
    image.SetDirection(layout.direction)
    return SeriesVolume(image, notes + list(layout.notes), layout)


def _read_decodable(planes: list[SlicePlane], cut_short: set[str], name: str) -> SeriesVolume:
    """The planes read as a volume, those whose file cannot be decoded left out (a missing
    slice, with a note)."""
    bad = {p.file: UNDECODABLE for p in planes if p.file in cut_short}
    if not bad:
        try:
            return _read_planes(planes, name)
        except RuntimeError:
            pass  # a file GDCM cannot decode: find it, and read the rest without it
        bad = _undecodable(planes)
    readable = [p for p in planes if p.file not in bad]
    first = next(iter(bad), "")
    why = f"{Path(first).name}: {bad[first]}" if bad else "GDCM failed"
    if not readable:
        raise InputError(name, f"none of its {len(planes)} DICOM images could be decoded "
                         f"({why})")
    volume = _read_planes(readable, name)
    volume.notes.insert(0, f"{len(bad)} file(s) could not be decoded and were left out ({why})")
    return volume


def _unplaced_series(series: DicomSeries) -> SeriesVolume:
    """A series none of whose files says where it lies, read as GDCM reads it (1 mm between
    pixels where PixelSpacing is missing, as 3D Slicer reads it too), the missing attributes
    named in a note and on the image (:data:`UNPLACED_KEY`), which methods refuse
    (:func:`oncoseg.validation.volume_problems`)."""
    header = read_dicom_header(series.files[0])
    missing = missing_placement(header) if header is not None else \
        [keyword for _, keyword in PLACEMENT_ATTRIBUTES]
    names = ", ".join(missing)
    try:
        image = _read_files(series.files)
    except RuntimeError as error:  # e.g. ITK refusing a zero spacing
        raise InputError(series.name, f"none of its files has a usable {names}, and GDCM cannot "
                         f"read them without ({itk_error_message(error)})") from None
    image.SetMetaData(UNPLACED_KEY, f"comes from DICOM files without a usable {names}")
    return SeriesVolume(image, [f"none of the files has a usable {names}: where the voxels lie "
                                "and how large they are are GDCM's guesses (3D Slicer reads it the "
                                "same way), so no method runs on it"], None)


def read_series(series: DicomSeries) -> SeriesVolume:
    """The series as a volume on a regular grid (see the module's docstring)."""
    name = series.name
    with _QuietITK():
        try:
            cut_short: set[str] = set()
            planes, unplaced = _placed(_full_headers(series, cut_short), series.frames)
            if not planes:
                return _unplaced_series(series)
            volume = _read_decodable(planes, cut_short, name)
            volume.notes[:0] = _unplaced_note(unplaced) + _too_short_note(series)
            return volume
        except RuntimeError as error:
            raise InputError(name, "DICOM series could not be read "
                             f"({itk_error_message(error)})") from None


def read_dicom_series(folder: str | os.PathLike[str], series: str | None = None) -> sitk.Image:
    """Read one series from a folder; with several in it the caller must say which."""
    return read_series(choose_dicom_series(folder, series)).image
