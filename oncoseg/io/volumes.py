"""Volumes on disk <-> SimpleITK images: NRRD, NIfTI, MHA and DICOM series folders.

Geometry (origin, spacing, direction, in ITK's LPS convention) is read and written with the
pixels; nothing here reorients or resamples, so what comes back is exactly what the file holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.header import check_declared_size
from oncoseg.io.nifti import restore_nonfinite

VOLUME_ENDINGS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
DICOM_DESCRIPTION_TAG = "0008|103e"
DICOM_MODALITY_TAG = "0008|0060"


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder, described well enough for a user to choose it."""

    uid: str
    files: tuple[str, ...]
    description: str
    modality: str

    def summary(self) -> str:
        text = f"{self.uid} ({self.modality or '?'}, {len(self.files)} files"
        return text + (f", '{self.description}')" if self.description else ")")


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(VOLUME_ENDINGS)


def volume_stem(path: str | os.PathLike[str]) -> str | None:
    """The file name without its volume ending ('t2w.nii.gz' -> 't2w'); None for a file that
    is not a volume."""
    name = Path(path).name
    for ending in sorted(VOLUME_ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return None


def _read_tag(file_name: str, tag: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM image series directly in ``folder``, files sorted by slice position."""
    folder = str(folder)
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder) or ():
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
        if files:
            series.append(DicomSeries(uid, files, _read_tag(files[0], DICOM_DESCRIPTION_TAG),
                                      _read_tag(files[0], DICOM_MODALITY_TAG)))
    return series


def dicom_series_from_files(files: Sequence[str | os.PathLike[str]]) -> DicomSeries:
    """One series from its files wherever they lie (Slicer's DICOM database keeps them in
    several folders), in slice order along the slice normal, as GDCM orders a folder."""
    if not files:
        raise InputError("DICOM files", "none were given")
    headers = []
    for f in files:
        try:
            headers.append((str(f), pydicom.dcmread(str(f), stop_before_pixels=True)))
        except (pydicom.errors.InvalidDicomError, OSError) as error:
            raise InputError(str(f), f"is not a readable DICOM file ({error})") from None
    uids = {h.SeriesInstanceUID for _, h in headers}
    if len(uids) != 1:
        raise InputError("DICOM files", f"belong to {len(uids)} series, not one")
    first = headers[0][1]
    row, column = np.asarray(first.ImageOrientationPatient, float).reshape(2, 3)
    normal = np.cross(row, column)
    ordered = sorted(headers, key=lambda h: float(np.dot(normal, np.asarray(
        h[1].ImagePositionPatient, float))))
    return DicomSeries(uids.pop(), tuple(f for f, _ in ordered),
                       str(getattr(first, "SeriesDescription", "")),
                       str(getattr(first, "Modality", "")))


def choose_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None
                        ) -> DicomSeries:
    """The one series in ``folder`` (or the one with ``series_uid``); several without a UID
    is an error that lists them, so the caller can say which."""
    found = list_dicom_series(folder)
    if not found:
        raise InputError(str(folder), "contains no readable DICOM image series")
    if series_uid is not None:
        found = [s for s in found if s.uid == series_uid]
        if not found:
            raise InputError(str(folder), f"has no DICOM series with UID {series_uid}")
    if len(found) > 1:
        listing = "; ".join(s.summary() for s in found)
        raise InputError(str(folder), f"contains {len(found)} DICOM series, choose one by its "
                         f"series UID: {listing}")
    return found[0]


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> sitk.Image:
    """Read one series; with several in the folder the caller must say which."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(choose_dicom_series(folder, series_uid).files))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(str(folder), f"DICOM series could not be read ({_first_line(error)})") \
            from None


def read_image(path: str | os.PathLike[str], series_uid: str | None = None) -> sitk.Image:
    """Read a volume file, a DICOM series folder, or a UW-Madison (Kaggle) scans folder of
    PNG slices."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file or folder")
    check_declared_size(p, series_uid)  # before any pixel is read: refuse what cannot fit
    if p.is_dir():
        from oncoseg.datasets import kaggle

        if kaggle.slice_files(p):
            return kaggle.read_scan(p, p.parent.name)
        return read_dicom_series(p, series_uid)
    try:
        return restore_nonfinite(sitk.ReadImage(str(p)), p)  # NIfTI NaN
    except RuntimeError as error:
        raise InputError(str(path), f"is not a readable image ({_first_line(error)})") from None


def write_image(
    image: sitk.Image, path: str | os.PathLike[str], overwrite: bool = False,
    compress: bool = True,
) -> Path:
    """Write atomically; the ending picks the format (.nrrd, .nii.gz, .mha, ...)."""
    with atomic_path(path, overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return Path(path)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK's messages start with a file:line location; the description is the last line.
    return lines[-1] if lines else type(error).__name__
