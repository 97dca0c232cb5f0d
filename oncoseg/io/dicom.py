"""Writing image series as DICOM (the CT phantoms, sample data, the readers' test series) and
reading their headers.

Only what a planning system and the validators expect of a CT Image object is written: patient,
study, series, frame of reference, equipment, image plane and pixel modules. Pixels are signed
16-bit Hounsfield units (rescale slope 1, intercept 0).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import oncoseg
from oncoseg.terminology import Code

PROCESSING_EQUIPMENT = Code("DCM", "109102", "Processing Equipment")  # CID 7005


def code_item(code: Code) -> pydicom.Dataset:
    """A Code Sequence item (PS3.3 Table 8.8-1a, basic coded entry attributes)."""
    item = pydicom.Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning[:64]
    return item


def sop_reference(ds: pydicom.Dataset, frame: int | None = None) -> pydicom.Dataset:
    """An item naming one instance by its SOP Class and Instance UIDs, and ``frame`` (0-based)
    of a multi-frame instance by its Referenced Frame Number (PS3.3 C.17.2.1, counted from 1):
    how SEG frames, RT contours and SR content point at the images they were made on."""
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame + 1
    return item


@dataclass(frozen=True)
class Algorithm:
    """What made a derived object: the model (its file's name, sha256, training date and
    licence) run by this OncoSeg. The IHE AI Results profile asks for the algorithm's
    identity in the object; a reviewer auditing a contour needs the exact model file."""

    name: str = "OncoSeg"
    sha256: str = ""
    trained: str = ""  # the date training ended (model file provenance)
    license: str = ""

    @classmethod
    def of_model(cls, model: Mapping[str, object] | None) -> Algorithm:
        """From ``result.json``'s ``model`` (:func:`oncoseg.modelfile.model_summary`)."""
        if not model:
            return cls()
        return cls(str(model.get("file") or model.get("name") or "OncoSeg"),
                   str(model.get("sha256") or ""), str(model.get("trained") or ""),
                   str(model.get("license") or ""))

    @property
    def version(self) -> str:
        """AlgorithmVersion (LO): the training date and the file's hash, which together name
        one model file; OncoSeg's own version where no model is known."""
        if not self.sha256:
            return oncoseg.__version__
        return f"{self.trained[:10]} sha256:{self.sha256[:16]}".strip()[:64]

    def description(self) -> str:
        parts = [f"model {self.name}", f"sha256 {self.sha256}" if self.sha256 else "",
                 f"trained {self.trained}" if self.trained else "",
                 f"licence {self.license}" if self.license else "",
                 f"OncoSeg {oncoseg.__version__}"]
        return "; ".join(p for p in parts if p)


def contributing_equipment(algorithm: Algorithm, now: _dt.datetime) -> pydicom.Dataset:
    """The Contributing Equipment Sequence item (PS3.3 C.12.1.1.5) naming OncoSeg and the
    model as the processing equipment."""
    item = pydicom.Dataset()
    item.Manufacturer = "OncoSeg"
    item.ManufacturerModelName = algorithm.name[:64]
    item.SoftwareVersions = [oncoseg.__version__, algorithm.version]
    item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(PROCESSING_EQUIPMENT)])
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = algorithm.description()[:1024]
    return item

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Slicer 5.8 and 5.10 ship pydicom 2.4.4, Slicer 5.12 pydicom 3.0.2: every writer goes through
# save_dicom, which speaks both.
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def save_dicom(ds: pydicom.Dataset, path: str | os.PathLike[str]) -> None:
    """Write ``ds`` in the DICOM File Format (128-byte preamble, ``DICM``, file meta
    information), whichever pydicom is installed: pydicom 3 calls that
    ``enforce_file_format=True``, pydicom 2 ``write_like_original=False`` (which pydicom 3
    deprecates), and neither accepts the other's keyword."""
    if PYDICOM_3:
        ds.save_as(path, enforce_file_format=True)
    else:
        # pydicom 2 encodes by the dataset's own flags (a new FileDataset says implicit VR)
        # and rewrites the file meta's transfer syntax to match: set them from it instead
        syntax = ds.file_meta.TransferSyntaxUID
        ds.is_implicit_VR, ds.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
        ds.save_as(path, write_like_original=False)


# DICOM's name for UTF-8 (PS3.3 C.12.1.1.2), what every object OncoSeg derives is written in
UNICODE_CHARACTER_SET = "ISO_IR 192"
# what a derived object copies from the image it was made from (Patient, General Study)
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName")


