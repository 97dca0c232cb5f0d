"""The Python a child process runs: Slicer's ``PythonSlicer`` inside the application.

Inside Slicer, ``sys.executable`` is the Slicer application itself; its launcher puts the folder
holding ``PythonSlicer`` on ``PATH``, where SlicerMONAIAuto3DSeg and SlicerTotalSegmentator find
it too. Training runs in such a child, and so does elastix: pip's ITK must not run in Slicer's
process (Slicer issues #5907 and #8947).
"""

from __future__ import annotations

import shutil
import sys


def slicer_python() -> str | None:
    """``PythonSlicer`` inside the Slicer application; None elsewhere (slicer-core, the review
    app, scripts), where a child can run ``sys.executable``."""
    slicer = sys.modules.get("slicer")
    if slicer is None or getattr(slicer, "app", None) is None:
        return None
    return shutil.which("PythonSlicer")
