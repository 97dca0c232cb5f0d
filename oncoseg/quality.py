"""Quality control of one case, for cohorts: flags a reader should look at, each with its reason.

In a cohort of a thousand studies nobody opens every result; the ones to open are those where
the input is not what the model expects (a CT given where an MR belongs, an oblique or unusual
acquisition, a missing sequence, a registration that made alignment worse) or the output is
not what anatomy allows (an empty or implausibly large segment, too many pieces, a segment cut
by the volume's border or lying in the air, a segment the model itself is unsure of, a stage
close to its threshold). Flags never change a result.

What is plausible lives in the task declarations (:class:`oncoseg.tasks.Plausible` per segment,
``InputRole.modality``, ``Task.registered_roles``, ``Task.uncertain_margin``), and what the
model was trained on in its file (``provenance.dataset.geometry``, where recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from oncoseg.geometry import voxel_volume_ml
from oncoseg.intensity import clip_tails
from oncoseg.orientation import tilt_degrees
from oncoseg.tasks import Task

if TYPE_CHECKING:
    from oncoseg.prediction import Prediction

# voxels read for intensity statistics: a strided sample, not a float copy of a large CT
SAMPLE_VOXELS = 1 << 20
OBLIQUE_DEGREES = 1.0  # below this, an axis counts as aligned (scanner rounding)
OUTSIDE_BODY_FRACTION = 0.05
GEOMETRY_MARGIN = 1.25
# MR background: below this fraction of the 99th percentile; checked only where at least
# MR_MIN_BACKGROUND of the volume is background
MR_BACKGROUND_FRACTION = 0.1
# registration is flagged when it worsens Mattes MI by more than this fraction
REGISTRATION_TOLERANCE = 0.02
MR_MIN_BACKGROUND = 0.05  # spacing or extent this factor beyond the training range is flagged
# a scan holds hundreds of distinct intensities; a label map or mask a handful of small whole
# numbers from 0 (a noiseless synthetic image of a few tissues, at -1000 / 40 / 700, is none)
LABEL_MAP_VALUES = 16
LABEL_MAP_LARGEST = 255
LABEL_MAP_SAMPLE = 1 << 18  # voxels of the sample counted, spread over the whole volume
# neighbouring voxels of a scan correlate (r 0.74-0.99 along every axis on pydicom's and
# nibabel's real CT and MR files, 0.81-0.996 on every task's phantoms, DWI b1000 the lowest);
# of noise (random bytes, a file's data read as pixels) they do not (r near 0)
NOISE_CORRELATION = 0.2


@dataclass(frozen=True)
class Flag:
    """One thing a reader should look at: ``kind`` is 'input' or 'output'; ``check`` a short
    name (volume, components, border, outside_body, low_probability, near_threshold, modality,
    oblique, missing, unused, spacing, extent, registration); ``subject`` the role or segment."""

    kind: str
    check: str
    subject: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def modality_flags(task: Task, images: Mapping[str, Any]) -> list[Flag]:
    """Flags on scans that do not look like their role's modality (a CT given for an MR, a
    label map given for either); what ``predict`` says of a single case too."""
    return [flag for role in task.inputs if isinstance(images.get(role.name), sitk.Image)
            for flag in _modality(role.name, role.modality, images[role.name])]


def model_training_geometry(prepared: Any) -> dict[str, Any] | None:
    """The training images' spacing and extent ranges a model file records (models trained
    before OncoSeg recorded them have none: not checked)."""
    model = getattr(prepared, "model", None)
    if model is None:
        return None
    return model.metadata.provenance.get("dataset", {}).get("geometry")


def geometry_flags(task: Task, images: Mapping[str, Any],
                   training_geometry: Mapping[str, Any] | None) -> list[Flag]:
    """Flags on a reference image whose spacing or field of view lies outside the training
    cases' (a patch network reads anatomy at its trained scale); what ``predict`` says of a
    single case too."""
    reference = images.get(task.reference_role)
    if not isinstance(reference, sitk.Image) or not training_geometry:
        return []
    return _against_training(task.reference_role, reference, training_geometry)


def check_inputs(task: Task, images: Mapping[str, sitk.Image], info: Mapping[str, Any],
                 training_geometry: Mapping[str, Any] | None = None) -> list[Flag]:
    """Flags on what a case gave the model, before or without predicting."""
    flags = modality_flags(task, images)
    for role in task.inputs:
        image = images.get(role.name)
        if image is None:
            continue
        flags += _oblique(role.name, image)
    imaging = {r.name for r in task.inputs if r.modality}  # not masks a method can do without
    for role in (r for r in info.get("missing", ()) if r in imaging):
        flags.append(Flag("input", "missing", role, f"no {role} image: the model ran without "
                          "it"))
    for name in info.get("unused", ()):
        flags.append(Flag("input", "unused", name, f"the case holds '{name}', which is no "
                          f"input of the {task.name} task; it was not used"))
    return flags + geometry_flags(task, images, training_geometry)


def check_prediction(task: Task, prediction: Prediction,
                     stored: Mapping[str, sitk.Image] | None = None) -> list[Flag]:
    """Flags on a prediction's result (and on registration, which needs both the stored
    images and the ones the model saw)."""
    flags = []
    if task.classes:
        flags += _near_threshold(task, prediction)
    if prediction.labels is not None:
        labels = sitk.GetArrayViewFromImage(prediction.labels)
        body = _body(task, prediction)
        ml = voxel_volume_ml(prediction.labels)
        for segment in task.segments:
            mask = labels == segment.label
            probability = prediction.probabilities.get(segment.name)
            flags += _segment(segment.name, segment.plausible, mask, ml, body, probability)
    if stored is not None:
        for role in task.registered_roles:
            if role in stored and role in prediction.images:
                flags += _registration(task, role, stored[role], prediction)
    return flags


# ---------------------------------------------------------------------------- inputs


def _sample(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayViewFromImage(image)
    step = max(1, round((array.size / SAMPLE_VOXELS) ** (1 / 3)))
    return np.asarray(array[::step, ::step, ::step], np.float32).ravel()


def _air_level(values: np.ndarray, lowest: float) -> float | None:
    """The median of a CT's values below -500 HU (air, lung), leaving out its lowest value,
    which scanners give the padding outside the reconstructed circle (-2000, -3024) and
    which may cover a fifth of the image; None where under 1 % of the voxels are that low."""
    below = values[(values < -500) & (values > lowest)]
    return float(np.median(below)) if below.size >= 0.01 * values.size else None


def neighbour_correlation(image: sitk.Image) -> float | None:
    """The highest correlation between neighbouring voxels along any axis, on the middle two
    slices (whole, not a strided sample: neighbours must be neighbours), their extreme 0.1 %
    clipped (a few spikes would otherwise decide it); None where the slices are constant."""
    array = sitk.GetArrayViewFromImage(image)
    middle = max(0, array.shape[0] // 2 - 1)
    block = clip_tails(array[middle:middle + 2])
    found = []
    for axis in range(block.ndim):
        if block.shape[axis] < 2:
            continue
        first = np.take(block, range(block.shape[axis] - 1), axis=axis).ravel()
        second = np.take(block, range(1, block.shape[axis]), axis=axis).ravel()
        if first.std() > 0 and second.std() > 0:
            found.append(float(np.corrcoef(first, second)[0, 1]))
    return max(found) if found else None


def _modality(role: str, modality: str, image: sitk.Image) -> list[Flag]:
    if modality not in ("CT", "MR") or image.GetNumberOfComponentsPerPixel() != 1:
        return []
    values = _sample(image)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    distinct = np.unique(values[::max(1, values.size // LABEL_MAP_SAMPLE)])  # whole volume
    if distinct.size <= LABEL_MAP_VALUES and np.all(distinct == np.round(distinct)) and \
            distinct[0] >= 0 and distinct[-1] <= LABEL_MAP_LARGEST:
        return [Flag("input", "modality", role, f"{role} holds only {distinct.size} distinct "
                     f"values ({', '.join(f'{v:g}' for v in distinct[:6])}"
                     f"{', ...' if distinct.size > 6 else ''}): a label map or a mask, not "
                     f"{'an' if modality == 'MR' else 'a'} {modality} scan")]
    correlation = neighbour_correlation(image)
    if correlation is not None and correlation < NOISE_CORRELATION:
        return [Flag("input", "modality", role, f"{role} looks like noise, not a scan: "
                     f"neighbouring voxels are uncorrelated (r = {correlation:.2f} at most "
                     "along any axis; a scan's are 0.7-0.99): a damaged file, or not an "
                     "image")]
    low, p1, p999 = float(values.min()), *np.percentile(values, [1, 99.9])
    air = float(np.mean((values > -1100) & (values < -900)))
    if modality == "CT":
        if low >= 0:
            return [Flag("input", "modality", role, f"{role} has no negative values (minimum "
                         f"{low:g}): not a CT in Hounsfield units - an MR, or a CT stored "
                         "without its rescale slope and intercept")]
        if p1 > -500:
            return [Flag("input", "modality", role, f"{role} has no air (1st percentile "
                         f"{p1:.0f}, expected near -1000 HU): another unit, or a field of "
                         "view inside the body")]
        air_level = _air_level(values, low)
        if air_level is not None and air_level < -1300:
            return [Flag("input", "modality", role, f"{role}'s air lies near {air_level:.0f} "
                         "(expected near -1000 HU): another unit, or a scaled image")]
        if p999 > 5000:
            return [Flag("input", "modality", role, f"{role} reaches {p999:.0f} (99.9th "
                         "percentile), beyond bone and metal in Hounsfield units")]
        if p999 < 150:
            return [Flag("input", "modality", role, f"{role} never reaches soft tissue or bone "
                         f"(99.9th percentile {p999:.0f}, expected above +150 HU): another "
                         "unit, or a rescaled image")]
    elif -1100 < p1 < -900 and air > 0.05:
        return [Flag("input", "modality", role, f"{role} looks like a CT: {100 * air:.0f} % of "
                     "its voxels lie near -1000 (air in Hounsfield units)")]
    return []


def _oblique(role: str, image: sitk.Image) -> list[Flag]:
    if image.GetDimension() != 3:
        return []
    degrees = tilt_degrees(image)
    if degrees <= OBLIQUE_DEGREES:
        return []
    return [Flag("input", "oblique", role, f"{role} is oblique: an axis lies {degrees:.1f} "
                 "degrees from the nearest patient axis")]


def _against_training(role: str, image: sitk.Image, geometry: Mapping[str, Any]) -> list[Flag]:
    """Spacing and extent (sorted per axis, so storage order does not matter) against the
    range of the training cases."""
    spacing = np.sort(np.asarray(image.GetSpacing(), float))
    extent = np.sort(np.asarray(image.GetSpacing(), float) * image.GetSize())
    flags = []
    for check, value, unit in (("spacing", spacing, "mm"), ("extent", extent, "mm")):
        known = geometry.get(f"{check}_mm")
        if not known:
            continue
        low = np.asarray(known["min"], float) / GEOMETRY_MARGIN
        high = np.asarray(known["max"], float) * GEOMETRY_MARGIN
        if np.any(value < low) or np.any(value > high):
            shown = " x ".join(f"{v:.3g}" for v in value)
            trained = " x ".join(f"{a:.3g}" if f"{a:.3g}" == f"{b:.3g}" else f"{a:.3g}-{b:.3g}"
                                 for a, b in zip(known["min"], known["max"], strict=True))
            what = "voxel spacing" if check == "spacing" else "field of view"
            flags.append(Flag("input", check, role, f"{role} {what} {shown} {unit} (sorted) "
                              f"lies outside what the model was trained on ({trained} {unit})"))
    return flags


def training_geometry(grids: list[tuple[tuple[float, ...], tuple[int, ...]]]
                      ) -> dict[str, Any]:
    """What :func:`_against_training` compares with, from the training cases' reference grids
    ((spacing, size) pairs, read from headers): per-axis ranges of sorted spacing and extent."""
    spacing = np.array([np.sort(np.asarray(s, float)) for s, _ in grids])
    extent = np.array([np.sort(np.asarray(s, float) * np.asarray(n, float)) for s, n in grids])
    return {f"{name}_mm": {"min": [round(float(v), 4) for v in values.min(axis=0)],
                           "max": [round(float(v), 4) for v in values.max(axis=0)]}
            for name, values in (("spacing", spacing), ("extent", extent))}


def _registration(task: Task, role: str, stored: sitk.Image, prediction: Prediction) -> list[Flag]:
    """Mattes mutual information between the reference and the moving image before (as
    stored, identity) and after registration (as the model saw it); lower is better."""
    reference = prediction.images.get(task.reference_role)
    if reference is None:
        return []
    before = _mattes(reference, stored)
    after = _mattes(reference, prediction.images[role])
    if before is None or after is None or after <= before + REGISTRATION_TOLERANCE * abs(before):
        return []
    return [Flag("input", "registration", role, f"registering {role} onto "
                 f"{task.reference_role} made their mutual information worse (Mattes "
                 f"{before:.3f} before, {after:.3f} after; lower is better)")]


def _mattes(fixed: sitk.Image, moving: sitk.Image) -> float | None:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.25)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(sitk.Transform(3, sitk.sitkIdentity))
    try:
        return float(method.MetricEvaluate(sitk.Cast(fixed, sitk.sitkFloat32),
                                           sitk.Cast(moving, sitk.sitkFloat32)))
    except RuntimeError:  # too few samples overlap: nothing to compare
        return None


# ---------------------------------------------------------------------------- outputs


def _near_threshold(task: Task, prediction: Prediction) -> list[Flag]:
    threshold = prediction.details.get("threshold")
    positive = task.classes[-1]
    p = prediction.class_probabilities.get(positive)
    if threshold is None or p is None or abs(p - threshold) >= task.uncertain_margin:
        return []
    return [Flag("output", "near_threshold", positive, f"P({positive}) {p:.2f} lies within "
                 f"{task.uncertain_margin:g} of the threshold {threshold:g}")]


def _body(task: Task, prediction: Prediction) -> np.ndarray | None:
    """Where the patient is, on the label grid: CT tissue for a CT reference; for an MR, the
    voxels above a tenth of its bright end, where such a dark background exists at all (a
    pelvic MR's field of view often lies wholly inside the body: then None, nothing to check)."""
    from oncoseg.body import body_above, ct_body

    reference = prediction.images.get(task.reference_role)
    if reference is None or reference.GetSize() != prediction.labels.GetSize():
        return None
    array = sitk.GetArrayViewFromImage(reference)
    if task.role(task.reference_role).modality == "CT":
        return ct_body(array)
    values = _sample(reference)
    if values.size == 0:
        return None
    threshold = MR_BACKGROUND_FRACTION * float(np.percentile(values, 99))
    if threshold <= 0 or np.mean(values < threshold) < MR_MIN_BACKGROUND:
        return None
    body = body_above(array, threshold)
    return body if body.any() else None


def _segment(name: str, plausible: Any, mask: np.ndarray, ml: float, body: np.ndarray | None,
             probability: sitk.Image | None) -> list[Flag]:
    flags = []
    voxels = int(np.count_nonzero(mask))
    volume = voxels * ml
    low, high = plausible.volume_ml
    if volume < low:
        text = "is empty" if voxels == 0 else f"has {volume:.1f} mL"
        flags.append(Flag("output", "volume", name, f"{name} {text}; expected at least "
                          f"{low:g} mL"))
    elif volume > high:
        flags.append(Flag("output", "volume", name, f"{name} has {volume:.1f} mL; expected at "
                          f"most {high:g} mL"))
    if voxels == 0:
        return flags
    if plausible.max_components is not None:
        _, count = ndimage.label(mask, np.ones((3, 3, 3), bool))
        if count > plausible.max_components:
            flags.append(Flag("output", "components", name, f"{name} is in {count} pieces; "
                              f"expected at most {plausible.max_components}"))
    if not plausible.may_touch_border:
        faces = _touched_faces(mask)
        if faces:
            flags.append(Flag("output", "border", name, f"{name} touches the volume's border "
                              f"({', '.join(faces)}): it may continue outside the scan"))
    if body is not None:
        outside = float(np.count_nonzero(mask & ~body)) / voxels
        if outside > OUTSIDE_BODY_FRACTION:
            flags.append(Flag("output", "outside_body", name, f"{100 * outside:.0f} % of "
                              f"{name} lies outside the body"))
    if probability is not None:
        values = sitk.GetArrayViewFromImage(probability)
        if values.shape == mask.shape:
            mean = float(values[mask].mean())
            if mean < plausible.min_mean_probability:
                flags.append(Flag("output", "low_probability", name, f"the model's mean "
                                  f"probability over {name} is {mean:.2f} (below "
                                  f"{plausible.min_mean_probability:g})"))
    return flags


def _touched_faces(mask: np.ndarray) -> list[str]:
    """Array faces (z, y, x order of the stored grid) the mask reaches; axes of size 1 (a
    single slice) are not borders anyone can move."""
    faces = []
    for axis, name in enumerate("kji"):
        if mask.shape[axis] < 2:
            continue
        first = np.take(mask, 0, axis=axis).any()
        last = np.take(mask, mask.shape[axis] - 1, axis=axis).any()
        faces += [f"first {name} slice"] * bool(first) + [f"last {name} slice"] * bool(last)
    return faces
