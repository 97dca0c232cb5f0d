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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import oncoseg
from oncoseg.geometry import voxel_volume_ml
from oncoseg.io.atomic import atomic_directory
from oncoseg.io.segnrrd import Segment, Segmentation, write_seg_nrrd
from oncoseg.orientation import onto_grid
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
    # the method's own typed result beyond labels and maps, for front ends to use as it is
    # (rectal: its Candidates; staging: its StagingScores); ``details`` is its JSON view.
    # One that holds voxels offers ``onto_grid(source, grid)``, applied with the prediction's.
    extra: Any = None

    def segment_volumes_ml(self) -> dict[str, float]:
        if self.labels is None:
            return {}
        ml = voxel_volume_ml(self.labels)
        counts = label_counts(self.labels, [s.label for s in self.segments])
        return {s.name: float(counts[i] * ml) for i, s in enumerate(self.segments)}

    def segmentation(self) -> Segmentation:
        if self.labels is None:
            raise ValueError(f"task {self.task} produced no label map")
        segments = [
            Segment(id=file_stem(s.name), name=s.name, color=s.color, label_value=s.label,
                    terminology=s.terminology.to_slicer() if s.terminology else "")
            for s in self.segments
        ]
        return Segmentation.from_label_image(self.labels, segments)

    def onto_grid(self, grid: sitk.Image) -> Prediction:
        """This prediction, made on the canonical form of ``grid``, with every image (labels,
        probability maps, the inputs as the model saw them, alternatives) back on ``grid``."""
        extra = self.extra
        if hasattr(extra, "onto_grid") and self.labels is not None:
            extra = extra.onto_grid(self.labels, grid)
        return replace(
            self,
            extra=extra,
            images={r: onto_grid(i, grid) for r, i in self.images.items()},
            labels=None if self.labels is None else onto_grid(self.labels, grid),
            probabilities={n: onto_grid(i, grid) for n, i in self.probabilities.items()},
            alternatives={n: onto_grid(i, grid) for n, i in self.alternatives.items()},
        )


def label_counts(labels: sitk.Image, values: list[int]) -> list[int]:
    """Voxels of each label value, counted slab by slab (``np.bincount`` converts what it is
    given to 64-bit integers: 8 GB for a 1024^3 label map at once)."""
    array = sitk.GetArrayViewFromImage(labels)
    counts = np.zeros(max(values, default=0) + 1, np.int64)
    step = max(1, COUNT_SLAB_VOXELS // max(1, array[0].size)) if array.size else 1
    for start in range(0, array.shape[0], step):
        slab = array[start:start + step].ravel()
        found = np.bincount(slab, minlength=counts.size)
        counts += found[:counts.size]
    return [int(counts[v]) for v in values]


# Voxels counted at a time by label_counts; and the most voxels the overview picture is drawn
# from: a larger prediction is shown on a coarser copy of its grid (one slice of a 1024^3 CT is
# drawn from a 256^3 copy, not from a float copy of the whole CT).
COUNT_SLAB_VOXELS = 1 << 24
OVERVIEW_MAX_VOXELS = 256 ** 3


@dataclass
class _OverviewPrediction(Prediction):
    """A prediction on a coarser grid for the overview picture, with the volumes of the full
    one (the picture's title quotes them)."""

    volumes_ml: dict[str, float] = field(default_factory=dict)

    def segment_volumes_ml(self) -> dict[str, float]:
        return self.volumes_ml


def overview_prediction(prediction: Prediction) -> Prediction:
    """What the overview picture is drawn from: the prediction itself, or for a large one (or
    one whose probability maps lie on another grid, as a large CT's do) its images resampled
    onto a grid of at most :data:`OVERVIEW_MAX_VOXELS` covering the same box."""
    from oncoseg.geometry import grid_from_box, same_grid

    display = prediction.images[prediction.display_role]
    voxels = float(np.prod(display.GetSize(), dtype=np.float64))
    others = [*prediction.probabilities.values()] + \
        ([] if prediction.labels is None else [prediction.labels])
    if voxels <= OVERVIEW_MAX_VOXELS and all(same_grid(display, o) for o in others):
        return prediction
    factor = max(1.0, (voxels / OVERVIEW_MAX_VOXELS) ** (1 / 3))
    grid = grid_from_box(display.GetSize(), display.GetSpacing(), display.GetOrigin(),
                         display.GetDirection(), np.asarray(display.GetSpacing()) * factor)

    def onto(image: sitk.Image, interpolation: int, pixel: int) -> sitk.Image:
        # sitk.Resample straight from the stored type: no full-size float copy of the input
        return sitk.Resample(image, grid, sitk.Transform(), interpolation, 0.0, pixel)

    return _OverviewPrediction(
        task=prediction.task, model=prediction.model,
        images={prediction.display_role: onto(display, sitk.sitkLinear, sitk.sitkFloat32)},
        display_role=prediction.display_role, segments=prediction.segments,
        labels=None if prediction.labels is None else
        onto(prediction.labels, sitk.sitkNearestNeighbor, sitk.sitkUInt8),
        probabilities={name: onto(image, sitk.sitkLinear, sitk.sitkFloat32)
                       for name, image in prediction.probabilities.items()},
        class_probabilities=prediction.class_probabilities, details=prediction.details,
        messages=prediction.messages, volumes_ml=prediction.segment_volumes_ml())


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
        save_overview(overview_prediction(prediction), folder / files["overview"])
        document = result_document(prediction, input_paths)
        text = json.dumps(document, indent=2) + "\n"
        (folder / files["result"]).write_text(text, encoding="utf-8")
    return Path(output)
