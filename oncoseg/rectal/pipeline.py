"""The ``rectal`` task's verbs."""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.phantoms.rectal import generate_case
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> list[Path]:
    """Case folders with t2w, dwi_b0, dwi_b1000, label (on the b0 grid) and case.json."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, generate_case, "rectal", progress, cancel)
