"""FreeSurfer MGH / MGZ volumes: what ``recon-all`` leaves (``T1.mgz``, ``brain.mgz``,
``aseg.mgz``) and ``mri_convert`` writes.

3D Slicer reads them through ITK's MGHIO module, which Slicer's ITK build enables
(``Module_MGHIO`` in SuperBuild/External_ITK.cmake, v5.10.0); SimpleITK's wheels do not carry
it, so a brain prepared with FreeSurfer opened in Slicer but not on the command line, where it
was refused as "truncated, or an unknown encoding". The format is small and fixed: a 284-byte
big-endian header, then the voxels (x fastest, then y, z and frames; the whole file gzipped
for .mgz), then optional scan parameters and tags, which are not needed here.

Placement, as FreeSurfer's reader takes it (``mghRead`` in freesurfer/utils/mriio.c) and
nibabel computes it (``MGHHeader.get_affine``):
the direction cosines ``Mdc`` (one unit vector per voxel axis, in RAS), the voxel sizes
``delta``, and the RAS point ``c_ras`` of the voxel position (width / 2, height / 2,
depth / 2), halves included. A header whose ``goodRASFlag`` is not set holds no placement:
FreeSurfer then reads it as a 1 mm coronal grid (L, I, A) centred on the origin
(``setDirectionCosine(mri, MRI_CORONAL)``), and nibabel 5 as L, S, P (its default direction
cosines taken as rows) and ITK's MGHIO, so 3D Slicer, as L, P, S from the origin (it leaves
ITK's defaults): such a file is read as FreeSurfer reads it, with a note. Where the flag is set,
MGHIO places the file as FreeSurfer does (``MGHImageIO::ReadVolumeHeader``: the centre at
dimensions * 0.5, the cosines as columns; InsightSoftwareConsortium/itkMGHImageIO, snapshot
90061f5).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.dicom_series import SHEARED
from oncoseg.io.file_information import FileInformation

HEADER_BYTES = 284
_FIELDS = struct.Struct(">7ih3f9f3f")  # version, dims (4), type, dof, goodRASFlag, delta,
#                                        Mdc (x_r x_a x_s y_r ... z_s), c_ras
# FreeSurfer's voxel types that its MATLAB loader and nibabel read
_TYPES = {0: ">u1", 1: ">i4", 3: ">f4", 4: ">i2", 10: ">u2"}
_NAMES = {0: "MRI_UCHAR", 1: "MRI_INT", 3: "MRI_FLOAT", 4: "MRI_SHORT", 10: "MRI_USHRT"}
_PIXEL_IDS = {np.dtype(t).newbyteorder("=").str: pixel for t, pixel in (
    (">u1", sitk.sitkUInt8), (">i4", sitk.sitkInt32), (">f4", sitk.sitkFloat32),
    (">i2", sitk.sitkInt16), (">u2", sitk.sitkUInt16))}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK_BYTES = 1 << 24
# RAS -> ITK's LPS
_FLIP = np.diag([-1.0, -1.0, 1.0])
# FreeSurfer's placement of a header without one (MRI_CORONAL): columns x, y, z in RAS
_CORONAL = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def is_mgh(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith((".mgh", ".mgz", ".mgh.gz"))


@dataclass(frozen=True)
class MGHHeader:
    """What an MGH header declares."""

    size: tuple[int, int, int, int]  # width, height, depth, frames
    dtype: str  # numpy dtype of the stored voxels (big-endian)
    type_name: str
    placed: bool  # goodRASFlag set: spacing, directions and centre are the file's own
    spacing: tuple[float, float, float]
    directions_ras: np.ndarray  # 3 x 3, a column per voxel axis
    centre_ras: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.prod(self.size, dtype=object))

    @property
    def nbytes(self) -> int:
        return self.voxels * np.dtype(self.dtype).itemsize

    @property
    def dimension(self) -> int:
        return 4 if self.size[3] > 1 else 3


def _open(path: Path):
    """The file's byte stream, inflated where it is gzipped (by its first bytes, whatever its
    name says: FreeSurfer decides by the ending, and a renamed file should still read)."""
    with path.open("rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else path.open("rb")


def _not_mgh(path: Path, why: str) -> InputError:
    return InputError(str(path), f"is not a readable FreeSurfer MGH/MGZ file ({why})")


def read_header(path: str | os.PathLike[str]) -> MGHHeader:
    """The header of an MGH or MGZ file, checked: version 1, positive sizes, a voxel type
    FreeSurfer's readers share, and (where the file is placed) positive finite voxel sizes and
    orthonormal direction cosines (a sheared or scaled ``Mdc`` is refused)."""
    path = Path(path)
    try:
        with _open(path) as stream:
            raw = stream.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as error:
        raise _not_mgh(path, f"its header cannot be read: {error}") from None
    if len(raw) < _FIELDS.size:
        raise InputError(str(path), f"is cut short: it holds {len(raw)} bytes, less than the "
                         f"{HEADER_BYTES}-byte MGH header")
    fields = _FIELDS.unpack(raw[:_FIELDS.size])
    version, dims, code, good = fields[0], fields[1:5], fields[5], fields[7]
    if version != 1:
        raise _not_mgh(path, f"its version is {version}, not 1")
    if any(d < 1 for d in dims):
        raise _not_mgh(path, f"its header declares {' x '.join(map(str, dims))} voxels")
    if code not in _TYPES:
        known = ", ".join(f"{c} ({n})" for c, n in _NAMES.items())
        raise _not_mgh(path, f"its voxel type {code} is not one FreeSurfer's readers share: "
                       f"{known}")
    placed = good > 0
    if placed:
        spacing = tuple(float(v) for v in fields[8:11])
        directions = np.array(fields[11:20], float).reshape(3, 3).T
        centre = np.array(fields[20:23], float)
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise _not_mgh(path, f"its voxel sizes {spacing} are not positive lengths")
        if not (np.isfinite(directions).all() and np.isfinite(centre).all()):
            raise _not_mgh(path, "its direction cosines or centre are not numbers")
        if not np.allclose(directions.T @ directions, np.eye(3), atol=1e-3):
            raise InputError(str(path), SHEARED)  # as a sheared NIfTI is refused
    else:
        spacing, directions, centre = (1.0, 1.0, 1.0), _CORONAL.copy(), np.zeros(3)
    return MGHHeader((int(dims[0]), int(dims[1]), int(dims[2]), int(dims[3])), _TYPES[code],
                     _NAMES[code], placed, spacing, directions, centre)


def _voxels(path: Path, header: MGHHeader) -> np.ndarray:
    """The voxels in file order, native byte order, read in chunks into one array (the only
    full-size buffer); a file that ends early is refused, not read with zeros."""
    data = np.empty(header.voxels, dtype=header.dtype)
    buffer = memoryview(data.view(np.uint8))
    held = 0
    try:
        with _open(path) as stream:
            stream.read(HEADER_BYTES)
            while held < header.nbytes:
                count = stream.readinto(buffer[held:held + _CHUNK_BYTES])
                if not count:
                    break
                held += count
    except (EOFError, zlib.error, gzip.BadGzipFile):
        pass  # the gzip stream ends early or is damaged: fewer bytes than declared
    if held < header.nbytes:
        raise InputError(str(path), f"is cut short: its header declares {header.nbytes:,} "
                         f"bytes of voxels after its {HEADER_BYTES}-byte header, and it holds "
                         f"{held:,} (an interrupted copy or download)")
    data.byteswap(inplace=True)
    return data.view(data.dtype.newbyteorder("="))


def _geometry(header: MGHHeader) -> tuple[list[float], list[float], list[float]]:
    """(origin, spacing, direction) in ITK's LPS, from FreeSurfer's vox2ras; a 4D file's
    frames are a fourth axis of unit step."""
    spacing = np.array(header.spacing)
    half_extent = np.array(header.size[:3], float) / 2.0
    origin = _FLIP @ (header.centre_ras - header.directions_ras @ (spacing * half_extent))
    direction = _FLIP @ header.directions_ras
    if header.dimension == 4:
        full = np.eye(4)
        full[:3, :3] = direction
        return [*origin.tolist(), 0.0], [*spacing.tolist(), 1.0], full.ravel().tolist()
    return origin.tolist(), spacing.tolist(), direction.ravel().tolist()


def information(path: str | os.PathLike[str]) -> FileInformation:
    """The file's header as SimpleITK's reader would give it (without reading its voxels)."""
    return _information(read_header(path))


def _information(header: MGHHeader) -> FileInformation:
    origin, spacing, direction = _geometry(header)
    pixel = _PIXEL_IDS[np.dtype(header.dtype).newbyteorder("=").str]
    return FileInformation(header.size[:header.dimension], tuple(spacing), tuple(origin),
                           tuple(direction), pixel)


def read_mgh(path: str | os.PathLike[str]) -> sitk.Image:
    """An MGH or MGZ file as a SimpleITK image in ITK's LPS geometry (4D where it holds several
    frames)."""
    path = Path(path)
    header = read_header(path)
    shape = tuple(reversed(header.size[:3]))
    if header.dimension == 4:
        shape = (header.size[3], *shape)
    image = sitk.GetImageFromArray(_voxels(path, header).reshape(shape), isVector=False)
    origin, spacing, direction = _geometry(header)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def unplaced_note(path: str | os.PathLike[str]) -> list[str]:
    """The note for an MGH file that holds no placement (``goodRASFlag`` not set); none for
    one that does."""
    if read_header(path).placed:
        return []
    return [f"{Path(path).name} holds no orientation (its goodRASFlag is not set): it was read "
            "as FreeSurfer reads such a file, a 1 mm grid with its axes taken as L, I, A "
            "(coronal) centred on the origin (nibabel reads it as L, S, P: head and feet, front "
            "and back the other way; 3D Slicer as L, P, S from the origin), but where the "
            "patient's left, front and head lie is not known from the file: check the result's "
            "laterality"]


def as_slicer_reads_it(path: str | os.PathLike[str]) -> FileInformation:
    """The file's header as ITK's MGHIO, so 3D Slicer, gives it: the file's own placement
    where it has one; without one (``goodRASFlag`` not set) ITK's defaults, which that reader
    leaves (it sets spacing, directions and origin only ``if (RASgood)``,
    ``MGHImageIO::ReadVolumeHeader``): 1 mm, axes L, P, S, the first voxel at the origin."""
    header = read_header(path)
    found = _information(header)
    if header.placed:
        return found
    dimension = found.GetDimension()
    return FileInformation(found.size, (1.0,) * dimension, (0.0,) * dimension,
                           tuple(np.eye(dimension).ravel().tolist()), found.pixel_id)


def slicer_unplaced_refusal(path: str | os.PathLike[str]) -> str | None:
    """Why a Slicer node loaded from ``path`` cannot be segmented (None when it can): an MGH
    file without placement, which Slicer shows in another orientation than FreeSurfer reads
    and the command line (with its note) takes."""
    if read_header(path).placed:
        return None
    return (f"was loaded from {Path(path).name}, which holds no orientation (its goodRASFlag "
            "is not set): 3D Slicer shows its axes as L, P, S (axial), FreeSurfer and OncoSeg's "
            "command line read them as L, I, A (coronal), and where the patient's left, front "
            "and head lie is not known from the file, so a method would read the anatomy in an "
            "unknown orientation. Give the file its orientation (FreeSurfer's mri_convert with "
            "--in_orientation) and load it again")
