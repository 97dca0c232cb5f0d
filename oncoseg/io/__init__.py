"""Reading and writing what OncoSeg consumes and produces, always atomically."""

from oncoseg.io.atomic import atomic_directory, atomic_path, write_bytes_atomic, write_text_atomic
from oncoseg.io.segnrrd import Segment, Segmentation, read_seg_nrrd, write_seg_nrrd
from oncoseg.io.volumes import (
    DicomSeries,
    is_volume_file,
    list_dicom_series,
    read_dicom_series,
    read_image,
    write_image,
)

__all__ = [
    "DicomSeries",
    "Segment",
    "Segmentation",
    "atomic_directory",
    "atomic_path",
    "is_volume_file",
    "list_dicom_series",
    "read_dicom_series",
    "read_image",
    "read_seg_nrrd",
    "write_bytes_atomic",
    "write_image",
    "write_seg_nrrd",
    "write_text_atomic",
]
