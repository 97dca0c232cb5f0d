"""Volumes 3D Slicer's DICOM module loaded with one rescale for frames that carry their own.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import same_grid
from oncoseg.io.dicom_series import read_series, same_rescale, series_planes
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
