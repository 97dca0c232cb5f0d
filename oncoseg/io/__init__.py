"""Reading and writing what OncoSeg consumes and produces, always atomically.

The names below load their submodule on first use (PEP 562), so that importing a light one
(``oncoseg.io.atomic``, as the command line does at start) does not pull in SimpleITK.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE = {
    "atomic_directory": "atomic", "atomic_path": "atomic", "write_bytes_atomic": "atomic",
    "write_text_atomic": "atomic",
    "Segment": "segnrrd", "Segmentation": "segnrrd", "read_seg_nrrd": "segnrrd",
    "write_seg_nrrd": "segnrrd",
    "DicomSeries": "volumes", "is_volume_file": "volumes", "list_dicom_series": "volumes",
    "read_dicom_series": "volumes", "read_image": "volumes", "write_image": "volumes",
}
__all__ = sorted(_SUBMODULE)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module 'oncoseg.io' has no attribute '{name}'")
    return getattr(importlib.import_module(f"oncoseg.io.{_SUBMODULE[name]}"), name)
