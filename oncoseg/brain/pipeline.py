"""The ``brain`` task's verbs."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from oncoseg.phantoms import brain as brain_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.progress import CancelToken, ProgressCallback

PHANTOM_NAMINGS = {"native": "brats2021", "brats2021": "brats2021", "brats2023": "brats2023"}


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> list[Path]:
    """BraTS case folders with the 2017-2021 file names (native) or the 2023+ ones."""
    check_phantom_layout(layout, list(PHANTOM_NAMINGS))
    naming = PHANTOM_NAMINGS[layout]
    return generate_dataset(
        output, cases, seed, functools.partial(brain_phantom.generate_case, naming=naming),
        "brain", progress, cancel,
        names=functools.partial(brain_phantom.case_folder_name, naming=naming))
