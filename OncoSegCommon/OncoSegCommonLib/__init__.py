"""MRML-level logic shared by the OncoSeg Slicer modules.

Nothing here imports qt or ctk, so the same code runs in the Slicer application and headless on
the ``slicer-core`` wheel (tests, the browser review app). The Qt panels live in files whose names
say they are widgets.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _ensure_engine_importable() -> None:
    """Used from a source checkout (module paths added in Slicer's settings), the engine package
    sits two folders up; an installed extension has it next to the modules already."""
    try:
        import oncoseg  # noqa: F401
    except ImportError:
        checkout = Path(__file__).resolve().parents[2]
        if (checkout / "oncoseg" / "__init__.py").is_file():
            sys.path.insert(0, str(checkout))


_ensure_engine_importable()
