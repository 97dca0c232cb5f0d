"""The ``oar-mr`` task's verbs."""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.phantoms import gi
from oncoseg.phantoms.common import check_phantom_layout
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> list[Path]:
    """Patients in the UW-Madison Kaggle layout (train.csv, train/caseN/caseN_dayN/scans)."""
    check_phantom_layout(layout, ["native"])
    return gi.generate(output, cases, seed, progress, cancel)