def derived_object(sop_class_uid: str, source: pydicom.Dataset, modality: str,
                   series_number: int, series_description: str,
                   algorithm: Algorithm | None = None) -> FileDataset:
    """A new object made by OncoSeg from the series ``source`` belongs to: the same patient,
    study and frame of reference, a series of its own. Fills what every such object (DICOM
    SEG, RTSTRUCT) has: file meta, SOP Common, Patient, General Study, General Series, Frame
    of Reference, General Equipment; the caller adds its IOD's own modules."""
    now = _dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    # UTF-8: the patient's name as the source's own character set decodes it (Chinese,
    # Cyrillic, Greek, Japanese ...), and any segment name; Latin-1 wrote them as '?'
    ds.SpecificCharacterSet = UNICODE_CHARACTER_SET
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), \
        now.strftime("%H%M%S")
    for keyword in (*PATIENT_KEYWORDS, *STUDY_KEYWORDS):
        setattr(ds, keyword, getattr(source, keyword, ""))
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description[:64]
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = getattr(source, "PositionReferenceIndicator", "")
    ds.Manufacturer = "OncoSeg"
    ds.ManufacturerModelName = "OncoSeg"
    ds.SoftwareVersions = oncoseg.__version__
    ds.ContributingEquipmentSequence = DicomSequence([contributing_equipment(
        algorithm or Algorithm(), now)])
    return ds


@dataclass(frozen=True)
class Patient:
    id: str
    name: str
    birth_date: str = ""
    sex: str = "O"


def _common(ds: pydicom.Dataset, patient: Patient, study_uid: str, frame_uid: str,
            now: _dt.datetime) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "OncoSeg"
    ds.SoftwareVersions = oncoseg.__version__


@dataclass(frozen=True)
class CTSlice:
    """One CT image to write: its pixels (rows, columns; HU) and where its first pixel lies."""

    pixels: np.ndarray
    position: tuple[float, float, float]  # ImagePositionPatient, LPS mm


def write_ct_series(image: sitk.Image, folder: str | os.PathLike[str], patient: Patient,
                    description: str = "CT", study_uid: str | None = None) -> list[Path]:
    """One file per slice, in slice order (k = 0, 1, ...); returns their paths."""
    hu = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    slices = [CTSlice(hu[k], image.TransformIndexToPhysicalPoint((0, 0, k)))
              for k in range(hu.shape[0])]
    return write_ct_slices(slices, direction[:, 0], direction[:, 1], image.GetSpacing()[:2],
                           folder, patient, description, study_uid,
                           thickness=image.GetSpacing()[2])


def write_ct_slices(slices: Sequence[CTSlice], row: Sequence[float], column: Sequence[float],
                    pixel_spacing_xy: Sequence[float], folder: str | os.PathLike[str],
                    patient: Patient, description: str = "CT", study_uid: str | None = None,
                    thickness: float | None = None, gantry_tilt_degrees: float = 0.0
                    ) -> list[Path]:
    """One CT Image file per slice, each where its ImagePositionPatient says (a scanner's
    series need not be a uniform stack: the readers' tests write gaps and gantry tilts this
    way); ``row`` / ``column`` are the directions of increasing column / row index and
    ``pixel_spacing_xy`` the spacing along them. Returns the paths, in the order given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    now = _dt.datetime.now()
    paths = []
    for k, item in enumerate(slices):
        hu = np.asarray(item.pixels).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        _common(ds, patient, study_uid, frame_uid, now)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = description
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.Laterality = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        if gantry_tilt_degrees:
            ds.GantryDetectorTilt = f"{gantry_tilt_degrees:.4f}"
        ds.ImagePositionPatient = [f"{v:.4f}" for v in item.position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *column)]
        ds.PixelSpacing = [f"{pixel_spacing_xy[1]:.4f}", f"{pixel_spacing_xy[0]:.4f}"]  # row, col
        if thickness is not None:
            ds.SliceThickness = f"{thickness:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(hu).tobytes()
        path = folder / f"CT_{k + 1:04d}.dcm"
        save_dicom(ds, path)
        paths.append(path)
    return paths


def read_header(path: str | os.PathLike[str]) -> pydicom.Dataset:
    return pydicom.dcmread(str(path), stop_before_pixels=True)
