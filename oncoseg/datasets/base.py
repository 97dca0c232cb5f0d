"""Cases, data sets, their checks, fingerprints and patient-level splits."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.segmentation_labels import (
    declared_values,
    label_image,
    matched_segments,
    on_lattice,
    segmentation_grid,
    segments_named_in,
)
from oncoseg.errors import InputError
from oncoseg.io.atomic import write_text_atomic
from oncoseg.io.volumes import volume_information

if TYPE_CHECKING:
    from oncoseg.io.volumes import ReadResult
    from oncoseg.tasks import SegmentSpec

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Voxels a case's label file marks as not annotated (nnU-Net v2's "ignore" label, declared in its
# dataset.json), as they appear in the label arrays a task trains and evaluates on: a value no
# task uses for a structure, so a task that does not take it refuses the file.
IGNORE_LABEL = 255


def check_case_id(case_id: str, where: str) -> str:
    """Case ids become file and folder names: no separators, no '..', nothing hidden."""
    if not _SAFE_ID.match(case_id) or ".." in case_id:
        raise InputError(f"case '{case_id}'", f"in {where} is not a safe case id (letters, "
                         "digits, '.', '_' and '-' only; no path separators)")
    return case_id


# A file named as a label file plus this (``label_fraction.nii.gz``) holds that label's partial
# volume; it is neither a reader's label nor an image.
FRACTION_SUFFIX = "_fraction"


@dataclass
class Case:
    """One case: image paths by role, label paths by name, and what else the layout knows."""

    id: str
    images: dict[str, Path]
    labels: dict[str, Path] = field(default_factory=dict)
    patient: str = ""  # splits keep a patient's cases together
    info: dict[str, Any] = field(default_factory=dict)
    # a label's partial volume by the label's name: each voxel's share (0..1) inside the
    # structure, where the data set has it (``label_fraction.nii.gz`` beside ``label.nii.gz``)
    fractions: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.patient:
            self.patient = self.id

    def read(self, role: str) -> sitk.Image:
        """The role's volume in the canonical orientation (training and evaluation see every
        case in one axis order, as prediction does; see :mod:`oncoseg.orientation`)."""
        from oncoseg.orientation import to_canonical

        return to_canonical(self.read_stored(role))

    def read_stored(self, role: str) -> sitk.Image:
        """The role's volume as its file stores it, what ``predict`` is given (its results come
        back on this grid)."""
        return self.read_input(role).image

    def series_choice(self, role: str) -> str | None:
        """Which DICOM series a role's folder means where it holds several (UID, number or
        description pattern): the layout's per-role choice (``info['series']``), or for a
        case of one image the series its structure set references (``info['series_uid']``)."""
        chosen = self.info.get("series", {}).get(role)
        if chosen is None and len(self.images) == 1:
            chosen = self.info.get("series_uid")
        return chosen or None

    def read_input(self, role: str) -> ReadResult:
        """:meth:`read_stored`'s volume with what ``predict`` tells about its reading (a DICOM
        series resampled onto a regular grid, placements that tools disagree on) and the
        DICOM series it came from. Medical Segmentation Decathlon cases keep all channels in
        one 4D file; ``info['channels']`` then says which channel a role is."""
        from oncoseg.io.volumes import read_volume

        volume = read_volume(self.images[role], self.series_choice(role))
        channel = self.info.get("channels", {}).get(role)
        if channel is None:
            return volume
        image = volume.image
        if image.GetDimension() != 4 or channel >= image.GetSize()[3]:
            raise InputError(f"case '{self.id}'", f"{self.images[role].name} should hold "
                             f"channel {channel} ({role}) along a fourth axis; its size is "
                             f"{image.GetSize()}")
        size = list(image.GetSize())
        size[3] = 0
        volume.image = sitk.Extract(image, size, [0, 0, 0, channel])
        return volume

    def label_on(self, reference: sitk.Image, role: str,
                 values: Collection[int] | None = None,
                 takes_ignore: bool = False,
                 segments: Sequence[SegmentSpec] | None = None) -> np.ndarray:
        """The case's (first) label file on ``reference``, the ``role`` image it is read
        with (:func:`label_file_on`), in the task's values: a segmentation by its segments'
        names, a label map whose data set names its values (dataset.json) by those names,
        each as the task's segment of that name (``segments``); a case without one is an
        input error. Where the data set declares an ignore label (nnU-Net's, for voxels nobody
        annotated), a task whose training can leave voxels out (``takes_ignore``) gets them as
        :data:`IGNORE_LABEL`; any other task refuses such a file, saying what the value
        means."""
        ignore = self.ignore_value
        declared = declared_values(self.info.get("labels"), segments, f"case '{self.id}'")
        if values is not None and ignore is not None and takes_ignore:
            values = {*values, ignore}
        label = label_file_on(self.label_file, reference, self.id, role, values, ignore,
                              segments, declared[0] if declared else None)
        if ignore is not None and takes_ignore:
            label = np.where(label == ignore, IGNORE_LABEL, label).astype(label.dtype)
        return label

    @property
    def label_file(self) -> Path:
        """The case's (first) label file; a case without one is an input error."""
        if not self.labels:
            raise InputError(f"case '{self.id}'", "has no label file")
        return Path(sorted(self.labels.values())[0])

    def annotated_segments(self, segments: Sequence[SegmentSpec]) -> list[str] | None:
        """The task's segments the case's labels name, as a Slicer segmentation does (a
        segment drawn empty counts: it says "none here") or its data set's dataset.json; None
        for a label map no one names, which cannot say which structures were looked for."""
        named = segments_named_in(self.label_file)
        if named is None:
            declared = declared_values(self.info.get("labels"), segments, f"case '{self.id}'")
            return declared[1] if declared else None
        return [spec.name for spec in segments
                if spec.name in matched_segments(named, segments, self.id, self.label_file)]

    @property
    def ignore_value(self) -> int | None:
        """The label value the case's data set declares as nnU-Net's "ignore" (None when it
        declares none)."""
        value = (self.info.get("labels") or {}).get("ignore")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None


