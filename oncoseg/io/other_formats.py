"""Image formats that scanners and research tools write and OncoSeg does not read, recognised
so that the refusal names the format and the way to convert it.

SimpleITK has no reader for Philips PAR/REC, AFNI HEAD/BRIK, MINC 1 (netCDF) or ECAT 7, nor
for a ZIP or gzip archive of a PACS export, so each came back as "no reader recognises its
pixel data: truncated, or an unknown encoding", which sends a user looking for damage that is
not there; a MINC 1 file also made libminc print its own errors twice. 3D Slicer does not
read them either. Each is recognised by its first bytes, or by its endings where it has no
signature (PAR is text, REC and BRIK raw voxels).
"""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.errors import InputError

_CONVERT_PARREC = "dcm2niix, or nibabel's parrec2nii, converts it to NIfTI"
_CONVERT_NIBABEL = "nibabel reads it and can save it as NIfTI"
_UNPACK = ("unpack it and give the folder or file it holds (a DICOM export is read from its "
           "folder)")
_CONVERT_MINC = "mincconvert -2 makes a MINC 2 file of it, which OncoSeg reads; " + _CONVERT_NIBABEL
# signature (first bytes) -> (what it is, how to convert it)
_SIGNATURES = {
    b"CDF\x01": ("a MINC 1 (netCDF) file", _CONVERT_MINC),
    b"CDF\x02": ("a MINC 1 (netCDF) file", _CONVERT_MINC),
    b"MATRIX7": ("an ECAT 7 PET file", _CONVERT_NIBABEL),
    b"MATRIX6": ("an ECAT 6 PET file", _CONVERT_NIBABEL),
    b"PK\x03\x04": ("a ZIP archive", _UNPACK),
}
# gzip-compressed files that are volumes as they are (read by ITK, nibabel-style pairs, MGZ)
_GZIPPED_VOLUMES = (".nii.gz", ".hdr.gz", ".img.gz", ".mgz", ".mgh.gz")
# endings (lower case, without .gz) -> (what it is, how to convert it)
_ENDINGS = {
    ".par": ("a Philips PAR/REC header", _CONVERT_PARREC),
    ".rec": ("a Philips PAR/REC voxel file", _CONVERT_PARREC),
    ".head": ("an AFNI HEAD/BRIK dataset", "AFNI's 3dAFNItoNIFTI, or nibabel, converts it"),
    ".brik": ("an AFNI HEAD/BRIK dataset", "AFNI's 3dAFNItoNIFTI, or nibabel, converts it"),
}


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(132)
    except OSError:
        return b""


def other_format(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(what the file is, how to convert it) for a format OncoSeg does not read; None for any
    other file (a DICOM file whatever its preamble holds)."""
    path = Path(path)
    if not path.is_file():
        return None
    head = _head(path)
    if head[128:132] == b"DICM":
        return None
    for signature, found in _SIGNATURES.items():
        if head.startswith(signature):
            return found
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    for ending, found in _ENDINGS.items():
        if stem.endswith(ending):
            return found
    if head.startswith(b"\x1f\x8b") and not name.endswith(_GZIPPED_VOLUMES):
        return "a gzip-compressed file (a .dcm.gz or .tar.gz)", _UNPACK
    return None


def refuse_other_format(path: str | os.PathLike[str]) -> None:
    """Refuse a file in a format OncoSeg does not read, naming the format and the way out."""
    found = other_format(path)
    if found is not None:
        what, convert = found
        raise InputError(str(path), f"is {what}, which OncoSeg does not read (it reads DICOM, "
                         "NIfTI, NRRD, MetaImage, MINC 2 and FreeSurfer MGH/MGZ): " + convert)
