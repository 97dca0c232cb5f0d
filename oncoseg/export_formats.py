"""The export formats by name and their file endings: light on purpose (no numpy, no
SimpleITK), so that the command line can offer them without loading the writers."""

from __future__ import annotations

DICOM_FORMATS = ("dicom-seg", "rtstruct")
FORMATS = (*DICOM_FORMATS, "seg.nrrd", "nrrd", "nifti")
ENDINGS = {"seg.nrrd": (".seg.nrrd",), "nrrd": (".nrrd",), "nifti": (".nii", ".nii.gz"),
           "dicom-seg": (".dcm",), "rtstruct": (".dcm",)}
