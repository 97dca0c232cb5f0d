"""Writing a data set in another layout (nnU-Net raw), e.g. to compare with nnU-Net itself."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, Dataset
from oncoseg.errors import InputError
from oncoseg.geometry import image_like
from oncoseg.io.atomic import atomic_directory
from oncoseg.io.volumes import read_volume, write_image
from oncoseg.progress import CancelToken, ProgressCallback
from oncoseg.tasks import Task


def write_remapped(source: Path, target: Path, mapping: Mapping[int, int]) -> None:
    image = read_volume(source).image  # any format a case may hold (FreeSurfer, MINC)
    array = sitk.GetArrayFromImage(image)
    out = array.copy()
    for old, new in mapping.items():
        out[array == old] = new
    sitk.WriteImage(image_like(out, image), str(target), useCompression=True)


# a case's label map on a grid and the structures it annotated (a task method's
# ``reference_labels``)
LabelReader = Callable[[Case, sitk.Image], tuple[np.ndarray, list[str]]]


def _nifti_copy(source: Path, target: Path, series: str | None = None) -> sitk.Image | None:
    """``source`` as ``target`` (.nii.gz): a NIfTI file copied as it is (None returned), any
    other volume (a DICOM series, PNG slices, NRRD ...) read and written (its image returned)."""
    if source.is_file() and source.name.lower().endswith(".nii.gz"):
        shutil.copyfile(source, target)
        return None
    image = read_volume(source, series).image
    write_image(image, target)
    return image


def to_nnunet(dataset: Dataset, output: str | os.PathLike[str], roles: Sequence[str],
              labels: Mapping[str, int], label_name: str = "label",
              overwrite: bool = False, label_reader: LabelReader | None = None) -> Path:
    """nnU-Net v2 raw layout: imagesTr/<case>_<channel>.nii.gz, labelsTr/, dataset.json.
    Volumes that are not NIfTI files (a DICOM series, PNG slices) are converted; a case whose
    labels are not a file (an RT structure set, run-length masks) gets them from
    ``label_reader`` (the task method's ``reference_labels``) on its first channel's grid.

    A case that did not annotate every structure (a structure set without a bladder contour)
    cannot say so with labels alone: its background may hold the missing organ. nnU-Net's way
    is its ignore label (the highest value, named "ignore" in dataset.json): every voxel such
    a case leaves unlabelled is written as ignore, so nnU-Net learns nothing there rather than
    learning that the organ is background. (OncoSeg's own training keeps that background, as
    "background or the missing organ", paper 003's loss; nnU-Net has no such class.)"""
    ignore = max(labels.values()) + 1
    partial: list[str] = []
    with atomic_directory(output, overwrite) as folder:
        (folder / "imagesTr").mkdir()
        (folder / "labelsTr").mkdir()
        for case in dataset.cases:
            converted = [_nifti_copy(Path(case.images[role]),
                                     folder / "imagesTr" / f"{case.id}_{index:04d}.nii.gz",
                                     case.info.get("series_uid"))
                         for index, role in enumerate(roles)]
            target = folder / "labelsTr" / f"{case.id}.nii.gz"
            label_map = case.info.get("label_map")
            if label_name in case.labels and label_map:  # e.g. BraTS 2017-2021: enhancing 4
                write_remapped(case.labels[label_name], target,
                               {int(k): int(v) for k, v in label_map.items()})
            elif label_name in case.labels:
                _nifti_copy(Path(case.labels[label_name]), target)
            elif label_reader is not None:
                first = converted[0] if converted[0] is not None else \
                    read_volume(folder / "imagesTr" / f"{case.id}_0000.nii.gz").image
                array, annotated = label_reader(case, first)
                array = array.astype(np.uint8)
                if set(labels) - {"background", *annotated}:
                    partial.append(case.id)
                    array[array == 0] = ignore
                write_image(image_like(array, first), target)
        description = {
            "channel_names": {str(i): role for i, role in enumerate(roles)},
            "labels": {**labels, **({"ignore": ignore} if partial else {})},
            "numTraining": len(dataset.cases),
            "file_ending": ".nii.gz",
            "name": f"converted from {dataset.layout} by OncoSeg",
        }
        if partial:
            description["description"] = (
                f"{len(partial)} case(s) did not annotate every structure "
                f"({', '.join(partial[:5])}{', ...' if len(partial) > 5 else ''}): their "
                f"unlabelled voxels are the ignore label {ignore}")
        (folder / "dataset.json").write_text(json.dumps(description, indent=2) + "\n",
                                             encoding="utf-8")
    return Path(output)


def phantoms_as_nnunet(task: Task, output: str | os.PathLike[str], cases: int, seed: int,
                       progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None, orientation: str = "LPS",
                       tilt_degrees: float = 0.0) -> list[Path]:
    """A segmentation task's phantoms written in nnU-Net raw layout (via its native layout)."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import PhantomOptions, RunContext, method_of

    if cases < 1:
        raise InputError("--cases", "must be at least 1")
    if task.kind != "segmentation":
        raise InputError("--layout nnunet", f"task '{task.name}' is not a segmentation task")
    parent = Path(output).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        native = method_of(task).phantom(
            Path(tmp) / "native", PhantomOptions(cases, seed, "native", orientation,
                                                 tilt_degrees),
            RunContext(progress=progress, cancel=cancel))
        roles = [r.name for r in task.inputs]
        dataset = read_dataset(Path(tmp) / "native", "auto", roles)
        labels = {"background": 0, **{s.name: s.label for s in task.segments}}
        to_nnunet(dataset, output, roles, labels,
                  label_reader=getattr(method_of(task), "reference_labels", None))
    return native
