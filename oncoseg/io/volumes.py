"""Volumes on disk <-> SimpleITK images: NRRD, NIfTI, MHA, DICOM series folders and files.

Geometry (origin, spacing, direction, in ITK's LPS convention) is read and written with the
pixels. Volume files come back exactly as stored; a DICOM series is put on a regular grid from
its slice positions (:mod:`oncoseg.io.dicom_series`), and :func:`read_volume` returns the notes
that say when that meant resampling. :func:`read_image` is the same without the notes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.dicom_series import (
    SHEARED,
    DicomSeries,
    choose_dicom_series,
    dicom_series_from_files,
    find_dicom_series,
    is_image,
    itk_error_message,
    list_dicom_series,
    non_image_object,
    read_dicom_header,
    read_dicom_series,
    read_series,
)
from oncoseg.io.endings import VOLUME_ENDINGS, is_volume_file, volume_stem
from oncoseg.io.file_information import FileInformation
from oncoseg.io.header import check_declared_size
from oncoseg.io.mgh import information as mgh_information
from oncoseg.io.mgh import is_mgh, read_mgh, unplaced_note
from oncoseg.io.minc import information as minc_information
from oncoseg.io.minc import is_minc, minc_note, placed_as_minc_defines
from oncoseg.io.nifti import (
    check_complete,
    is_nifti,
    no_orientation_note,
    orientation_notes,
    refuse_empty_axes,
    refuse_nifti2,
    restore_nonfinite,
    unknown_widths,
    without_added_intercept,
)
from oncoseg.io.other_formats import refuse_other_format
from oncoseg.validation import UNPLACED_KEY

# DICOM names other modules import from here
__all__ = ["VOLUME_ENDINGS", "DicomSeries", "ReadResult", "choose_dicom_series",
           "dicom_series_from_files", "find_dicom_series", "input_series", "is_volume_file",
           "list_dicom_series", "placement_notes", "read_dicom_series", "read_image",
           "read_volume", "reading_notes", "volume_information", "volume_stem", "write_image"]

# NRRD spaces that name the patient's axes (ITK converts the other two to the first)
_ANATOMICAL_NRRD_SPACES = ("left-posterior-superior", "right-anterior-superior",
                           "left-anterior-superior")


@dataclass
class ReadResult:
    """A volume as read, what the user should know about how it was read (a DICOM series
    resampled onto a regular grid, duplicated slices skipped), and the DICOM series it came
    from (exports reference it)."""

    image: sitk.Image
    notes: list[str] = field(default_factory=list)
    series: DicomSeries | None = None


def read_volume(path: str | os.PathLike[str], series_uid: str | None = None) -> ReadResult:
    """Read a volume file, a DICOM file or series folder (``series_uid``: which series, by UID,
    series number or description pattern, when the folder holds several), or a UW-Madison
    (Kaggle) scans folder of PNG slices."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file or folder")
    refuse_other_format(p)
    check_declared_size(p, series_uid)  # before any pixel is read: refuse what cannot fit
    if p.is_dir() or p.name.upper() == "DICOMDIR":
        from oncoseg.io.png_slices import read_scan, slice_files

        if p.is_dir() and slice_files(p):
            return ReadResult(read_scan(p, p.parent.name))
        series = choose_dicom_series(p, series_uid)
        volume = read_series(series)
        return ReadResult(volume.image, volume.notes, series)
    if not is_volume_file(p):
        header = read_dicom_header(str(p))
        if header is not None and is_image(header):  # one DICOM file (multi-frame: a volume)
            series = dicom_series_from_files([p])
            volume = read_series(series)
            return ReadResult(volume.image, volume.notes, series)
        kind = non_image_object(p)
        if kind is not None:
            raise InputError(str(path), f"is a DICOM {kind} object, which holds no image: give "
                             "the image series (its folder or a file of it)")
    refuse_segmentation(p)
    image = read_volume_file(p)
    return ReadResult(image, placement_notes(image, p))


def refuse_segmentation(path: Path) -> None:
    """A Slicer segmentation (a NRRD whose header describes segments) is labels, not a scan:
    read as an image, a method ran on its label values (a CT of 0 to 5 HU)."""
    if not path.name.lower().endswith((".nrrd", ".nhdr")):
        return
    from oncoseg.io.segnrrd import segments_in

    try:
        segments = segments_in(path)
    except InputError:
        return  # not readable as NRRD: the reader says why
    if segments:
        names = ", ".join(s.name for s in segments[:5]) + (", ..." if len(segments) > 5 else "")
        raise InputError(str(path), f"is a Slicer segmentation ({len(segments)} segments: "
                         f"{names}), which holds no image: give the scan it was drawn on")


