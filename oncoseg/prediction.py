"""What a task's ``predict`` returns, and the one place its files are written.

Every task fills a :class:`Prediction`; :func:`write_prediction` turns it into the output folder
the CLI promises (``result.json``, ``overview.png`` and, for segmentation tasks,
``segmentation.seg.nrrd``, ``labels.nii.gz`` and ``probabilities/<segment>.nii.gz``). The folder is
built aside and moved into place at the end, so a failed or cancelled run leaves nothing.

Probability maps are written in one of :data:`PROBABILITY_FORMATS`, by default ``uint8``: each
voxel ``round(p * 255)`` with NIfTI's ``scl_slope = 1/255``, which NIfTI readers (SimpleITK, 3D
Slicer, nibabel) read back as float ``p`` to within 1/510 (:func:`oncoseg.io.nifti.
write_scaled_uint8`). At 512 x 512 x 150 one map takes about 0.1 s and 1 MB, against 1.5-4 s
and 56-129 MB as gzip-compressed float32 (``float32-gzip``, the earlier format) or 0.3 s and
150 MB as uncompressed float32 (``float32``, a ``.nii`` file). NIfTI has no float16 type (nor
has NRRD), so no float16 is offered. ``result.json`` names the files and says how the maps are
stored.

A task may hand its maps over as :class:`ResampledMaps`, kept on the grid the network saw and
resampled onto the output grid only when one is read: the writer then holds one full-size map
at a time instead of every one (five float32 maps of a 512 x 512 x 150 CT take 790 MB).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import oncoseg
from oncoseg.errors import InputError
from oncoseg.geometry import check_overlap, same_grid, voxel_volume_ml
from oncoseg.io.atomic import atomic_directory
from oncoseg.io.nifti import PROBABILITY_SCALE, write_scaled_uint8
from oncoseg.io.segnrrd import Segment, Segmentation, write_seg_nrrd
from oncoseg.orientation import onto_grid
from oncoseg.tasks import SegmentSpec
from oncoseg.tiling import Geometry, linear_slabs, resample_linear

# How probability maps are stored: format -> file ending. uint8 is round(p * 255) with
# scl_slope = 1/255 (read back as float by NIfTI readers); float32 as computed, without or with
# gzip (the latter the format before uint8 became the default: 10-40x slower to write).
PROBABILITY_FORMATS = {"uint8": ".nii.gz", "float32": ".nii", "float32-gzip": ".nii.gz"}
DEFAULT_PROBABILITY_FORMAT = "uint8"


class ResampledMaps(Mapping[str, sitk.Image]):
    """Probability maps held on the grid they were computed on (a model's working grid) and
    resampled (linear, as float32) onto ``grid`` each time one is read, never cached: a reader
    that takes one map at a time (the overview) holds one full-size map, not all, and the
    writer none (:meth:`slabs`). The values are those of ``sitk.Resample`` (linear, 0 outside)
    to float rounding (:func:`oncoseg.tiling.linear_slabs`: 2e-7 on maps in [0, 1])."""

    def __init__(self, sources: Mapping[str, sitk.Image], grid: sitk.Image,
                 grid_name: str = "reference"):
        self.sources = dict(sources)
        self.grid = grid
        self.grid_name = grid_name

    def onto(self, name: str, grid: sitk.Image) -> sitk.Image:
        """Map ``name`` resampled from its own grid straight onto ``grid``."""
        source = self.sources[name]
        if same_grid(source, grid, tolerance=1e-6):
            return source
        check_overlap(source, grid, name, self.grid_name)
        return resample_linear(source, grid)

    def slabs(self, name: str) -> Iterator[np.ndarray]:
        """Map ``name`` on :attr:`grid` as float32 (z, y, x) slabs, first slice first: what
        ``self[name]`` holds, never whole."""
        source = self.sources[name]
        if same_grid(source, self.grid, tolerance=1e-6):
            return iter((sitk.GetArrayViewFromImage(source),))
        check_overlap(source, self.grid, name, self.grid_name)
        return linear_slabs(source, Geometry.of(self.grid))

    def retarget(self, grid: sitk.Image) -> ResampledMaps:
        """The same maps, read onto another grid."""
        return ResampledMaps(self.sources, grid, self.grid_name)

    def __getitem__(self, name: str) -> sitk.Image:
        return self.onto(name, self.grid)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def _grids_of(probabilities: Mapping[str, sitk.Image]) -> list[sitk.Image]:
    """What the maps lie on, without resampling :class:`ResampledMaps` to find out."""
    if isinstance(probabilities, ResampledMaps):
        return [probabilities.grid] if len(probabilities) else []
    return list(probabilities.values())


@dataclass
class Prediction:
    task: str
    model: dict[str, Any]  # path / name, description, demo flag
    images: dict[str, sitk.Image]  # inputs as the model saw them (on the reference grid)
    display_role: str  # which image the overview shows
    segments: tuple[SegmentSpec, ...] = ()
    labels: sitk.Image | None = None  # label map on the reference grid
    # segment name -> map (a dict, or ResampledMaps that resample each map when it is read)
    probabilities: Mapping[str, sitk.Image] = field(default_factory=dict)
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
            probabilities=self.probabilities.retarget(grid)
            if isinstance(self.probabilities, ResampledMaps) else
            {n: onto_grid(i, grid) for n, i in self.probabilities.items()},
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
    others = _grids_of(prediction.probabilities) + \
        ([] if prediction.labels is None else [prediction.labels])
    if voxels <= OVERVIEW_MAX_VOXELS and all(same_grid(display, o) for o in others):
        return prediction
    factor = max(1.0, (voxels / OVERVIEW_MAX_VOXELS) ** (1 / 3))
    grid = grid_from_box(display.GetSize(), display.GetSpacing(), display.GetOrigin(),
                         display.GetDirection(), np.asarray(display.GetSpacing()) * factor)

    def onto(image: sitk.Image, interpolation: int, pixel: int) -> sitk.Image:
        # sitk.Resample straight from the stored type: no full-size float copy of the input
        return sitk.Resample(image, grid, sitk.Transform(), interpolation, 0.0, pixel)

    maps = prediction.probabilities
    # maps kept on their own grid go straight onto the coarse one (one resampling, not two)
    shown = maps.retarget(grid) if isinstance(maps, ResampledMaps) else \
        {name: onto(image, sitk.sitkLinear, sitk.sitkFloat32) for name, image in maps.items()}

    return _OverviewPrediction(
        task=prediction.task, model=prediction.model,
        # linear_slabs: ITK's values axis by axis (a grid from grid_from_box keeps the axes)
        images={prediction.display_role: resample_linear(display, grid)},
        display_role=prediction.display_role, segments=prediction.segments,
        labels=None if prediction.labels is None else
        onto(prediction.labels, sitk.sitkNearestNeighbor, sitk.sitkUInt8),
        probabilities=shown,
        class_probabilities=prediction.class_probabilities, details=prediction.details,
        messages=prediction.messages, volumes_ml=prediction.segment_volumes_ml())


def file_stem(name: str) -> str:
    """A segment name as a portable file name: 'Rectal tumour' -> 'Rectal_tumour'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "segment"


def result_document(prediction: Prediction, input_paths: dict[str, str],
                    probability_format: str = DEFAULT_PROBABILITY_FORMAT,
                    volumes: Mapping[str, float] | None = None,
                    input_series: Mapping[str, Mapping[str, str]] | None = None
                    ) -> dict[str, Any]:
    """What ``result.json`` holds; ``volumes`` (segment name -> mL), when the caller has them
    already, spare counting the label map again; ``input_series``: each DICOM input's series,
    study, frame of reference and patient (an export checks its reference against them)."""
    reference = prediction.labels if prediction.labels is not None else \
        prediction.images[prediction.display_role]
    if volumes is None:
        volumes = prediction.segment_volumes_ml()
    document = {
        "oncoseg_version": oncoseg.__version__,
        "task": prediction.task,
        "model": prediction.model,
        "inputs": input_paths,
        **({"input_series": {r: dict(v) for r, v in input_series.items()}}
           if input_series else {}),
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
        "files": output_files(prediction, probability_format),
    }
    if prediction.probabilities:
        document["probability_maps"] = probability_storage(probability_format)
    return document


def check_probability_format(probability_format: str) -> str:
    """The format, or an :class:`InputError` naming the ones there are."""
    if probability_format not in PROBABILITY_FORMATS:
        raise InputError("probability format", f"'{probability_format}' is not one of "
                         f"{', '.join(PROBABILITY_FORMATS)}")
    return probability_format


def probability_storage(probability_format: str) -> dict[str, Any]:
    """How the maps are stored, for ``result.json``: a reader of the raw voxels (not through a
    NIfTI reader, which applies the scaling itself) needs the slope."""
    if probability_format == "uint8":
        return {"format": "uint8", "scl_slope": 1.0 / PROBABILITY_SCALE, "scl_inter": 0.0,
                "largest_error": 0.5 / PROBABILITY_SCALE}
    return {"format": "float32", "compressed": PROBABILITY_FORMATS[probability_format]
            .endswith(".gz")}


def output_files(prediction: Prediction,
                 probability_format: str = DEFAULT_PROBABILITY_FORMAT) -> dict[str, Any]:
    files: dict[str, Any] = {"result": "result.json", "overview": "overview.png"}
    if prediction.labels is not None:
        files["segmentation"] = "segmentation.seg.nrrd"
        files["labels"] = "labels.nii.gz"
    if prediction.probabilities:
        ending = PROBABILITY_FORMATS[check_probability_format(probability_format)]
        files["probabilities"] = {name: f"probabilities/{file_stem(name)}{ending}"
                                  for name in prediction.probabilities}
    return files


def write_probability_map(probabilities: Mapping[str, sitk.Image], name: str, path: Path,
                          probability_format: str) -> None:
    """Map ``name`` in the chosen format (see :data:`PROBABILITY_FORMATS`); uint8 maps of
    :class:`ResampledMaps` are written slab by slab as they are resampled."""
    if probability_format == "uint8":
        if isinstance(probabilities, ResampledMaps):
            write_scaled_uint8(probabilities.grid, path, probabilities.slabs(name))
        else:
            write_scaled_uint8(probabilities[name], path)
        return
    image = probabilities[name]
    if image.GetPixelID() != sitk.sitkFloat32:  # Cast copies even to the same type
        image = sitk.Cast(image, sitk.sitkFloat32)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith(".gz"))


