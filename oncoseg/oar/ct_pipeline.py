"""The ``oar-ct`` task's verbs."""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.phantoms import pelvis_ct
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> list[Path]:
    """Patient folders with a CT series (DICOM) and an RT structure set each."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, pelvis_ct.generate_case, "oarct", progress,
                            cancel)
