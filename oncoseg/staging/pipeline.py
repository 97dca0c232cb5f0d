"""The ``staging`` task's verbs."""

from __future__ import annotations

import os
from pathlib import Path

from oncoseg.phantoms import staging as staging_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.progress import CancelToken, ProgressCallback


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> list[Path]:
    """Case folders with t2w (and the tumour label), plus the staging table staging.csv."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, staging_phantom.generate_case, "staging",
                            progress, cancel, finish=staging_phantom.write_table)
