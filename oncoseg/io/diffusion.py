"""Diffusion-weighted MR as scanners and converters store it: every b-value in one input.

Rectal MR protocols write DWI as one DICOM series (several images per slice position: one per
b-value and gradient direction), and dcm2niix turns it into one 4D NIfTI with a ``.bval`` file
(``x.nii.gz`` + ``x.bval`` + ``x.bvec``); Slicer and DTIPrep write 4D NRRD with the NA-MIC
``DWMRI_b-value`` / ``DWMRI_gradient_NNNN`` keys. :func:`read_diffusion` reads each into a
:class:`DiffusionSeries` (3D volumes on one grid, each with its b-value); :func:`choose_b_values`
picks the b0 and the high-b image a model needs and says which, in a note for the user.

Where b-values come from in DICOM, first found wins: the standard DiffusionBValue (0018,9087)
(legacy images, or the MR Diffusion functional group of enhanced multi-frame images); Siemens'
B_value (0019,100C), else the B_value of the Siemens CSA image header (0029,1010); GE's
slop_int_6 (0043,1039), first value, less the 10^9 that some GE software versions add; Philips'
DiffusionBValue (2001,1003). Private tags are found through their private creator (as pydicom
does), or at their usual place when the creator is missing and the Manufacturer is that vendor
(what Slicer's MultiVolumeImporter and dcm2niix read). Siemens mosaics (ImageType MOSAIC: one
file holding every slice of a volume as tiles) are unpacked with the CSA header's slice normal.

Images of one b-value with several gradient directions are combined into one trace-weighted
image, the geometric mean of the directions: with S_i = S0 exp(-b D_i) it is S0 exp(-b tr(D)/3),
which is what scanners' own TRACEW / isotropic images are. Where the scanner stored its own
isotropic image beside the directions (Philips does), that image is used as it is.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import image_like
from oncoseg.io.nifti import is_nifti
from oncoseg.io.other_formats import refuse_other_format
from oncoseg.io.volumes import read_volume_file

# The roles a multi-b DWI input stands for (the rectal task's inputs).
DWI_ROLE, B0_ROLE, HIGH_B_ROLE = "dwi", "dwi_b0", "dwi_b1000"
# b0: the lowest b-value, and it must be at most this (b = 50 is a usual 'b0' on bodies).
MAX_B0 = 50.0
# The high b without a model's own b-value: the highest b-value at least this.
MIN_HIGH_B = 800.0
# Two b-values are one shell when they differ by at most this (s/mm^2) or this fraction:
# converters compute b-values from gradient lengths (990, 995, 1000 for one nominal b1000), but
# protocols with b0 and b50 keep them apart.
SAME_B_ABSOLUTE, SAME_B_FRACTION = 20.0, 0.05
# GE's (0043,1039) first value carries 10^9 on some software versions (1000001000 = b 1000).
GE_B_OFFSET = 1_000_000_000

_SIEMENS, _GE, _PHILIPS = "SIEMENS MR HEADER", "GEMS_PARM_01", "Philips Imaging DD 001"
_GE_ACQ, _PHILIPS_MR = "GEMS_ACQU_01", "Philips MR Imaging DD 001"
_SIEMENS_CSA = "SIEMENS CSA HEADER"
# Derived images that are not diffusion-weighted signal (maps computed by the scanner).
_MAP_IMAGE_TYPES = ("ADC", "FA", "EADC", "EXP", "CALC_BVALUE")
_TRACE_IMAGE_TYPES = ("TRACEW", "ISOTROPIC", "TRACE")


# ---------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class DiffusionImage:
    """One diffusion-weighted volume and how it was acquired."""

    image: sitk.Image
    b_value: float  # s/mm^2
    direction: tuple[float, float, float] | None = None  # unit gradient direction, if known
    trace: bool = False  # the scanner's own trace-weighted (isotropic) image


@dataclass(frozen=True)
class Shell:
    """The images of one b-value (within :data:`SAME_B_FRACTION`)."""

    b_value: float  # the median of its images' b-values
    images: tuple[DiffusionImage, ...]

    def directions(self) -> int:
        """How many distinct gradient directions (images without one count one each)."""
        known = {tuple(np.round(i.direction, 3)) for i in self.images if i.direction is not None
                 and np.linalg.norm(i.direction) > 0}
        return len(known) + sum(1 for i in self.images if i.direction is None
                                 or np.linalg.norm(i.direction) == 0)

    def combined(self) -> tuple[sitk.Image, str]:
        """One image for the shell and how it was made (for the user's note)."""
        traces = [i for i in self.images if i.trace]
        chosen = traces or list(self.images)
        if len(chosen) == 1:
            how = "the scanner's trace-weighted image" if traces and len(self.images) > 1 \
                else ""
            return _float_image(chosen[0].image), how
        image = geometric_mean([i.image for i in chosen])
        if traces:
            return image, f"{len(chosen)} scanner trace-weighted images averaged"
        known = all(i.direction is not None and np.linalg.norm(i.direction) > 0 for i in chosen)
        count = self.directions() if known else len(chosen)
        return image, f"{count} {'directions' if known else 'images'} averaged"


@dataclass(frozen=True)
class DiffusionSeries:
    """Every diffusion-weighted volume of one acquisition, on one grid."""

    images: tuple[DiffusionImage, ...]
    name: str  # the file, folder or node it came from (messages name it)
    b_value_source: str  # where the b-values were read, e.g. "Siemens B_value (0019,100C)"
    notes: tuple[str, ...] = ()  # how the volumes were read (resampled slices, ...)

    def __post_init__(self) -> None:
        if not self.images:
            raise InputError(self.name, "holds no diffusion-weighted image")
        first = self.images[0].image
        for item in self.images[1:]:
            if not _same_grid(item.image, first):
                raise InputError(self.name, f"its b = {item.b_value:g} image is not on the grid "
                                 f"of its b = {self.images[0].b_value:g} image (size "
                                 f"{item.image.GetSize()} vs {first.GetSize()}, spacing "
                                 f"{_rounded(item.image.GetSpacing())} vs "
                                 f"{_rounded(first.GetSpacing())}): not one acquisition")

    def shells(self) -> list[Shell]:
        """The images grouped by b-value, lowest first."""
        order = sorted(self.images, key=lambda i: i.b_value)
        groups: list[list[DiffusionImage]] = []
        for item in order:
            if groups and same_b(groups[-1][0].b_value, item.b_value):
                groups[-1].append(item)
            else:
                groups.append([item])
        return [Shell(float(np.median([i.b_value for i in g])), tuple(g)) for g in groups]


@dataclass(frozen=True)
class DiffusionChoice:
    """The b0 and high-b images picked from a series, and what to tell the user."""

    b0: sitk.Image
    high_b: sitk.Image
    b0_value: float
    high_b_value: float
    note: str
    details: dict[str, Any] = field(default_factory=dict)  # JSON-ready (result.json)
    reading_notes: tuple[str, ...] = ()  # how the series was read (resampled slices, ...)

    @property
    def messages(self) -> list[str]:
        """What the user should read: the choice, then how the series was read."""
        return [self.note] + [f"dwi: {note}" for note in self.reading_notes]


def same_b(a: float, b: float) -> bool:
    return abs(a - b) <= max(SAME_B_ABSOLUTE, SAME_B_FRACTION * max(abs(a), abs(b)))


def _b_text(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 or value >= 100 else f"{value:g}"


def _rounded(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-2)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def _float_image(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 \
        else sitk.Image(image)


def geometric_mean(images: Sequence[sitk.Image]) -> sitk.Image:
    """The voxelwise geometric mean (float32), on the first image's grid: the trace-weighted
    image of directional DWIs. A voxel that is zero (or negative) in any image is zero."""
    logs = np.zeros(sitk.GetArrayViewFromImage(images[0]).shape, np.float64)
    zero = np.zeros(logs.shape, bool)
    for image in images:  # one image at a time: 64-direction series stay small in memory
        array = sitk.GetArrayViewFromImage(image).astype(np.float64)
        zero |= array <= 0
        logs += np.log(np.where(array > 0, array, 1.0))
    mean = np.exp(logs / len(images))
    mean[zero] = 0.0
    return image_like(mean.astype(np.float32), images[0])


# ------------------------------------------------------------------------------ choosing b


def choose_b_values(series: DiffusionSeries, model_b_value: float | None = None
                    ) -> DiffusionChoice:
    """b0: the lowest b-value (at most :data:`MAX_B0`). High b: the model's own b-value when
    the series has it, else the highest at least :data:`MIN_HIGH_B`. Refuses, naming the
    b-values found, when either is missing."""
    shells = series.shells()
    found = ", ".join(_b_text(s.b_value) for s in shells)
    lowest = shells[0]
    if lowest.b_value > MAX_B0:
        raise InputError(series.name, f"has no b0 image: its lowest b-value is "
                         f"{_b_text(lowest.b_value)} s/mm^2 (b-values found: {found}); the "
                         f"model needs one at b <= {MAX_B0:g}")
    candidates = shells[1:]
    matching = [s for s in candidates if model_b_value is not None
                and same_b(s.b_value, model_b_value)]
    if matching:
        high = min(matching, key=lambda s: abs(s.b_value - float(model_b_value or 0)))
        rule = "the model's b-value"
    else:
        high_enough = [s for s in candidates if s.b_value >= MIN_HIGH_B]
        if not high_enough:
            raise InputError(series.name, f"has no high-b image: b-values found: {found} "
                             f"s/mm^2; the model needs one at b >= {MIN_HIGH_B:g}"
                             + (f" (it was trained at b = {_b_text(model_b_value)})"
                                if model_b_value is not None else ""))
        high = high_enough[-1]
        rule = f"the highest >= {MIN_HIGH_B:g}" + (
            f"; the model was trained at b = {_b_text(model_b_value)}, which this series lacks"
            if model_b_value is not None else "")
    b0_image, b0_how = lowest.combined()
    high_image, high_how = high.combined()
    plural = "s" if len(shells) != 1 else ""
    note = (f"dwi: {len(shells)} b-value{plural} ({found} s/mm^2); b0 = "
            f"{_b_text(lowest.b_value)}{f' ({b0_how})' if b0_how else ''}, high b = "
            f"{_b_text(high.b_value)}{f' ({high_how})' if high_how else ''} ({rule})")
    if "averaged" in b0_how + high_how:
        note += ("; images of one b-value were averaged into one trace-weighted image "
                 "(geometric mean, what scanners' TRACEW / isotropic images are)")
    note += f"; b-values from {series.b_value_source}"
    details = {
        "source": series.name, "b_value_source": series.b_value_source,
        "b_values": [round(s.b_value, 1) for s in shells],
        "images_per_b_value": [len(s.images) for s in shells],
        "b0": round(lowest.b_value, 1), "high_b": round(high.b_value, 1),
        "high_b_rule": "model" if matching else "highest",
        "model_b_value": model_b_value, "b0_combined": b0_how or "one image",
        "high_b_combined": high_how or "one image", "reading_notes": list(series.notes),
    }
    return DiffusionChoice(b0_image, high_image, lowest.b_value, high.b_value, note, details,
                           series.notes)


def accepts_dwi_series(roles: Iterable[Any]) -> bool:
    """Whether a task with these input roles (names or InputRoles) takes ``dwi`` instead of
    ``dwi_b0`` + ``dwi_b1000``."""
    names = {getattr(r, "name", r) for r in roles}
    return B0_ROLE in names and HIGH_B_ROLE in names


def dwi_hint(role: str, roles: Iterable[Any]) -> str:
    """What to add to 'give --input ROLE=PATH' for a role a DWI series can stand in for (in a
    task with these input roles)."""
    return f", or every b-value at once as --input {DWI_ROLE}=SERIES_OR_4D" \
        if role in (B0_ROLE, HIGH_B_ROLE) and accepts_dwi_series(roles) else ""


def check_dwi_roles(given: Iterable[str]) -> None:
    """``dwi`` (every b-value) or ``dwi_b0`` + ``dwi_b1000``: exactly one of the two forms."""
    given = set(given)
    separate = [r for r in (B0_ROLE, HIGH_B_ROLE) if r in given]
    if DWI_ROLE in given and separate:
        raise InputError(DWI_ROLE, f"and {' and '.join(separate)} are two forms of the same "
                         f"images: give {DWI_ROLE} (one series or 4D file with every b-value) "
                         f"or {B0_ROLE} and {HIGH_B_ROLE}, not both")
    if DWI_ROLE not in given and len(separate) < 2:
        missing = [r for r in (B0_ROLE, HIGH_B_ROLE) if r not in given]
        raise InputError(missing[0], f"is missing: give {B0_ROLE} and {HIGH_B_ROLE} (one "
                         f"image each), or {DWI_ROLE} (one DICOM series, a 4D NIfTI with its "
                         ".bval file or a DWMRI NRRD holding every b-value)")


def split_dwi_input(images: Mapping[str, Any], model_b_value: float | None = None
                    ) -> tuple[dict[str, Any], DiffusionChoice | None]:
    """The inputs with ``dwi`` (a :class:`DiffusionSeries`) replaced by ``dwi_b0`` and
    ``dwi_b1000``, and the choice made (None when the two were given separately)."""
    check_dwi_roles(images)
    if DWI_ROLE not in images:
        return dict(images), None
    series = images[DWI_ROLE]
    if not isinstance(series, DiffusionSeries):
        raise InputError(DWI_ROLE, "has no b-values: give a DICOM series, a 4D NIfTI with its "
                         ".bval file or a DWMRI NRRD (oncoseg.io.diffusion.read_diffusion "
                         f"reads them), not a {type(series).__name__}")
    choice = choose_b_values(series, model_b_value)
    out = {role: image for role, image in images.items() if role != DWI_ROLE}
    out[B0_ROLE], out[HIGH_B_ROLE] = choice.b0, choice.high_b
    return out, choice


# ------------------------------------------------------------------------------ reading files


def read_diffusion(path: str | os.PathLike[str], series: str | None = None) -> DiffusionSeries:
    """Every diffusion-weighted volume of a DICOM series folder (``series`` chooses one where
    the folder holds several), a 4D NIfTI with its ``.bval`` sidecar, or a DWMRI NRRD."""
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file or folder")
    if p.is_dir():
        return read_dicom_diffusion(p, series)
    refuse_other_format(p)
    name = p.name.lower()
    if is_nifti(p):
        return read_nifti_diffusion(p)
    if name.endswith((".nrrd", ".nhdr")):
        return read_nrrd_diffusion(p)
    from oncoseg.io.dicom_series import read_dicom_header

    if read_dicom_header(str(p)) is not None:
        return _dicom_files_diffusion([str(p)], str(p))
    raise InputError(str(path), "is not a diffusion series: give a DICOM series folder, a 4D "
                     "NIfTI (.nii/.nii.gz) with its .bval file, or a DWMRI NRRD")


def _frames_of_4d(image: sitk.Image, name: str) -> list[sitk.Image]:
    """The 3D volumes of a 4D image (or the components of a vector image)."""
    if image.GetNumberOfComponentsPerPixel() > 1 and image.GetDimension() == 3:
        return [sitk.VectorIndexSelectionCast(image, k)
                for k in range(image.GetNumberOfComponentsPerPixel())]
    if image.GetDimension() != 4:
        raise InputError(name, f"is a {image.GetDimension()}D image with one value per voxel: "
                         "dwi needs every b-value in one 4D file (give a single b-value image "
                         f"as {B0_ROLE} or {HIGH_B_ROLE} instead)")
    size = list(image.GetSize())
    frames = []
    for t in range(size[3]):
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize([*size[:3], 0])
        extractor.SetIndex([0, 0, 0, t])
        extractor.SetDirectionCollapseToStrategy(extractor.DIRECTIONCOLLAPSETOSUBMATRIX)
        frames.append(extractor.Execute(image))
    return frames


def _numbers(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
        return np.array([[float(v) for v in line.split()] for line in text.splitlines()
                         if line.strip()], dtype=object)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(str(path), f"is not a readable list of numbers ({error})") from None


def read_bvals(path: str | os.PathLike[str]) -> list[float]:
    """An FSL / dcm2niix ``.bval`` file: b-values separated by spaces (or one per line)."""
    rows = _numbers(Path(path))
    values = [float(v) for row in rows for v in row]
    if not values:
        raise InputError(str(path), "holds no b-value")
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise InputError(str(path), "holds a negative or non-finite b-value")
    return values


def read_bvecs(path: str | os.PathLike[str], count: int) -> list[tuple[float, float, float]]:
    """An FSL / dcm2niix ``.bvec`` file: 3 rows of ``count`` values (or ``count`` rows of 3)."""
    rows = [[float(v) for v in row] for row in _numbers(Path(path))]
    if len(rows) == 3 and all(len(r) == count for r in rows):
        return [(rows[0][k], rows[1][k], rows[2][k]) for k in range(count)]
    if len(rows) == count and all(len(r) == 3 for r in rows):
        return [(r[0], r[1], r[2]) for r in rows]
    raise InputError(str(path), f"should hold 3 x {count} numbers (one direction per volume)")


def bval_sidecar(path: Path) -> Path | None:
    """dcm2niix's ``x.bval`` beside ``x.nii.gz``, else FSL's ``bvals`` in the same folder."""
    from oncoseg.io.volumes import volume_stem

    stem = volume_stem(path) or path.stem
    for candidate in (path.with_name(stem + ".bval"), path.with_name("bvals")):
        if candidate.is_file():
            return candidate
    return None


def read_nifti_diffusion(path: str | os.PathLike[str]) -> DiffusionSeries:
    """A 4D NIfTI and its ``.bval`` (and ``.bvec``) sidecar, as dcm2niix writes them."""
    from oncoseg.io.nifti import orientation_notes

    path = Path(path)
    image = read_volume_file(path)
    frames = _frames_of_4d(image, str(path))
    bvals = bval_sidecar(path)
    if bvals is None:
        from oncoseg.io.volumes import volume_stem

        stem = volume_stem(path) or path.stem
        raise InputError(str(path), f"has no b-values: NIfTI files do not hold them; put the "
                         f"b-values (one per volume) in {stem}.bval beside it, as dcm2niix "
                         "writes them")
    values = read_bvals(bvals)
    if len(values) != len(frames):
        raise InputError(str(bvals), f"holds {len(values)} b-values for the {len(frames)} "
                         f"volumes of {path.name}")
    bvecs = bvals.with_suffix(".bvec") if bvals.suffix == ".bval" else bvals.with_name("bvecs")
    directions: list[tuple[float, float, float] | None] = [None] * len(frames)
    if bvecs.is_file():
        directions = list(read_bvecs(bvecs, len(frames)))
    images = tuple(DiffusionImage(frames[k], values[k], _unit(directions[k]))
                   for k in range(len(frames)))
    return DiffusionSeries(images, str(path), f"{bvals.name}",
                           tuple(orientation_notes(image, path)))


def read_nrrd_diffusion(path: str | os.PathLike[str]) -> DiffusionSeries:
    """A DWMRI NRRD (Slicer, DTIPrep, DWIConvert): ``DWMRI_b-value`` is the largest b-value and
    gradient i has b_i = b * (|g_i| / max |g|)^2 (the NA-MIC convention Slicer's
    vtkMRMLNRRDStorageNode::ParseDiffusionInformation reads)."""
    path = Path(path)
    image = read_volume_file(path)
    keys = {k: image.GetMetaData(k).strip() for k in image.GetMetaDataKeys()}
    if "DWMRI_b-value" not in keys:
        raise InputError(str(path), "has no b-values: a NRRD needs the 'DWMRI_b-value' and "
                         "'DWMRI_gradient_NNNN' keys (modality:=DWMRI) that Slicer and DTIPrep "
                         "write")
    gradients = sorted((k for k in keys if k.startswith("DWMRI_gradient_")),
                       key=lambda k: int(k[len("DWMRI_gradient_"):]))
    try:
        reference = float(keys["DWMRI_b-value"])
        vectors = np.array([[float(v) for v in keys[k].split()[:3]] for k in gradients])
    except ValueError as error:
        raise InputError(str(path), f"has an unreadable DWMRI key ({error})") from None
    frames = _frames_of_4d(image, str(path))
    if len(vectors) != len(frames) or vectors.shape[1:] != (3,):
        raise InputError(str(path), f"has {len(gradients)} DWMRI_gradient keys for its "
                         f"{len(frames)} volumes")
    norms = np.linalg.norm(vectors, axis=1)
    largest = float(norms.max()) or 1.0
    images = tuple(DiffusionImage(frames[k], reference * (norms[k] / largest) ** 2,
                                  _unit(vectors[k])) for k in range(len(frames)))
    return DiffusionSeries(images, str(path), "the NRRD's DWMRI_b-value and gradient keys")


def _unit(vector: Sequence[float] | None) -> tuple[float, float, float] | None:
    if vector is None:
        return None
    v = np.asarray(vector, float)
    norm = float(np.linalg.norm(v))
    return (0.0, 0.0, 0.0) if norm == 0 else tuple(float(x) for x in v / norm)  # type: ignore


# ------------------------------------------------------------------------------- DICOM tags


def _private(header: Any, group: int, creator: str, offset: int, vendor: str) -> Any:
    """A private element's value: through its private creator block, else at the block
    usually given to it ((gggg,10xx)) when the Manufacturer is ``vendor``."""
    for element in range(0x10, 0x100):
        owner = header.get((group, element))
        if owner is not None and str(owner.value).strip().upper() == creator.upper():
            item = header.get((group, (element << 8) | offset))
            return None if item is None else item.value
    manufacturer = str(getattr(header, "Manufacturer", "") or "").upper()
    if vendor in manufacturer:
        item = header.get((group, 0x1000 | offset))
        return None if item is None else item.value
    return None


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bytes):  # a private element read without its dictionary entry (UN)
        text = value.decode("latin-1").strip("\0 ")
        if len(value) in (4, 8) and not all(c in "0123456789+-.eE\\ " for c in text):
            return _first_number(struct.unpack("<f" if len(value) == 4 else "<d", value)[0])
        value = text.split("\\")
    if isinstance(value, str):
        value = value.split("\\")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _vector(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        if len(value) == 24:  # FD x 3 read without a dictionary entry
            return tuple(struct.unpack("<3d", value))  # type: ignore[return-value]
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return (numbers[0], numbers[1], numbers[2]) if len(numbers) == 3 else None


def siemens_csa(header: Any) -> dict[str, list[str]]:
    """The Siemens CSA image header (0029,1010) as {name: values}; {} when there is none.

    The format (CSA1, and CSA2 starting 'SV10') is what nibabel's ``nicom.csareader`` and
    dcm2niix read: a tag count, then per tag a 64-byte name, VM, VR, type, item count and a
    check word, then items each with 4 int32 (the length is the second for CSA2, the first
    less the first tag's item count for CSA1) and the value padded to 4 bytes."""
    data = _private(header, 0x0029, _SIEMENS_CSA, 0x10, "SIEMENS")
    if not isinstance(data, bytes) or len(data) < 16:
        return {}
    try:
        return _parse_csa(data)
    except (struct.error, ValueError, UnicodeDecodeError):
        return {}


def _parse_csa(data: bytes) -> dict[str, list[str]]:
    csa2 = data[:4] == b"SV10"
    pointer = 8 if csa2 else 0
    (count,) = struct.unpack_from("<I", data, pointer)
    pointer += 8
    if count > 1000:
        raise ValueError("not a CSA header")
    tags: dict[str, list[str]] = {}
    first_items = None
    for _ in range(count):
        name_bytes, vm, _vr, _type, items, _check = struct.unpack_from("<64si4s3i", data,
                                                                       pointer)
        pointer += 84
        name = name_bytes.split(b"\0", 1)[0].decode("latin-1")
        first_items = items if first_items is None else first_items
        values: list[str] = []
        for index in range(items):
            x0, x1, _x2, _x3 = struct.unpack_from("<4i", data, pointer)
            pointer += 16
            length = x1 if csa2 else x0 - first_items
            if length < 0 or pointer + length > len(data):
                break
            if index < (vm or items):
                values.append(data[pointer:pointer + length].split(b"\0", 1)[0]
                              .decode("latin-1").strip())
            pointer += length + (-length % 4)
        tags[name] = [v for v in values if v]
    return tags


def _csa_number(csa: Mapping[str, list[str]], name: str) -> float | None:
    values = csa.get(name) or []
    return _first_number(values[0]) if values else None


@dataclass(frozen=True)
class _Diffusion:
    """What one image's header says about its diffusion weighting."""

    b_value: float | None
    source: str  # which tag
    direction: tuple[float, float, float] | None
    trace: bool
    derived_map: str  # e.g. 'ADC' when the image is a computed map, not a DWI


def _image_type(header: Any) -> list[str]:
    value = getattr(header, "ImageType", None) or []
    return [str(v).upper() for v in ([value] if isinstance(value, str) else value)]


def _standard_diffusion(item: Any) -> tuple[float | None, tuple | None, str]:
    """DiffusionBValue, DiffusionGradientOrientation and DiffusionDirectionality of a legacy
    header or of an MR Diffusion functional group item."""
    b_value = _first_number(getattr(item, "DiffusionBValue", None))
    directionality = str(getattr(item, "DiffusionDirectionality", "") or "").upper()
    direction = _vector(getattr(item, "DiffusionGradientOrientation", None))
    sequence = getattr(item, "DiffusionGradientDirectionSequence", None)
    if direction is None and sequence:
        direction = _vector(getattr(sequence[0], "DiffusionGradientOrientation", None))
    return b_value, direction, directionality


def _header_diffusion(header: Any, frame: Any = None, shared: Any = None,
                      csa: Mapping[str, list[str]] | None = None) -> _Diffusion:
    """The b-value (and direction) of a legacy image, or of one frame of an enhanced
    multi-frame image (``frame``/``shared``: its functional group items)."""
    image_type = _image_type(header)
    derived = next((t for t in _MAP_IMAGE_TYPES if t in image_type), "")
    trace = any(t in image_type for t in _TRACE_IMAGE_TYPES)
    for group in (frame, shared):
        items = getattr(group, "MRDiffusionSequence", None) if group is not None else None
        if items:
            b_value, direction, directionality = _standard_diffusion(items[0])
            if b_value is not None:
                return _Diffusion(b_value, "DiffusionBValue (0018,9087) of the MR Diffusion "
                                  "functional group", direction,
                                  trace or directionality == "ISOTROPIC", derived)
    b_value, direction, directionality = _standard_diffusion(header)
    trace = trace or directionality == "ISOTROPIC"
    if b_value is not None:
        return _Diffusion(b_value, "DiffusionBValue (0018,9087)", direction, trace, derived)
    siemens = _first_number(_private(header, 0x0019, _SIEMENS, 0x0C, "SIEMENS"))
    if siemens is not None:
        direction = _vector(_private(header, 0x0019, _SIEMENS, 0x0E, "SIEMENS"))
        return _Diffusion(siemens, "Siemens B_value (0019,100C)", direction, trace, derived)
    csa = siemens_csa(header) if csa is None else csa
    csa_b = _csa_number(csa, "B_value")
    if csa_b is not None:
        values = csa.get("DiffusionGradientDirection") or []
        direction = _vector(values) if len(values) == 3 else None
        return _Diffusion(csa_b, "Siemens CSA header B_value (0029,1010)", direction, trace,
                          derived)
    ge = _first_number(_private(header, 0x0043, _GE, 0x39, "GE"))
    if ge is not None:
        if ge >= GE_B_OFFSET:
            ge -= GE_B_OFFSET
        direction = _vector([_first_number(_private(header, 0x0019, _GE_ACQ, e, "GE"))
                             for e in (0xBB, 0xBC, 0xBD)]) if all(
            _private(header, 0x0019, _GE_ACQ, e, "GE") is not None for e in (0xBB, 0xBC, 0xBD)
        ) else None
        return _Diffusion(ge, "GE slop_int_6 (0043,1039)", direction, trace, derived)
    philips = _first_number(_private(header, 0x2001, _PHILIPS, 0x03, "PHILIPS"))
    if philips is not None:
        parts = [_first_number(_private(header, 0x2005, _PHILIPS_MR, e, "PHILIPS"))
                 for e in (0xB0, 0xB1, 0xB2)]
        direction = _vector(parts) if all(p is not None for p in parts) else None
        label = str(_private(header, 0x2001, _PHILIPS, 0x04, "PHILIPS") or "").strip().upper()
        # Philips' isotropic image: direction 'I', or b > 0 with a zero gradient (dcm2niix's
        # rule for Philips' derived isotropic volume).
        isotropic = label == "I" or (philips > 0 and direction is not None
                                     and not any(direction))
        return _Diffusion(philips, "Philips DiffusionBValue (2001,1003)", direction,
                          trace or isotropic, derived)
    return _Diffusion(None, "", None, trace, derived)


# ---------------------------------------------------------------------------- DICOM reading


@dataclass(frozen=True)
class _Frame:
    plane: Any  # oncoseg.io.dicom_geometry.SlicePlane
    diffusion: _Diffusion
    mosaic_tiles: int = 0  # tiles per side of a Siemens mosaic (plane.frame: the tile)


def _mosaic_planes(path: str, header: Any, csa: Mapping[str, list[str]]) -> list[Any] | None:
    """The slice planes of a Siemens mosaic: tile k of an m x m grid is slice k. The first
    slice's position corrects the mosaic's IPP (which is that of the whole tiled image) as
    nibabel's MosaicWrapper and dcm2niix do; slices follow the CSA SliceNormalVector."""
    from oncoseg.io.dicom_geometry import SlicePlane

    if "MOSAIC" not in _image_type(header):
        return None
    count = _first_number(_private(header, 0x0019, _SIEMENS, 0x0A, "SIEMENS")) \
        or _csa_number(csa, "NumberOfImagesInMosaic")
    if not count:
        return None
    count = int(count)
    tiles = math.ceil(math.sqrt(count))
    rows, columns = int(header.Rows), int(header.Columns)
    if rows % tiles or columns % tiles:
        raise InputError(path, f"is a Siemens mosaic of {count} images that does not divide "
                         f"into {tiles} x {tiles} tiles ({columns} x {rows} pixels)")
    orientation = np.asarray([float(v) for v in header.ImageOrientationPatient])
    row, column = orientation[:3], orientation[3:]
    spacing = [float(v) for v in header.PixelSpacing]  # between rows, between columns
    normal_values = csa.get("SliceNormalVector") or []
    normal = np.asarray([float(v) for v in normal_values]) if len(normal_values) == 3 \
        else np.cross(row, column)
    normal = normal / np.linalg.norm(normal)
    step = _first_number(getattr(header, "SpacingBetweenSlices", None)) \
        or _first_number(getattr(header, "SliceThickness", None)) or 1.0
    tile_rows, tile_columns = rows // tiles, columns // tiles
    first = (np.asarray([float(v) for v in header.ImagePositionPatient])
             + column * spacing[0] * (rows - tile_rows) / 2
             + row * spacing[1] * (columns - tile_columns) / 2)
    # Tile k lies k steps along the CSA normal; sorting along row x column (as every stack is
    # read) reverses the tiles where the CSA normal points the other way.
    planes = []
    for k in range(count):
        position = first + normal * step * k
        planes.append(SlicePlane(
            file=path, frame=k, sop_instance_uid=str(getattr(header, "SOPInstanceUID", "")),
            sop_class_uid=str(getattr(header, "SOPClassUID", "")),
            instance_number=int(getattr(header, "InstanceNumber", 0) or 0) * 1000 + k,
            position=tuple(float(v) for v in position), row=tuple(float(v) for v in row),
            column=tuple(float(v) for v in column), pixel_spacing=(spacing[0], spacing[1]),
            rows=tile_rows, columns=tile_columns, thickness=step))
    return planes


def _frames_of(path: str, header: Any) -> list[_Frame]:
    from oncoseg.io.dicom_geometry import slice_planes

    csa = siemens_csa(header)
    mosaic = _mosaic_planes(path, header, csa)
    if mosaic is not None:
        diffusion = _header_diffusion(header, csa=csa)
        tiles = math.ceil(math.sqrt(len(mosaic)))
        return [_Frame(p, diffusion, tiles) for p in mosaic]
    planes = slice_planes(path, header) or []
    per_frame = getattr(header, "PerFrameFunctionalGroupsSequence", None)
    shared_items = getattr(header, "SharedFunctionalGroupsSequence", None)
    shared = shared_items[0] if shared_items else None
    frames = []
    for plane in planes:
        item = per_frame[plane.frame] if per_frame and plane.frame is not None else None
        frames.append(_Frame(plane, _header_diffusion(header, item, shared, csa)))
    return frames


class _Pixels:
    """Pixels of slice planes, each file decoded once (``decoded_frames``: GDCM, and each
    frame's own rescale where an enhanced image's frames differ)."""

    def __init__(self) -> None:
        self.files: dict[str, np.ndarray] = {}

    def __call__(self, frame: _Frame) -> np.ndarray:
        plane = frame.plane
        if plane.file not in self.files:
            from oncoseg.io.dicom_series import decoded_frames, itk_error_message

            try:
                # a mosaic is one frame of tiles: its plane's frame is the tile
                self.files[plane.file] = decoded_frames(
                    plane.file, single_frame=plane.frame is None or bool(frame.mosaic_tiles))
            except RuntimeError as error:
                raise InputError(plane.file, "DICOM image could not be decoded "
                                 f"({itk_error_message(error)})") from None
        array = self.files[plane.file]
        if frame.mosaic_tiles:
            tiles, k = frame.mosaic_tiles, plane.frame
            r, c = divmod(k, tiles)
            return array[0, r * plane.rows:(r + 1) * plane.rows,
                         c * plane.columns:(c + 1) * plane.columns]
        return array[plane.frame or 0]


def read_dicom_diffusion(folder: str | os.PathLike[str], series: str | None = None
                         ) -> DiffusionSeries:
    """The diffusion-weighted volumes of one DICOM series in ``folder``."""
    from oncoseg.io.dicom_series import choose_dicom_series

    chosen = choose_dicom_series(folder, series, split=False)  # its volumes share positions
    return _dicom_files_diffusion(list(chosen.files), str(folder))


def _dicom_files_diffusion(files: Sequence[str], name: str) -> DiffusionSeries:
    from oncoseg.io.dicom_series import read_dicom_header

    frames: list[_Frame] = []
    for path in files:
        header = read_dicom_header(path)
        if header is None:
            raise InputError(path, "is not a readable DICOM file")
        found = _frames_of(path, header)
        if not found:
            raise InputError(path, "does not say where its image lies (ImagePositionPatient, "
                             "ImageOrientationPatient, PixelSpacing)")
        frames += found
    derived = sorted({f.diffusion.derived_map for f in frames if f.diffusion.derived_map})
    if derived:
        raise InputError(name, f"holds computed {' and '.join(derived)} maps (ImageType), not "
                         "diffusion-weighted images: give the series with the b-value images")
    unknown = [f for f in frames if f.diffusion.b_value is None]
    if unknown:
        raise InputError(name, f"{len(unknown)} of its {len(frames)} images have no b-value "
                         f"(e.g. {unknown[0].plane.label()}): looked for DiffusionBValue "
                         "(0018,9087), Siemens B_value (0019,100C) and its CSA header, GE "
                         "slop_int_6 (0043,1039) and Philips (2001,1003)")
    sources = sorted({f.diffusion.source for f in frames})
    volumes, notes = _volumes(frames, name)
    return DiffusionSeries(tuple(volumes), name, " and ".join(sources), tuple(notes))


def _by_position(planes: Sequence[Any]) -> list[list[int]]:
    """Indices of sorted planes grouped by slice position (within 0.01 mm along the normal)."""
    from oncoseg.io.dicom_geometry import SAME_POSITION_MM, distances_along_normal

    distances = distances_along_normal(planes)
    groups: list[list[int]] = []
    for index, distance in enumerate(distances):
        if groups and abs(distance - distances[groups[-1][-1]]) <= SAME_POSITION_MM:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _volumes(frames: list[_Frame], name: str) -> tuple[list[DiffusionImage], list[str]]:
    """One volume per (b-value, direction, repeat): the frames at every slice position, on
    the regular grid :func:`oncoseg.io.dicom_geometry.plan_stack` gives them (with its notes
    where slices were missing)."""
    from oncoseg.io.dicom_geometry import plan_stack, regularize, sort_planes

    groups: dict[tuple, list[_Frame]] = {}
    for frame in frames:
        d = frame.diffusion
        direction = None if d.direction is None else tuple(np.round(d.direction, 4))
        groups.setdefault((d.b_value, direction, d.trace), []).append(frame)
    pixels = _Pixels()
    volumes: list[DiffusionImage] = []
    notes: list[str] = []
    first_count: int | None = None
    for (b_value, direction, trace), members in sorted(groups.items(), key=_group_order):
        frame_of = {id(f.plane): f for f in members}
        ordered = [frame_of[id(p)] for p in sort_planes([f.plane for f in members])]
        positions = [[ordered[i] for i in g] for g in _by_position([f.plane for f in ordered])]
        repeats = {len(p) for p in positions}
        label = f"b = {b_value:g}" + (f", direction {direction}" if direction else "")
        if len(repeats) != 1:
            raise InputError(name, f"its {label} images are not the same number at every "
                             f"slice position ({min(repeats)} to {max(repeats)}): images are "
                             "missing")
        if first_count is not None and len(positions) != first_count:
            raise InputError(name, f"has {len(positions)} slice positions at {label} but "
                             f"{first_count} at the lowest b-value: images are missing")
        first_count = len(positions) if first_count is None else first_count
        for repeat in range(repeats.pop()):
            stack_frames = [position[repeat] for position in positions]
            layout = plan_stack([f.plane for f in stack_frames], f"{name} ({label})")
            stack = np.stack([pixels(f).astype(np.float32) for f in stack_frames])
            image = sitk.GetImageFromArray(regularize(stack, layout))
            image.SetOrigin(layout.origin)
            image.SetSpacing(layout.spacing)
            image.SetDirection(layout.direction)
            notes += [n for n in layout.notes if n not in notes]
            exact = stack_frames[0].diffusion.direction  # the key rounds it
            volumes.append(DiffusionImage(image, float(b_value), _unit(exact), trace))
    return volumes, notes


def _group_order(item: tuple[tuple, list[_Frame]]) -> tuple:
    (b_value, direction, trace), members = item
    return (b_value, direction or (), trace, min(f.plane.instance_number or 0 for f in members))
