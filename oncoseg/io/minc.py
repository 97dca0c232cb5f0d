"""MINC 2 volumes, placed as MINC defines them.

MINC's world coordinates are RAS (x from the patient's left to right, y from back to front,
z from feet to head), as nibabel reads them. ITK 5.4, the ITK inside SimpleITK 2.5 and inside
3D Slicer 5.10 and 5.12, takes them as its own LPS coordinates unchanged
(``MINCImageIO::ReadImageInformation``, Modules/IO/MINC/src/itkMINCImageIO.cxx at v5.4.4 and
v5.4.7: ``o_origin = dir_cos * origin`` with MINC's cosines as they are; the same in Slicer's
ITK fork at slicer-v5.4.3-2025-01-25, read; its 5.4.4 / 5.4.6 forks, which Slicer 5.10 / 5.12
pin, were not in the snapshot read); the conversion came to ITK 6.0 only, optional and off
by default (InsightSoftwareConsortium/ITK pull request 4864, ``MINCImageIO::SetRAStoLPS``).
A MINC file read through ITK therefore lies turned by 180 degrees about the head-feet axis:
left and right, front and back exchanged (TorchIO issue 610 reports the same of SimpleITK:
"LIP became LPS"). Every task canonicalises by the direction it is given, so the networks saw
the anatomy turned round and a lateral label went to the other side.

Here the x and y of ITK's origin and direction are negated back (unless ITK says it converted,
its ``RAStoLPS`` metadata true), so a MINC file is read where MINC and nibabel place it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.io.file_information import FileInformation

MINC_ENDINGS = (".mnc", ".mnc2")


def is_minc(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(MINC_ENDINGS)


def _converted_by_itk(source: sitk.Image | sitk.ImageFileReader) -> bool:
    keys = source.GetMetaDataKeys()
    return "RAStoLPS" in keys and source.GetMetaData("RAStoLPS").strip().lower() in ("1", "true")


def turned_by_itk(path: str | os.PathLike[str], source: sitk.Image | sitk.ImageFileReader
                  ) -> bool:
    """Whether ``source``, as ITK read it from ``path``, lies turned round: a MINC file that
    ITK did not convert from RAS."""
    return is_minc(path) and not _converted_by_itk(source)


def _turned(origin: tuple[float, ...], direction: tuple[float, ...]
            ) -> tuple[list[float], list[float]]:
    """The origin and direction with their x and y negated (RAS <-> LPS)."""
    dimension = len(origin)
    flip = np.ones(dimension)
    flip[:min(2, dimension)] = -1.0
    matrix = np.asarray(direction, float).reshape(dimension, dimension)
    return (flip * np.asarray(origin, float)).tolist(), (flip[:, None] * matrix).ravel().tolist()


def placed_as_minc_defines(image: sitk.Image) -> sitk.Image:
    """``image`` as ITK read it from a MINC file, placed in MINC's RAS world (the voxels are
    not touched)."""
    if _converted_by_itk(image):
        return image
    origin, direction = _turned(image.GetOrigin(), image.GetDirection())
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def information(reader: sitk.ImageFileReader) -> sitk.ImageFileReader | FileInformation:
    """A MINC file's header (a reader that has read it), placed as its voxels will be."""
    if _converted_by_itk(reader):
        return reader
    origin, direction = _turned(reader.GetOrigin(), reader.GetDirection())
    return FileInformation.of(reader, origin, direction)


def minc_note(name: str) -> str:
    """What a reader of a MINC file should know: where it was placed, and that Slicer shows
    it elsewhere."""
    return (f"{name} is a MINC file: it was placed as MINC and nibabel place it (RAS "
            "coordinates), where ITK 5.4 and 3D Slicer 5.10 and 5.12 show it turned by 180 "
            "degrees about the head-feet axis; results overlaid on it in those lie turned too")


def slicer_turned_note(path: str | os.PathLike[str]) -> str:
    """Why a volume Slicer loaded from a MINC file cannot be segmented as it is."""
    return (f"was loaded from the MINC file {Path(path).name}, which this Slicer's reader (ITK "
            "5.4) places turned by 180 degrees about the head-feet axis, left and right and "
            "front and back exchanged: MINC's coordinates are RAS and ITK 5.4 reads them as "
            "LPS. Segmenting it would put lateral structures on the wrong side. Convert the "
            "file to NIfTI (mnc2nii, or nibabel), load that and run again")
