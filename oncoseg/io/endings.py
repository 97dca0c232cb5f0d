"""The file endings of the volume files OncoSeg reads (a DICOM series is a folder, or files
with any ending). Kept apart from :mod:`oncoseg.io.volumes` so the DICOM reader can tell a
folder of volume files from one of DICOM files without importing the volume reader."""

from __future__ import annotations

import os
from pathlib import Path

# a pair's .hdr names it, as .mhd and .nhdr do (its .img is the voxel file); FreeSurfer's
# .mgz, .mgh (and .mgh.gz) are read by oncoseg.io.mgh; MINC 2 placed by oncoseg.io.minc
VOLUME_ENDINGS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".hdr", ".hdr.gz", ".mha", ".mhd",
                  ".mgz", ".mgh", ".mgh.gz", ".mnc")


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(VOLUME_ENDINGS)


def volume_stem(path: str | os.PathLike[str]) -> str | None:
    """The file name without its volume ending ('t2w.nii.gz' -> 't2w'); None for a file that
    is not a volume."""
    name = Path(path).name
    for ending in sorted(VOLUME_ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return None