def label_file_on(path: Path, reference: sitk.Image, case_id: str, role: str,
                  values: Collection[int] | None = None,
                  ignore: int | None = None,
                  segments: Sequence[SegmentSpec] | None = None,
                  remap: Mapping[int, int] | None = None) -> np.ndarray:
    """A case's label file resampled onto ``reference`` (nearest neighbour; exact where it
    shares the grid), as an integer array (z, y, x), its values taken through ``remap`` where
    its data set names them (:func:`declared_values`). A Slicer segmentation or a DICOM SEG is
    read by its segments' names, each at the value of the task's segment of that name
    (``segments``);
    until 2026-12-07 its own values were taken, which follow the order its segments were
    drawn in. A file holding values that are not whole numbers (a map resampled with
    interpolation, a probability map) or, with ``values``, any label outside them is an
    input error naming the case, as nnU-Net's data set check refuses it: training would take
    such voxels for background, or for the structure."""
    from oncoseg.geometry import resample_to_reference
    from oncoseg.orientation import to_canonical

    path = Path(path)
    label = sitk.GetArrayFromImage(resample_to_reference(
        to_canonical(label_image(path, case_id, segments)), reference, "nearest",
        names=(f"{case_id}/{path.name}", role)))
    where = f"case '{case_id}'"
    if label.dtype.kind == "f":
        fractional = label[np.isfinite(label) & (label != np.rint(label))]
        if fractional.size or not np.isfinite(label).all():
            shown = fractional[0] if fractional.size else "NaN or infinity"
            raise InputError(where, f"label file {path.name} holds values that are not whole "
                             f"numbers (e.g. {shown}): a label map holds one label per voxel "
                             "(a probability map, or a map resampled with interpolation?)")
        label = label.astype(np.int32)
    if remap:
        undescribed = sorted(_values_in(label) - set(remap) - {0, ignore})
        if undescribed:
            raise InputError(where, f"label file {path.name} holds label(s) "
                             f"{', '.join(map(str, undescribed[:8]))}, which its data set's "
                             "dataset.json does not describe")
        if any(old != new for old, new in remap.items()):
            lookup = np.arange(max(int(label.max(initial=0)), *remap) + 1, dtype=label.dtype)
            for old, new in remap.items():
                lookup[old] = new
            label = lookup[label]
    if values is not None:
        unexpected = sorted(_values_in(label) - set(values))
        if ignore in unexpected:
            raise InputError(where, f"label file {path.name} holds {ignore}, the data set's "
                             "ignore label (voxels nobody annotated, dataset.json): this "
                             "task trains and evaluates on fully annotated cases only")
        if unexpected:
            raise InputError(where, f"label file {path.name} holds label(s) "
                             f"{', '.join(map(str, unexpected[:8]))}, which the task does not "
                             f"have (its labels: {', '.join(map(str, sorted(values)))})")
    return label


