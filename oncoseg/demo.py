"""The README's first command: a phantom case the rectal demo model never saw, segmented."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from oncoseg import verbs
from oncoseg.io.atomic import refuse_nonempty_folder
from oncoseg.io.volumes import read_image
from oncoseg.prediction import write_prediction
from oncoseg.progress import check_cancelled, report

TASK = "rectal"
# The demo model trains on phantom seeds 0.. (see docs/DEMO_MODELS.md); the demo case uses
# another seed, so what it shows is a case the model did not see.
DEMO_CASE_SEED = 2026


def demo(output: str | os.PathLike[str] = "oncoseg-demo",
         context: verbs.RunContext | None = None, overwrite: bool = False) -> Path:
    """Write the phantom case, segment it with the demo model, write every output."""
    context = context or verbs.RunContext()
    output = Path(output)
    refuse_nonempty_folder(output, overwrite, "--output ")
    roles = [role.name for role in verbs.get_task(TASK).inputs]
    with tempfile.TemporaryDirectory(prefix="oncoseg-demo-") as tmp:
        report(context.progress, "Writing a phantom case", 0, 1)
        [case] = verbs.phantom(TASK, Path(tmp) / "data", cases=1, seed=DEMO_CASE_SEED,
                               context=context)
        paths = {role: case / f"{role}.nii.gz" for role in roles}
        images = {role: read_image(path) for role, path in paths.items()}
        started = time.perf_counter()
        prediction = verbs.predict(TASK, images, "demo", context=context)
        prediction.timings["total"] = time.perf_counter() - started
        prediction.details["phantom"] = {"seed": DEMO_CASE_SEED,
                                         "note": "generated for this demo; not in the model's "
                                                 "training data"}
        check_cancelled(context.cancel)
        write_prediction(prediction, output, {r: p.name for r, p in paths.items()},
                         overwrite=overwrite)
    return output
