"""What a volume declares before its pixels are read, and the refusal of one that cannot fit.

A file's header says how many voxels of which type it holds; a few kilobytes of gzipped NRRD
can declare 2000^3 voxels. The declared size is checked here against the memory available
before anything is allocated (SimpleITK's ``ReadImageInformation`` for files; rows x columns x
files from the first header of the series that reading a folder would choose), so such a file
is refused in a fraction of a second with the numbers, instead of filling the memory first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.io.dicom_geometry import slice_planes
from oncoseg.io.dicom_series import DicomSeries, choose_dicom_series, read_dicom_header
from oncoseg.io.mgh import is_mgh, read_header
from oncoseg.io.nifti import is_nifti
from oncoseg.memory import require_memory
from oncoseg.validation import COMPLEX_PIXELS

# Peak memory of SimpleITK's reader over the image it returns, measured on a 512 x 512 x 384
# int16 volume (Testing/benchmarks/bench_memory.py): NRRD and uncompressed MHA read straight
# into the image; nifti1_io reads into a buffer of its own that ITK then copies; a compressed
# MHA holds its compressed bytes (at most the image size) while inflating.
READ_FACTOR_NIFTI = 2.0
READ_FACTOR_COMPRESSED_MHA = 2.0
READ_FACTOR_DEFAULT = 1.0
# oncoseg.io.mgh reads the voxels into one array, which SimpleITK's image then copies
READ_FACTOR_MGH = 2.0
# What every method needs besides the input, per input voxel, at the least: a uint8 label map
# on the input grid, and one more while a compressed writer holds its copy of it (a tiled task,
# oar-ct, keeps nothing else at full resolution).
MIN_PIPELINE_BYTES_PER_VOXEL = 2.0


@dataclass(frozen=True)
class DeclaredImage:
    """The size and voxel type a file or series declares, as the reader will return it."""

    source: str
    size: tuple[int, ...]
    bytes_per_voxel: int  # of the image the reader returns (all components)
    pixel_type: str
    read_factor: float = READ_FACTOR_DEFAULT  # reader's peak memory over the image's bytes

    @property
    def voxels(self) -> int:
        count = 1
        for s in self.size:
            count *= int(s)
        return count

    @property
    def nbytes(self) -> int:
        return self.voxels * self.bytes_per_voxel

    def describe(self) -> str:
        return f"{' x '.join(map(str, self.size))} voxels ({self.pixel_type})"


def _mha_compressed(path: Path) -> bool:
    """MetaImage's text header says ``CompressedData = True`` (SimpleITK does not pass it on)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("latin-1")
    except OSError:
        return False
    for line in head.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "CompressedData":
            return value.strip().lower() == "true"
        if key.strip() == "ElementDataFile":
            break
    return False


def _read_factor(path: Path) -> float:
    name = path.name.lower()
    if is_nifti(path):
        return READ_FACTOR_NIFTI
    if name.endswith((".mha", ".mhd")) and _mha_compressed(path):
        return READ_FACTOR_COMPRESSED_MHA
    return READ_FACTOR_DEFAULT


def declared_file(path: str | os.PathLike[str]) -> DeclaredImage | None:
    """The header of an image file (any format SimpleITK reads); None when the header cannot
    be read (the read itself then reports why)."""
    path = Path(path)
    if is_mgh(path):
        return _declared_mgh(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    components = 1 if reader.GetPixelID() in COMPLEX_PIXELS else reader.GetNumberOfComponents()
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), components)
    per_voxel = probe.GetSizeOfPixelComponent() * components
    return DeclaredImage(str(path), tuple(int(s) for s in reader.GetSize()), per_voxel,
                         probe.GetPixelIDTypeAsString(), _read_factor(path))


def _declared_mgh(path: Path) -> DeclaredImage:
    header = read_header(path)  # an unreadable one is refused here, in words
    size = header.size[:header.dimension]
    item = np.dtype(header.dtype).itemsize
    return DeclaredImage(str(path), tuple(size), item, f"FreeSurfer {header.type_name}",
                         READ_FACTOR_MGH)


def declared_dicom_series(series: DicomSeries) -> DeclaredImage | None:
    """Rows x columns x frames of a series, from its first file's header and its file count."""
    header = read_dicom_header(series.files[0]) if series.files else None
    if header is None or "Rows" not in header or "Columns" not in header:
        return None
    frames = len(series.frames) or int(header.get("NumberOfFrames", 1) or 1) * len(series.files)
    stored = max(1, int(header.get("BitsAllocated", 16) or 16) // 8)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    # the rescale is applied: 8/16-bit stored values come back as 32-bit integers or floats,
    # 64-bit floats from GDCM where a slope or intercept is not a whole number
    rescales = {p.rescale for p in slice_planes(series.files[0], header) or []}
    rescaled = "RescaleSlope" in header or "RescaleIntercept" in header or \
        any(r != (1.0, 0.0) for r in rescales)
    fractional = any(v != round(v) for r in rescales for v in r)
    per_sample = 8 if fractional else max(stored, 4) if rescaled else stored
    size = (int(header.Columns), int(header.Rows), frames)
    kind = f"DICOM, {8 * stored}-bit stored" + (", rescaled" if rescaled else "")
    return DeclaredImage(series.name, size, per_sample * samples, kind)


def declared_image(path: str | os.PathLike[str], series: str | None = None,
                   split: bool = True) -> DeclaredImage | None:
    """What ``path`` declares: a file's header, or the DICOM series a folder (or DICOMDIR)
    holds, chosen as reading chooses it (``series``: UID, number or description pattern).
    None when there is nothing to declare (a folder of PNG slices, an unreadable header)."""
    path = Path(path)
    if path.is_dir() or path.name.upper() == "DICOMDIR":
        from oncoseg.io.png_slices import slice_files

        if path.is_dir() and slice_files(path):
            return None
        return declared_dicom_series(choose_dicom_series(path, series, split))
    return declared_file(path) if path.is_file() else None


def check_declared_size(path: str | os.PathLike[str], series: str | None = None,
                        split: bool = True) -> None:
    """Refuse (exit 2 in the CLI) a volume that cannot be read and given a label map in the
    memory available, before any pixel is read. Tasks refine this with their own needs once
    the image is read (:func:`oncoseg.validation.check_volume`)."""
    declared = declared_image(path, series, split)
    if declared is None:
        return
    held = declared.nbytes + MIN_PIPELINE_BYTES_PER_VOXEL * declared.voxels
    needed = int(max(declared.nbytes * declared.read_factor, held))
    require_memory(str(path), needed, f"read its {declared.describe()} and segment them")