def _values_in(label: np.ndarray) -> set[int]:
    found: set[int] = set()
    for slab in np.array_split(label, max(1, len(label) // 16)):  # bounded copies
        found.update(int(v) for v in np.unique(slab))
    return found


@dataclass
class Dataset:
    root: Path
    layout: str
    cases: list[Case]

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)

    def fingerprint(self) -> str:
        """Changes when any case, file name or file size changes (cheap: no pixel reads)."""
        digest = hashlib.sha256(self.layout.encode())
        for case in sorted(self.cases, key=lambda c: c.id):
            digest.update(case.id.encode())
            for name, path in sorted({**case.images, **case.labels}.items()):
                size = path.stat().st_size if path.is_file() else -1
                digest.update(f"{name}={path.name}:{size}".encode())
        return digest.hexdigest()[:16]

    def provenance(self, reference_role: str, **split: Any) -> dict[str, Any]:
        """What a model file records about the data it was trained on: where, which layout,
        the fingerprint, the ``split`` (train / validation ids ...) and the reference images'
        geometry (spacing and field of view ranges, from the headers), against which a
        cohort's quality control flags cases unlike anything the model saw."""
        from oncoseg.quality import training_geometry

        grids = [g for g in (_header_grid(c, reference_role) for c in self.cases) if g]
        geometry = training_geometry(grids) if grids else {}
        stated = stated_license(self.root)
        return {"root": str(self.root), "layout": self.layout, "fingerprint": self.fingerprint(),
                **split, **({"geometry": geometry} if geometry else {}),
                **({"license": stated} if stated else {})}

    def split(self, validation_fraction: float = 0.2, seed: int = 0,
              save_to: str | os.PathLike[str] | None = None) -> tuple[list[Case], list[Case]]:
        """Training and validation cases, split by patient, reproducible from ``seed``.

        With ``save_to``, the split is written as JSON; an existing split file is read back
        instead, so resumed and repeated runs use the same split.
        """
        if save_to is not None and Path(save_to).is_file():
            saved = json.loads(Path(save_to).read_text(encoding="utf-8"))
            by_id = {c.id: c for c in self.cases}
            missing = [i for i in saved["train"] + saved["validation"] if i not in by_id]
            if missing:
                raise InputError(str(save_to), f"names case '{missing[0]}', which the data set "
                                 "no longer has")
            return [by_id[i] for i in saved["train"]], [by_id[i] for i in saved["validation"]]
        patients = sorted({c.patient for c in self.cases})
        rng = np.random.default_rng(seed)
        order = [patients[i] for i in rng.permutation(len(patients))]
        n_val = max(1, round(len(patients) * validation_fraction)) if len(patients) > 1 else 0
        val_patients = set(order[:n_val])
        train = [c for c in self.cases if c.patient not in val_patients]
        validation = [c for c in self.cases if c.patient in val_patients]
        if save_to is not None:
            # every process of a torchrun job computes the same split and may write it at the
            # same moment: the same text, so the last atomic rename wins harmlessly
            write_text_atomic(save_to, json.dumps({
                "seed": seed, "validation_fraction": validation_fraction,
                "fingerprint": self.fingerprint(), "train": [c.id for c in train],
                "validation": [c.id for c in validation]}, indent=2) + "\n", overwrite=True)
        return train, validation


def stated_license(root: str | os.PathLike[str]) -> str:
    """The licence a data set states of itself: the ``licence`` (or ``license``) of its
    ``dataset.json``, as the Medical Segmentation Decathlon and nnU-Net write it; "" where it
    states none. A model trained on it records this beside its own licence: weights learnt
    from non-commercial data are what users of the peers ask about most."""
    try:
        document = json.loads((Path(root) / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(document, dict):
        return ""
    value = document.get("licence", document.get("license", ""))
    return value.strip() if isinstance(value, str) else ""


def _header_grid(case: Case, role: str) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
    """(spacing, size) of a case's role from headers only: a volume file's, a folder of PNG
    slices' names, or a DICOM series' slice planes (rows, columns, spacing, the distance
    between planes); None where none says (an unreadable file)."""
    path = case.images.get(role)
    if path is None:
        return None
    try:
        if path.is_file():
            header = volume_information(path)
            if header.GetDimension() < 3:
                return None
            return tuple(header.GetSpacing())[:3], tuple(header.GetSize())[:3]
        from oncoseg.io.dicom_series import choose_dicom_series, series_planes
        from oncoseg.io.png_slices import SLICE_THICKNESS_MM, slice_files

        slices = slice_files(path)
        if slices:  # the UW-Madison layout: size and spacing are in the file names
            _, _, (width, height), (sx, sy) = slices[0]
            return (sx, sy, SLICE_THICKNESS_MM), (width, height, len(slices))
        planes = series_planes(choose_dicom_series(path, case.series_choice(role)))
    except (RuntimeError, InputError, OSError):
        return None
    if not planes or len(planes) < 2:
        return None
    steps = np.diff([np.dot(p.position, planes[0].normal) for p in planes])
    first = planes[0]
    return ((first.pixel_spacing[1], first.pixel_spacing[0], float(np.median(np.abs(steps)))),
            (first.columns, first.rows, len(planes)))


def check_files(case: Case, where: str) -> None:
    """Every file exists (an image may be a DICOM series folder, its series chosen where it
    holds several), and each label lies on the grid of an image of its case."""
    for role, path in {**case.images, **case.labels}.items():
        if not path.is_file() and not (role in case.images and path.is_dir()):
            raise InputError(f"case '{case.id}'", f"in {where}: the {role} file {path.name} "
                             "is missing")
    grids = {role: _series_grid(case, role, path) if path.is_dir()
             else _grid(case, role, path, where) for role, path in case.images.items()}
    for name, path in case.labels.items():
        segmentation = segments_named_in(path) is not None
        grid = segmentation_grid(path) if segmentation else _grid(case, name, path, where)
        fits = on_lattice if segmentation else _same
        if grids and not any(fits(grid, g) for g in grids.values()):
            raise InputError(f"case '{case.id}'", f"in {where}: the {name} file "
                             f"{path.name} does not lie on the grid of any image of the case "
                             f"(its size {grid[0]}, spacing {tuple(round(s, 4) for s in grid[1])})")


def _series_grid(case: Case, role: str, path: Path) -> tuple:
    """A DICOM folder's grid as :func:`_grid` gives a file's, from its headers."""
    from oncoseg.io.dicom_series import choose_dicom_series, series_grid

    try:
        layout = series_grid(choose_dicom_series(path, case.series_choice(role)))
    except InputError as error:
        raise InputError(f"case '{case.id}'", f"its {role} ({error.what}): "
                         f"{error.problem}") from None
    return layout.size, layout.spacing, layout.origin, tuple(layout.direction)


def _grid(case: Case, role: str, path: Path, where: str) -> tuple:
    try:
        info = volume_information(path)
    except (RuntimeError, InputError):
        raise InputError(f"case '{case.id}'", f"in {where}: the {role} file {path.name} is not "
                         "a readable image") from None
    size, spacing, origin = info.GetSize(), info.GetSpacing(), info.GetOrigin()
    direction = np.asarray(info.GetDirection()).reshape(len(size), len(size))
    # a 4D (channels) image's grid is its first three axes
    return size[:3], spacing[:3], origin[:3], tuple(direction[:3, :3].ravel())


def _same(a: tuple, b: tuple, tolerance: float = 1e-3) -> bool:
    return a[0] == b[0] and all(np.allclose(x, y, atol=tolerance) for x, y in zip(a[1:], b[1:],
                                                                                   strict=True))