def read_volume_file(path: str | os.PathLike[str]) -> sitk.Image:
    """A volume file (NRRD, NIfTI, MHA, 4D included) as SimpleITK reads it, checked: an
    unreadable file named in words, a sheared grid refused, a NIfTI file cut short refused, its
    NaN voxels restored (:func:`oncoseg.io.nifti.restore_nonfinite`) and an intercept the
    standard does not apply taken off (:func:`oncoseg.io.nifti.without_added_intercept`), a
    voxel width of 0 marked for methods to refuse (:func:`oncoseg.io.nifti.unknown_widths`); a
    MINC file placed as MINC defines it (:mod:`oncoseg.io.minc`). A FreeSurfer MGH/MGZ file,
    which SimpleITK's wheels cannot read, is read by :func:`oncoseg.io.mgh.read_mgh`; formats
    OncoSeg does not read are named (:mod:`oncoseg.io.other_formats`)."""
    if is_mgh(path):
        return read_mgh(path)
    refuse_other_format(path)
    refuse_nifti2(path)
    refuse_empty_axes(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        check_complete(path)  # a NIfTI pair's voxel file missing or cut: said in its words
        message = itk_error_message(error)
        if "No such file or directory" in message:  # MetaImage's stale errno: the file is here
            message = ("its voxel data could not be read in full: the file is cut short, or "
                       "the data file its header names is missing")
        missing = re.search(r'nrrdIoStateDataFileIterNext: couldn\'t open "([^"]+)"', message)
        if missing:  # a detached NRRD header whose data file is not there
            raise InputError(str(path), f"its voxel data file {Path(missing[1]).name} (named by "
                             "its 'data file' field) is missing") from None
        if "bzip2 encoding not available" in message:
            raise InputError(str(path), "holds bzip2-compressed voxels, which ITK's NRRD reader "
                             "(so 3D Slicer) cannot read: save it with gzip or raw encoding "
                             "(pynrrd reads it)") from None
        raise InputError(str(path), f"is not a readable image ({message})") from None
    if is_minc(path):
        image = placed_as_minc_defines(image)
    refuse_sheared(image, str(path))
    image = without_added_intercept(restore_nonfinite(image, path), path)
    unknown = unknown_widths(path)
    if unknown is not None:  # methods refuse it (oncoseg.validation.volume_problems)
        image.SetMetaData(UNPLACED_KEY, unknown)
    return image


def volume_information(path: str | os.PathLike[str]
                       ) -> sitk.ImageFileReader | FileInformation:
    """A volume file's header (grid and pixel type) without its voxels, as SimpleITK's
    ``ReadImageInformation`` gives it (an MGH/MGZ file's by :mod:`oncoseg.io.mgh`); raises
    RuntimeError (SimpleITK's) or InputError where it cannot be read."""
    if is_mgh(path):
        return mgh_information(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return minc_information(reader) if is_minc(path) else reader


def refuse_sheared(image: sitk.Image, what: str) -> None:
    """Refuse a grid whose axes are not at right angles (beyond 1e-3 in their cosines: float
    and text rounding stay below): a NRRD or MetaImage file may store a shear, which ITK keeps
    in the direction matrix and every resampling, reorientation and DICOM export after it would
    carry or drop silently."""
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(dimension, dimension)
    if not np.allclose(direction.T @ direction, np.eye(dimension), atol=1e-3):
        raise InputError(what, SHEARED)


def placement_notes(source: sitk.Image | sitk.ImageFileReader, path: str | os.PathLike[str]
                    ) -> list[str]:
    """What the user should know about where a volume file (as SimpleITK read it, or its
    header) puts the patient: a NIfTI file's two placements disagreeing, or none
    (:func:`oncoseg.io.nifti.orientation_notes`); a NRRD header naming no space, which ITK and
    Slicer's scalar volume reader (``vtkMRMLVolumeArchetypeStorageNode``, through ITK) both
    take as LPS axes from origin 0, or a space that is not anatomical ('scanner-xyz',
    '3D-right-handed': ITK and so Slicer take its axes as LPS all the same); an MGH file
    without a placement; a MINC file, which Slicer shows elsewhere (:mod:`oncoseg.io.minc`)."""
    if is_nifti(path):
        return orientation_notes(source, path)
    if is_mgh(path):
        return unplaced_note(path)
    if is_minc(path):
        return [minc_note(Path(path).name)]
    if str(path).lower().endswith((".nrrd", ".nhdr")):
        if "NRRD_space" not in source.GetMetaDataKeys():
            return [no_orientation_note(Path(path).name, "its header names no 'space'")]
        space = source.GetMetaData("NRRD_space").strip()
        if space.removesuffix("-time") not in _ANATOMICAL_NRRD_SPACES:
            return [no_orientation_note(Path(path).name, f"its space is '{space}', not the "
                                        "patient's left, back and head")]
    return []


def reading_notes(volumes: Mapping[str, ReadResult]) -> list[str]:
    """Each input's reading notes, named by role, as ``predict`` prints them and ``result.json``
    keeps them (before the method's own)."""
    return [f"input {role}: {note}" for role, volume in volumes.items() for note in volume.notes]


def input_series(volumes: Mapping[str, ReadResult]) -> dict[str, dict[str, str]]:
    """Each DICOM input's series, study, frame of reference and patient (``result.json``'s
    ``input_series``: an export's reference is checked against them)."""
    from oncoseg.io.dicom_series import series_identity

    return {role: series_identity(volume.series) for role, volume in volumes.items()
            if volume.series is not None}


def read_image(path: str | os.PathLike[str], series_uid: str | None = None) -> sitk.Image:
    """:func:`read_volume`'s image, for callers that pass no notes on."""
    return read_volume(path, series_uid).image


def write_image(
    image: sitk.Image, path: str | os.PathLike[str], overwrite: bool = False,
    compress: bool = True,
) -> Path:
    """Write atomically; the ending picks the format (.nrrd, .nii.gz, .mha, ...)."""
    with atomic_path(path, overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)
