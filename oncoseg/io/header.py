"""What a volume declares before its pixels are read, and the refusal of one that cannot fit.

A file's header says how many voxels of which type it holds; a few kilobytes of gzipped NRRD
can declare 2000^3 voxels. The declared size is checked here against the memory available
before anything is allocated (SimpleITK's ``ReadImageInformation`` for files; rows x columns x
files from the DICOM headers for a series folder), so such a file is refused in a fraction of a
second with the numbers, instead of filling the machine's memory first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from oncoseg.memory import require_memory

# Peak memory of SimpleITK's reader over the image it returns, measured on a 512 x 512 x 384
# int16 volume (Testing/benchmarks/bench_memory.py): NRRD and uncompressed MHA read straight
# into the image; nifti1_io reads into a buffer of its own that ITK then copies; a compressed
# MHA holds its compressed bytes (at most the image size) while inflating.
READ_FACTOR_NIFTI = 2.0
READ_FACTOR_COMPRESSED_MHA = 2.0
READ_FACTOR_DEFAULT = 1.0
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
    if name.endswith((".nii", ".nii.gz")):
        return READ_FACTOR_NIFTI
    if name.endswith((".mha", ".mhd")) and _mha_compressed(path):
        return READ_FACTOR_COMPRESSED_MHA
    return READ_FACTOR_DEFAULT


def declared_file(path: str | os.PathLike[str]) -> DeclaredImage | None:
    """The header of an image file (any format SimpleITK reads); None when the header cannot
    be read (the read itself then reports why)."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(),
                       reader.GetNumberOfComponents())
    per_voxel = probe.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
    return DeclaredImage(str(path), tuple(int(s) for s in reader.GetSize()), per_voxel,
                         probe.GetPixelIDTypeAsString(), _read_factor(path))


_DICOM_TAGS = ("SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames", "BitsAllocated",
               "SamplesPerPixel", "RescaleSlope", "RescaleIntercept")


def declared_dicom_folder(folder: str | os.PathLike[str], series_uid: str | None = None
                          ) -> DeclaredImage | None:
    """Rows x columns x frames of the series in ``folder`` (the given one, else the largest,
    which is the most any read of this folder can return), from the files' headers only."""
    import pydicom

    series: dict[str, list] = {}
    for entry in sorted(Path(folder).iterdir()):
        if not entry.is_file():
            continue
        try:
            header = pydicom.dcmread(str(entry), stop_before_pixels=True,
                                     specific_tags=list(_DICOM_TAGS))
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, TypeError):
            continue
        if "Rows" not in header or "Columns" not in header:
            continue
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(header)
    if series_uid is not None:
        series = {uid: h for uid, h in series.items() if uid == series_uid}
    declared = [_declared_series(folder, headers) for headers in series.values()]
    return max(declared, key=lambda d: d.nbytes, default=None)


def _declared_series(folder: str | os.PathLike[str], headers: list) -> DeclaredImage:
    first = headers[0]
    frames = sum(int(h.get("NumberOfFrames", 1) or 1) for h in headers)
    stored = max(1, int(first.get("BitsAllocated", 16) or 16) // 8)
    samples = int(first.get("SamplesPerPixel", 1) or 1)
    # GDCM applies the rescale: 8/16-bit stored values come back as 32-bit integers or floats
    rescaled = "RescaleSlope" in first or "RescaleIntercept" in first
    per_sample = max(stored, 4) if rescaled else stored
    size = (int(first.Columns), int(first.Rows), frames)
    kind = f"DICOM, {8 * stored}-bit stored" + (", rescaled" if rescaled else "")
    return DeclaredImage(str(folder), size, per_sample * samples, kind)


def declared_image(path: str | os.PathLike[str], series_uid: str | None = None
                   ) -> DeclaredImage | None:
    path = Path(path)
    if path.is_dir():
        return declared_dicom_folder(path, series_uid)
    return declared_file(path) if path.is_file() else None


def check_declared_size(path: str | os.PathLike[str], series_uid: str | None = None) -> None:
    """Refuse (exit 2 in the CLI) a volume that cannot be read and given a label map in the
    memory available, before any pixel is read. Tasks refine this with their own needs once
    the image is read (:func:`oncoseg.validation.check_volume`)."""
    declared = declared_image(path, series_uid)
    if declared is None:
        return
    held = declared.nbytes + MIN_PIPELINE_BYTES_PER_VOXEL * declared.voxels
    needed = int(max(declared.nbytes * declared.read_factor, held))
    require_memory(str(path), needed, f"read its {declared.describe()} and segment them")
