"""The export formats by name and their file endings: light on purpose (no numpy, no
SimpleITK), so that the command line can offer them without loading the writers."""

from __future__ import annotations

# the probability maps of a result (not its segmentation) as a FRACTIONAL DICOM SEG
FRACTIONAL = "dicom-seg-fractional"
DICOM_FORMATS = ("dicom-seg", "rtstruct", FRACTIONAL)
FORMATS = (*DICOM_FORMATS, "seg.nrrd", "nrrd", "nifti")
ENDINGS = {"seg.nrrd": (".seg.nrrd",), "nrrd": (".nrrd",), "nifti": (".nii", ".nii.gz"),
           "dicom-seg": (".dcm",), "rtstruct": (".dcm",), FRACTIONAL: (".dcm",)}
