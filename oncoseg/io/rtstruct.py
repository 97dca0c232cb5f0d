"""DICOM RT Structure Sets: read clinical contours as masks, write masks as contours.

Structures are closed planar contours per slice, in patient (LPS) millimetres, referencing the
image series and its frame of reference. The writer fills every module a treatment planning
system and ``dciodvfy`` expect of the RT Structure Set IOD.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sequence import Sequence as DicomSequence

from oncoseg.errors import InputError
from oncoseg.io.atomic import atomic_path
from oncoseg.io.contours import contours_to_mask, mask_to_contours
from oncoseg.io.dicom import Algorithm, code_item, derived_object, save_dicom
from oncoseg.terminology import Code

if TYPE_CHECKING:
    from oncoseg.io.dicom_series import ImageOfSeries

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class Structure:
    """One ROI: its name, colour (0-255 RGB), interpretation and contours (LPS mm)."""

    number: int
    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    interpreted_type: str = "ORGAN"
    contours: list[np.ndarray] = field(default_factory=list)


class StructureToWrite(NamedTuple):
    """A structure to contour: its name, mask (z, y, x) on the segmentation's grid, colour
    (0-255 RGB), RT ROI Interpreted Type, and, where known, a longer description (OncoSeg's
    name beside a TG-263 one) and its coded meaning (the RT ROI Identification Code)."""

    name: str
    mask: np.ndarray
    color: tuple[int, int, int]
    interpreted_type: str
    description: str = ""
    code: Code | None = None


@dataclass
class StructureSet:
    path: Path
    frame_of_reference_uid: str
    referenced_series_uid: str
    structures: list[Structure]
    patient_id: str = ""

    def structure(self, name: str) -> Structure:
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(name)

    def mask(self, name: str, image: sitk.Image) -> np.ndarray:
        """A structure as a (z, y, x) mask on ``image``'s grid."""
        mask, off_plane = contours_to_mask(self.structure(name).contours, image)
        if off_plane:
            raise InputError(str(self.path), f"structure '{name}' has {off_plane} contours "
                             "that lie on no slice of the image it references")
        return mask


def read_rtstruct(path: str | os.PathLike[str]) -> StructureSet:
    try:
        ds = pydicom.dcmread(str(path))
    except (pydicom.errors.InvalidDicomError, OSError) as error:
        raise InputError(str(path), f"is not a readable DICOM file ({error})") from None
    if getattr(ds, "Modality", "") != "RTSTRUCT":
        raise InputError(str(path), f"is a {getattr(ds, 'Modality', 'non-DICOM')} object, not "
                         "an RT structure set")
    frame_uid, series_uid = "", ""
    for frame in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
        frame_uid = frame.FrameOfReferenceUID
        for study in getattr(frame, "RTReferencedStudySequence", []):
            for series in getattr(study, "RTReferencedSeriesSequence", []):
                series_uid = series.SeriesInstanceUID
    rois = {}
    for roi in getattr(ds, "StructureSetROISequence", []):
        rois[int(roi.ROINumber)] = Structure(int(roi.ROINumber), str(roi.ROIName))
    for observation in getattr(ds, "RTROIObservationsSequence", []):
        number = int(observation.ReferencedROINumber)
        if number in rois and getattr(observation, "RTROIInterpretedType", ""):
            rois[number].interpreted_type = str(observation.RTROIInterpretedType)
    for roi_contour in getattr(ds, "ROIContourSequence", []):
        structure = rois.get(int(roi_contour.ReferencedROINumber))
        if structure is None:
            continue
        if "ROIDisplayColor" in roi_contour:
            structure.color = tuple(int(c) for c in roi_contour.ROIDisplayColor)
        for contour in getattr(roi_contour, "ContourSequence", []):
            if getattr(contour, "ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            if len(points) >= 3:
                structure.contours.append(points)
    return StructureSet(Path(path), frame_uid, series_uid, list(rois.values()),
                        str(getattr(ds, "PatientID", "")))


def write_rtstruct(
    structures: Sequence[StructureToWrite | tuple],
    image: sitk.Image,
    series_files: Sequence[ImageOfSeries],
    path: str | os.PathLike[str],
    label: str = "OncoSeg",
    overwrite: bool = False,
    reference_name: str = "the DICOM series",
    algorithm: Algorithm | None = None,
) -> Path:
    """Write structures (:class:`StructureToWrite`, or its first four fields as a tuple) as an
    RT structure set referencing the images ``series_files`` (files, each standing for every
    image it holds, or the planes of their images).

    Contours are traced on each image's own plane (IPP and orientation from its header, or
    from its frame's functional groups): the masks are sampled there, nearest neighbour, so a
    series with a missing slice or a gantry tilt gets contours that lie on, and reference,
    the image they were drawn on, and a frame of an enhanced image by its frame number."""
    from oncoseg.io.dicom_geometry import masks_on_planes
    from oncoseg.io.dicom_series import referenced_images

    structures = [StructureToWrite(*s) for s in structures]
    images = referenced_images(series_files, reference_name)
    planes = [i.plane for i in images]
    masks = masks_on_planes([(s.name, s.mask) for s in structures], image, planes,
                            reference_name)
    first = images[0].header
    ds = derived_object(RT_STRUCTURE_SET_STORAGE, first, "RTSTRUCT", 999,
                        f"{label} structures", algorithm)
    ds.OperatorsName = ""  # RT Series
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ApprovalStatus = "UNAPPROVED"

    image_refs = [i.reference() for i in images]
    series = pydicom.Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence(image_refs)
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    roi_items, contour_items, observations = [], [], []
    for number, structure in enumerate(structures, start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = structure.name[:64]
        if structure.description:
            roi.ROIDescription = structure.description
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = (algorithm or Algorithm()).name[:64]
        roi_items.append(roi)
        roi_contour = pydicom.Dataset()
        roi_contour.ROIDisplayColor = [int(c) for c in structure.color]
        roi_contour.ReferencedROINumber = number
        contours = []
        on_planes = masks[number - 1]
        traced = [(k, points) for k, plane in enumerate(planes) if on_planes[k].any()
                  for _, points in mask_to_contours(on_planes[k][None], plane.grid())]
        for k, points in traced:
            contour = pydicom.Dataset()
            contour.ContourImageSequence = DicomSequence([images[k].reference()])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
            contours.append(contour)
        if contours:
            roi_contour.ContourSequence = DicomSequence(contours)
        contour_items.append(roi_contour)
        observation = pydicom.Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = structure.interpreted_type
        observation.ROIInterpreter = ""
        if structure.code is not None:  # PS3.3 C.8.8.8: what the ROI is, coded
            observation.RTROIIdentificationCodeSequence = DicomSequence(
                [code_item(structure.code)])
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    with atomic_path(path, overwrite) as tmp:
        save_dicom(ds, tmp)
    return Path(path)
