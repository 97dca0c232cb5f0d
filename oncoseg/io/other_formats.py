"""Image formats that scanners and research tools write and OncoSeg does not read, recognised
so that the refusal names the format and the way to convert it.

SimpleITK has no reader for Philips PAR/REC, AFNI HEAD/BRIK, MINC 1 (netCDF) or ECAT 7, so
each came back as "no reader recognises its pixel data: truncated, or an unknown encoding",
which sends a user looking for damage that is not there; a MINC 1 file also made libminc
print its own errors twice. 3D Slicer does not read them either. Each is recognised by its
first bytes, or by its endings where it has no signature (PAR is text, REC and BRIK raw voxels).
"""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.errors import InputError

_CONVERT_PARREC = "dcm2niix, or nibabel's parrec2nii, converts it to NIfTI"
_CONVERT_NIBABEL = "nibabel reads it and can save it as NIfTI"
_CONVERT_MINC = "mincconvert -2 makes a MINC 2 file of it, which OncoSeg reads; " + _CONVERT_NIBABEL
# signature (first bytes) -> (what it is, how to convert it)
_SIGNATURES = {
    b"CDF\x01": ("a MINC 1 (netCDF) file", _CONVERT_MINC),
    b"CDF\x02": ("a MINC 1 (netCDF) file", _CONVERT_MINC),
    b"MATRIX7": ("an ECAT 7 PET file", _CONVERT_NIBABEL),
    b"MATRIX6": ("an ECAT 6 PET file", _CONVERT_NIBABEL),
}
# endings (lower case, without .gz) -> (what it is, how to convert it)
_ENDINGS = {
    ".par": ("a Philips PAR/REC header", _CONVERT_PARREC),
    ".rec": ("a Philips PAR/REC voxel file", _CONVERT_PARREC),
    ".head": ("an AFNI HEAD/BRIK dataset", "AFNI's 3dAFNItoNIFTI, or nibabel, converts it"),
    ".brik": ("an AFNI HEAD/BRIK dataset", "AFNI's 3dAFNItoNIFTI, or nibabel, converts it"),
}


def _signature(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(8)
    except OSError:
        return b""


def other_format(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(what the file is, how to convert it) for a format OncoSeg does not read; None for any
    other file."""
    path = Path(path)
    if not path.is_file():
        return None
    head = _signature(path)
    for signature, found in _SIGNATURES.items():
        if head.startswith(signature):
            return found
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return next((found for ending, found in _ENDINGS.items() if name.endswith(ending)), None)


def refuse_other_format(path: str | os.PathLike[str]) -> None:
    """Refuse a file in a format OncoSeg does not read, naming the format and the way out."""
    found = other_format(path)
    if found is not None:
        what, convert = found
        raise InputError(str(path), f"is {what}, which OncoSeg does not read (it reads DICOM, "
                         "NIfTI, NRRD, MetaImage, MINC 2 and FreeSurfer MGH/MGZ): " + convert)
