"""What a task's ``predict`` returns, and the one place its files are written.

Every task fills a :class:`Prediction`; :func:`write_prediction` turns it into the output folder
the CLI promises (``result.json``, ``overview.png`` and, for segmentation tasks,
``segmentation.seg.nrrd``, ``labels.nii.gz`` and ``probabilities/<segment>.nii.gz``). The folder is
built aside and moved into place at the end, so a failed or cancelled run leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import oncoseg
from oncoseg.geometry import voxel_volume_ml
from oncoseg.io.atomic import atomic_directory
from oncoseg.io.segnrrd import Segment, Segmentation, write_seg_nrrd
from oncoseg.tasks import SegmentSpec


@dataclass
class Prediction:
    task: str
    model: dict[str, Any]  # path / name, description, demo flag
    images: dict[str, sitk.Image]  # inputs as the model saw them (on the reference grid)
    display_role: str  # which image the overview shows
    segments: tuple[SegmentSpec, ...] = ()
    labels: sitk.Image | None = None  # label map on the reference grid
    probabilities: dict[str, sitk.Image] = field(default_factory=dict)  # segment name -> map
    class_probabilities: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    details: dict[str, Any] = field(default_factory=dict)  # task-specific, JSON-ready
    messages: list[str] = field(default_factory=list)  # what the user should know
    # other label maps a reviewer may compare, by name (an ensemble's members)
    alternatives: dict[str, sitk.Image] = field(default_factory=dict)

    def segment_volumes_ml(self) -> dict[str, float]:
        if self.labels is None:
            return {}
        counts = np.bincount(sitk.GetArrayViewFromImage(self.labels).ravel(),
                             minlength=max((s.label for s in self.segments), default=0) + 1)
        ml = voxel_volume_ml(self.labels)
        return {s.name: float(counts[s.label] * ml) for s in self.segments}

    def segmentation(self) -> Segmentation:
        if self.labels is None:
            raise ValueError(f"task {self.task} produced no label map")
        segments = [
            Segment(id=file_stem(s.name), name=s.name, color=s.color, label_value=s.label,
                    terminology=s.terminology.to_slicer() if s.terminology else "")
            for s in self.segments
        ]
        return Segmentation.from_label_image(self.labels, segments)


def file_stem(name: str) -> str:
    """A segment name as a portable file name: 'Rectal tumour' -> 'Rectal_tumour'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "segment"


def result_document(prediction: Prediction, input_paths: dict[str, str]) -> dict[str, Any]:
    reference = prediction.labels if prediction.labels is not None else \
        prediction.images[prediction.display_role]
    volumes = prediction.segment_volumes_ml()
    return {
        "oncoseg_version": oncoseg.__version__,
        "task": prediction.task,
        "model": prediction.model,
        "inputs": input_paths,
        "reference_grid": {
            "size": list(reference.GetSize()),
            "spacing_mm": list(reference.GetSpacing()),
            "origin_lps_mm": list(reference.GetOrigin()),
            "direction": list(reference.GetDirection()),
        },
        "timings_s": {k: round(v, 3) for k, v in prediction.timings.items()},
        "segments": [
            {"name": s.name, "label": s.label, "color": list(s.color),
             "volume_ml": round(volumes.get(s.name, 0.0), 3)}
            for s in prediction.segments
        ],
        "class_probabilities": prediction.class_probabilities,
        "details": prediction.details,
        "messages": prediction.messages,
        "files": output_files(prediction),
    }


def output_files(prediction: Prediction) -> dict[str, Any]:
    files: dict[str, Any] = {"result": "result.json", "overview": "overview.png"}
    if prediction.labels is not None:
        files["segmentation"] = "segmentation.seg.nrrd"
        files["labels"] = "labels.nii.gz"
    if prediction.probabilities:
        files["probabilities"] = {name: f"probabilities/{file_stem(name)}.nii.gz"
                                  for name in prediction.probabilities}
    return files


def write_prediction(prediction: Prediction, output: str | os.PathLike[str],
                     input_paths: dict[str, str], overwrite: bool = False) -> Path:
    """Write the whole output folder, or nothing."""
    from oncoseg.overview import save_overview

    with atomic_directory(output, overwrite) as folder:
        files = output_files(prediction)
        if prediction.labels is not None:
            write_seg_nrrd(prediction.segmentation(), folder / files["segmentation"])
            sitk.WriteImage(prediction.labels, str(folder / files["labels"]), useCompression=True)
        for name, relative in files.get("probabilities", {}).items():
            path = folder / relative
            path.parent.mkdir(exist_ok=True)
            sitk.WriteImage(sitk.Cast(prediction.probabilities[name], sitk.sitkFloat32),
                            str(path), useCompression=True)
        save_overview(prediction, folder / files["overview"])
        document = result_document(prediction, input_paths)
        text = json.dumps(document, indent=2) + "\n"
        (folder / files["result"]).write_text(text, encoding="utf-8")
    return Path(output)
