"""The export formats by name and their file endings: light on purpose (no numpy, no
SimpleITK), so that the command line can offer them without loading the writers."""

from __future__ import annotations

# the probability maps of a result (not its segmentation) as a FRACTIONAL DICOM SEG
FRACTIONAL = "dicom-seg-fractional"
# a result's measurements (volumes, P(T3)) as a TID 1500 DICOM Structured Report
REPORT = "dicom-sr"
DICOM_FORMATS = ("dicom-seg", "rtstruct", FRACTIONAL, REPORT)
FORMATS = (*DICOM_FORMATS, "seg.nrrd", "nrrd", "nifti")
ENDINGS = {"seg.nrrd": (".seg.nrrd",), "nrrd": (".nrrd",), "nifti": (".nii", ".nii.gz"),
           "dicom-seg": (".dcm",), "rtstruct": (".dcm",), FRACTIONAL: (".dcm",), REPORT: (".dcm",)}
