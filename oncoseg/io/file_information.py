"""A volume file's header in the shape SimpleITK's ``ImageFileReader`` gives it after
``ReadImageInformation``, for files whose placement OncoSeg reads itself (FreeSurfer MGH/MGZ,
:mod:`oncoseg.io.mgh`) or corrects (MINC, :mod:`oncoseg.io.minc`): the checks that look at a
file's grid before reading its voxels then see the placement the voxels will be read with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import SimpleITK as sitk


@dataclass(frozen=True)
class FileInformation:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major, ITK's LPS
    pixel_id: int
    components: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, reader: sitk.ImageFileReader, origin: Sequence[float],
           direction: Sequence[float]) -> FileInformation:
        """A reader's header with another placement."""
        metadata = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
        return cls(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(origin),
                   tuple(direction), reader.GetPixelID(), reader.GetNumberOfComponents(),
                   metadata)

    # SimpleITK's names, so that callers take either
    def GetDimension(self) -> int:
        return len(self.size)

    def GetSize(self) -> tuple[int, ...]:
        return self.size

    def GetSpacing(self) -> tuple[float, ...]:
        return self.spacing

    def GetOrigin(self) -> tuple[float, ...]:
        return self.origin

    def GetDirection(self) -> tuple[float, ...]:
        return self.direction

    def GetPixelID(self) -> int:
        return self.pixel_id

    def GetNumberOfComponents(self) -> int:
        return self.components

    def GetMetaDataKeys(self) -> tuple[str, ...]:
        return tuple(self.metadata)

    def GetMetaData(self, key: str) -> str:
        return self.metadata[key]
