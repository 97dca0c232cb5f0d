"""Volumes 3D Slicer's DICOM module loaded wrong without a word: with one rescale for frames
that carry their own, or at 1 mm from files that do not say how large their pixels are.

An enhanced multi-frame image may give each frame its own Rescale Slope and Intercept (its
Pixel Value Transformation; Philips writes MR that way). Slicer's DICOM module reads it through
ITK's GDCM image IO (``DICOMScalarVolumePlugin.py``: reader approach "GDCM with DCMTK fallback"
by default, ``vtkITKArchetypeImageSeriesScalarReader`` with ``SetDICOMImageIOApproachToGDCM``;
v5.10.0 and v5.12.3), which applies one slope and intercept to every frame (measured through
SimpleITK, the same image IO), so such a volume's values are wrong in every frame but one,
without a word (the engine's own reader: docs/RESULTS.md, "Each slice's own rescale").
Before a run, the file a volume came from is looked up in Slicer's DICOM database; where its
frames' rescales differ, the run reads the frames with their own, on the volume's grid, and
says so.

A series whose files carry no PixelSpacing (or no ImagePositionPatient and
ImageOrientationPatient) is loaded by the same GDCM reading at 1 mm between pixels, its
geometry guessed; the engine's reader names the missing attributes and methods refuse such a
series (:func:`oncoseg.validation.volume_problems`), and a run on such a node is refused the
same way (:func:`refuse_unplaced`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import same_grid
from oncoseg.io.dicom_geometry import missing_placement
from oncoseg.io.dicom_series import read_dicom_header, read_series, same_rescale, series_planes
from oncoseg.orientation import onto_grid, to_canonical
from OncoSegCommonLib.export import (
    INSTANCE_UIDS_ATTRIBUTE,
    SERIES_FOLDER_ATTRIBUTE,
    series_of_volume,
)


def frames_with_own_rescale(what: str, node: Any, image: sitk.Image, database: Any
                            ) -> tuple[sitk.Image, list[str]]:
    """``image`` (the node's voxels) with each frame rescaled by its own slope and intercept
    where the node is one enhanced image whose frames carry different ones, and the note that
    says so; ``image`` unchanged and no note otherwise (not from the DICOM database, a volume
    OncoSeg read itself, frames alike). Refused where the file's frames do not make the
    node's grid: Slicer's values could then not be put right."""
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if database is None or node.GetAttribute(SERIES_FOLDER_ATTRIBUTE) or len(uids) != 1:
        return image, []  # a series of single-frame files: read with each file's own rescale
    try:
        series = series_of_volume(node, database)
    except InputError:
        return image, []  # its files left the database: nothing to read them from
    if series is None:
        return image, []
    planes = series_planes(series)
    if not planes or planes[0].frame is None or same_rescale(planes):
        return image, []
    read = read_series(series).image
    canonical = to_canonical(read)
    if not same_grid(canonical, to_canonical(image), tolerance=1e-3):
        raise InputError(what, "was loaded by 3D Slicer's DICOM reader with one rescale slope "
                         "and intercept for all its frames, which carry their own, and its "
                         "frames do not make the volume's grid, so its values cannot be put "
                         "right: read the series with `oncoseg predict --input ROLE=FOLDER`")
    values = onto_grid(canonical, image)
    slopes = sorted({p.rescale[0] for p in planes})
    shown = sitk.GetArrayViewFromImage(image).astype(np.float64)
    apart = float(np.abs(sitk.GetArrayViewFromImage(values) - shown).max())
    return values, [f"{what} was loaded by 3D Slicer's DICOM reader with one rescale slope and "
                    f"intercept for all its frames, but its file gives its frames "
                    f"{len({p.rescale for p in planes})} different ones (slopes {slopes[0]:g} "
                    f"to {slopes[-1]:g}): the run read each frame with its own, as pydicom's "
                    f"modality LUT does; the values Slicer shows differ by up to {apart:.4g}"]


def refuse_unplaced(what: str, node: Any, database: Any) -> None:
    """Refuse a volume Slicer's DICOM module loaded from files none of which says where it
    lies or how large its pixels are (GDCM's 1 mm guess), as the engine refuses the series.
    The node's files are read from the first until one is placed: one header for a usual
    series."""
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if database is None or node.GetAttribute(SERIES_FOLDER_ATTRIBUTE) or not uids:
        return
    missing: set[str] = set()
    for uid in uids:
        path = database.fileForInstance(uid)
        header = read_dicom_header(path) if path else None
        if header is None:
            return  # its files left the database: nothing to judge by
        lacking = missing_placement(header)
        if not lacking:
            return
        missing.update(lacking)
    names = ", ".join(sorted(missing))
    raise InputError(what, f"was loaded by 3D Slicer's DICOM module from files without a "
                     f"usable {names}: Slicer guessed where its voxels lie and how large they are "
                     "(1 mm between pixels where the spacing is missing), so a method would read "
                     "the anatomy at the wrong place or size")
