"""The README's first command: a phantom case the rectal demo model never saw, segmented.

The output folder holds the results and, in ``input/``, the study they were computed from, so
that what ``result.json`` names exists and the T2w can be opened beside the segmentation. The
folder appears whole or not at all, as every ``predict`` output does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncoseg import verbs
from oncoseg.io.atomic import atomic_directory, refuse_nonempty_folder
from oncoseg.io.volumes import read_image
from oncoseg.prediction import write_prediction
from oncoseg.progress import check_cancelled

TASK = "rectal"
# The demo model trains on phantom seeds 0.. (see docs/DEMO_MODELS.md); the demo case uses
# another seed, so what it shows is a case the model did not see.
DEMO_CASE_SEED = 2026
INPUT_FOLDER = "input"  # the study, inside the output folder
# What each input file is, for the summary (the phantom's own label is kept for comparison).
INPUT_NAMES = {"t2w": "T2-weighted MR", "dwi_b0": "DWI b0 (the reference grid)",
               "dwi_b1000": "DWI b1000", "label": "the phantom's true tumour (for comparison)",
               "label_fraction": "the true tumour's share of each voxel (its partial volume)"}


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its files, and the ``result.json`` it wrote, for the summary."""

    output: Path
    document: dict[str, Any]
    inputs: dict[str, str]  # file name in input/ -> what it is


def demo(output: str | os.PathLike[str] = "oncoseg-demo",
         context: verbs.RunContext | None = None, overwrite: bool = False) -> DemoResult:
    """Write the phantom case into ``output/input/``, segment it with the demo model and write
    every output beside it."""
    context = context or verbs.RunContext()
    output = Path(output)
    refuse_nonempty_folder(output, overwrite, "--output ")
    roles = [role.name for role in verbs.get_task(TASK).inputs]
    with atomic_directory(output, overwrite) as folder:
        [case] = verbs.phantom(TASK, folder / ".phantom", cases=1, seed=DEMO_CASE_SEED,
                               context=context)
        study = folder / INPUT_FOLDER
        case.rename(study)
        shutil.rmtree(folder / ".phantom")
        paths = {role: study / f"{role}.nii.gz" for role in roles}
        images = {role: read_image(path) for role, path in paths.items()}
        started = time.perf_counter()
        prediction = verbs.predict(TASK, images, "demo", context=context)
        prediction.timings["total"] = time.perf_counter() - started
        prediction.details["phantom"] = {"seed": DEMO_CASE_SEED,
                                         "note": "generated for this demo; not in the model's "
                                                 "training data"}
        check_cancelled(context.cancel)
        results = write_prediction(prediction, folder / ".results",
                                   {r: f"{INPUT_FOLDER}/{p.name}" for r, p in paths.items()})
        for item in results.iterdir():
            item.rename(folder / item.name)
        results.rmdir()
        document = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        inputs = {p.name: INPUT_NAMES.get(p.name.split(".")[0], "") for p in
                  sorted(study.iterdir()) if p.name.endswith(".nii.gz")}
    return DemoResult(output, document, inputs)


def summary_lines(result: DemoResult) -> list[str]:
    """What the demo did and where everything is, in a few lines for the terminal: the
    segment, its volume, the candidate components, the time, each file, and how to open the
    result (the ``oncoseg demo`` output that used to be one line and no next step)."""
    document, out = result.document, result.output
    [segment] = document["segments"]
    details = document["details"]
    candidates = details.get("candidates", [])
    kept = [c for c in candidates if c.get("selected")]
    timings = document["timings_s"]
    lines = [
        f"Segmented: {segment['name']} on a synthetic rectal MR study (T2w, DWI b0 and b1000; "
        f"phantom seed {DEMO_CASE_SEED}, not in the demo model's training data)",
        f"Volume: {segment['volume_ml']:.2f} mL",
        f"Candidates: {len(candidates)} connected component(s) above the threshold"
        + "".join(f"; kept #{c['index']} ({c['volume_ml']:.2f} mL, mean p "
                  f"{c['mean_probability']:.2f})" for c in kept),
        f"Time: {timings['total']:.1f} s for the prediction ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total") + ")",
    ]
    lines += [f"note: {message}" for message in document.get("messages", [])]
    files = document["files"]
    described = {"overview": "the T2w with the tumour outline and the probability overlay",
                 "segmentation": "Slicer's segmentation file (on the DWI b0 grid)",
                 "labels": "the label map (NIfTI)",
                 "result": "volume, candidates, timings, inputs, model"}
    rows = [(f"{INPUT_FOLDER}/{name}", what) for name, what in result.inputs.items()]
    rows += [(files[key], what) for key, what in described.items() if key in files]
    rows += [(path, f"{name} probability (0-1)")
             for name, path in files.get("probabilities", {}).items()]
    width = max(len(path) for path, _ in rows) + 2
    lines.append(f"Demo results written to {out}/")
    lines += [f"  {path:<{width}}{what}" for path, what in rows]
    root = out.resolve()
    volume = root / INPUT_FOLDER / "t2w.nii.gz"
    segmentation = root / files.get("segmentation", "segmentation.seg.nrrd")
    # JSON strings are Python literals in double quotes, so the shell quoting stays readable
    code = (f"slicer.util.loadVolume({json.dumps(str(volume))}); "
            f"slicer.util.loadSegmentation({json.dumps(str(segmentation))})")
    lines += [
        "Open it in 3D Slicer: drag the input/t2w.nii.gz and segmentation.seg.nrrd files onto "
        "its window (or File > Add Data), or start it with both loaded:",
        f"  Slicer --python-code {shlex.quote(code)}",
        "  (the T2w as acquired may lie a few mm off the segmentation: the registration that "
        "corrects it is in result.json, details.registration)",
        f"Or look at the picture: {out / files['overview']}",
    ]
    return lines