def write_prediction(prediction: Prediction, output: str | os.PathLike[str],
                     input_paths: dict[str, str], overwrite: bool = False,
                     probability_format: str = DEFAULT_PROBABILITY_FORMAT,
                     input_series: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """Write the whole output folder, or nothing. Probability maps are read (and, for
    :class:`ResampledMaps`, resampled) one at a time and written in ``probability_format``."""
    from oncoseg.overview import save_overview

    check_probability_format(probability_format)
    with atomic_directory(output, overwrite) as folder:
        files = output_files(prediction, probability_format)
        if prediction.labels is not None:
            write_seg_nrrd(prediction.segmentation(), folder / files["segmentation"])
            sitk.WriteImage(prediction.labels, str(folder / files["labels"]), useCompression=True)
        for name, relative in files.get("probabilities", {}).items():
            path = folder / relative
            path.parent.mkdir(exist_ok=True)
            write_probability_map(prediction.probabilities, name, path, probability_format)
        shown = overview_prediction(prediction)
        save_overview(shown, folder / files["overview"])
        document = result_document(prediction, input_paths, probability_format,
                                   shown.segment_volumes_ml(), input_series)
        text = json.dumps(document, indent=2) + "\n"
        (folder / files["result"]).write_text(text, encoding="utf-8")
    return Path(output)
