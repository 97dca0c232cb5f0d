"""From a T2w volume to the staging network's input (paper 002): N4 bias-field correction, an
x-y crop around rectum and tumour, every slice resized to size x size, slices kept.

The crop comes from an ROI box (LPS mm, as staging.csv or a Slicer ROI gives it) or an ROI mask
(its bounding box); the network reads a square of the model's ``crop_mm`` centred on either, at
the scale it was trained at (``crop_mm=box``: the ROI as drawn). Without either, a centred
square of that side (``auto_roi_mm`` for a model reading ROIs as drawn) fits a small field of
view centred on the tumour, not a whole pelvis (the phantoms' rectum lies 25-32 mm behind their
centre, and the demo then called every T2 tumour T3: docs/RESULTS.md, "The staging ROI as a
reader draws it"): a run is refused without an ROI unless ``without_roi=centre`` asks for that
square; a data set's case without one is cropped so, and the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.errors import InputError
from oncoseg.geometry import resample_to_reference
from oncoseg.intensity import ZScore
from oncoseg.slices import resize_slices
from oncoseg.staging.config import StagingConfig, no_roi_refusal
from oncoseg.validation import check_axial, check_volume

MIN_SLICES = 3
# In-plane voxels a T2w needs at least: N4's B-spline fit needs a lattice of several points per
# axis on the shrunk image, and the network reads 128 x 128 crops resized from the slices.
MIN_IN_PLANE = 16
N4_SHRINK = 4  # N4 fits the bias field on a 4x shrunk volume, then applies it at full size


@dataclass
class PreparedVolume:
    array: np.ndarray  # (D, size, size) float32, z-scored
    crop: tuple[int, int, int, int]  # x0, x1, y0, y1 voxel indices (end exclusive) of the crop
    roi_source: str  # "box", "mask" or "automatic"
    messages: list[str]


def check_t2w(image: sitk.Image, name: str = "t2w") -> None:
    check_volume(image, name)
    if image.GetSize()[2] < MIN_SLICES:
        raise InputError(name, f"has {image.GetSize()[2]} slices; staging needs at least "
                         f"{MIN_SLICES} (the network relates neighbouring slices)")
    check_axial(image, name, "the staging network reads axial slices: give the axial T2w")
    if min(image.GetSize()[:2]) < MIN_IN_PLANE:
        raise InputError(name, f"has slices of {image.GetSize()[0]} x {image.GetSize()[1]} "
                         f"voxels; staging needs at least {MIN_IN_PLANE} x {MIN_IN_PLANE} (its "
                         "bias correction and its crops of the rectum read a whole slice)")


def n4_correct(image: sitk.Image) -> sitk.Image:
    """N4ITK on a shrunk copy inside an Otsu body mask; the fitted field divides the full
    volume (the MR community's convention, as the paper)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    # shrunk in-plane, but never below 4 voxels along an axis (N4's lattice needs them)
    shrunk = sitk.Shrink(image, [max(1, min(N4_SHRINK, s // 4)) for s in image.GetSize()[:2]]
                         + [1])
    mask = sitk.OtsuThreshold(shrunk, 0, 1, 200)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(shrunk, mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)


def _box_from_lps(image: sitk.Image, box: Sequence[float], margin: float,
                  ) -> tuple[int, int, int, int]:
    return _crop_within(image, *_index_range(image, box, margin))


def _index_range(image: sitk.Image, box: Sequence[float], margin: float
                 ) -> tuple[list[int], list[int]]:
    """The voxels (start, stop per axis, end exclusive, unclipped) an LPS box covers."""
    if len(box) != 6:
        raise InputError("roi", f"needs 6 numbers (x0 y0 z0 x1 y1 z1 in mm), got {len(box)}")
    low, high = np.minimum(box[:3], box[3:]) - margin, np.maximum(box[:3], box[3:]) + margin
    corners = [image.TransformPhysicalPointToContinuousIndex(
        [float(c) for c in (x, y, z)]) for x in (low[0], high[0]) for y in (low[1], high[1])
        for z in (low[2], high[2])]
    index = np.asarray(corners)
    start = np.floor(index.min(axis=0) + 0.5).astype(int)
    stop = np.floor(index.max(axis=0) + 0.5).astype(int) + 1
    return start.tolist(), stop.tolist()


def _crop_within(image: sitk.Image, start: Sequence[int], stop: Sequence[int]
                 ) -> tuple[int, int, int, int]:
    """The x-y crop (x0, x1, y0, y1) of a voxel range, clipped to the image; refused where
    the range misses the image or covers less than 2 x 2 voxels of it."""
    size = image.GetSize()
    if any(stop[a] <= 0 or start[a] >= size[a] for a in range(len(start))):
        raise InputError("roi", "lies outside the t2w image (no voxel of the box is in it); "
                         "place the ROI around the rectum and tumour")
    x0, y0 = max(start[0], 0), max(start[1], 0)
    x1, y1 = min(stop[0], size[0]), min(stop[1], size[1])
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError("roi", "covers less than 2 x 2 voxels of the t2w image")
    return int(x0), int(x1), int(y0), int(y1)


def _box_from_mask(image: sitk.Image, mask: sitk.Image, margin: float
                   ) -> tuple[int, int, int, int]:
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError("roi", "mask is empty (no voxel is set): draw it around the rectum "
                         "and tumour")
    on_grid = sitk.GetArrayFromImage(resample_to_reference(mask, image, "nearest",
                                                           names=("roi", "t2w")))
    voxels = np.argwhere(on_grid > 0)
    if not len(voxels):
        raise InputError("roi", "mask has no voxel inside the t2w image")
    pad = [int(np.ceil(margin / s)) for s in image.GetSpacing()[:2]]
    (_, y0, x0), (_, y1, x1) = voxels.min(axis=0), voxels.max(axis=0) + 1
    size = image.GetSize()
    return (max(int(x0) - pad[0], 0), min(int(x1) + pad[0], size[0]),
            max(int(y0) - pad[1], 0), min(int(y1) + pad[1], size[1]))


def _automatic_box(image: sitk.Image, side_mm: float) -> tuple[int, int, int, int]:
    size, spacing = image.GetSize(), image.GetSpacing()
    half = [min(side_mm / (2 * spacing[i]), size[i] / 2) for i in (0, 1)]
    centre = [size[0] / 2, size[1] / 2]
    box = (round(centre[0] - half[0]), round(centre[0] + half[0]),
           round(centre[1] - half[1]), round(centre[1] + half[1]))
    if box[1] - box[0] < 2 or box[3] - box[2] < 2:
        raise InputError("t2w", f"its voxels ({spacing[0]:g} x {spacing[1]:g} mm in-plane) are "
                         f"too coarse for the automatic ROI: a {side_mm:g} mm square covers "
                         f"{box[1] - box[0]} x {box[3] - box[2]} of them, at least 2 x 2 are "
                         "needed")
    return box


def crop_box(image: sitk.Image, config: StagingConfig, roi_box: Sequence[float] | None = None,
             roi_mask: sitk.Image | None = None, automatic: bool | None = None
             ) -> tuple[tuple[int, int, int, int], str]:
    """The crop (voxels) and where it came from. Without an ROI, a centred square where
    ``automatic`` (None: as ``config.without_roi`` says; data sets pass True), else refused."""
    if roi_box is not None and roi_mask is not None:
        raise InputError("roi", "give a box or a mask, not both")
    if roi_box is None and roi_mask is None:
        if not (config.without_roi == "centre" if automatic is None else automatic):
            raise no_roi_refusal(config)
        return _automatic_box(image, config.automatic_side_mm), "automatic"
    side = config.square_mm
    if roi_box is not None:
        if side is None:
            return _box_from_lps(image, roi_box, config.roi_margin_mm), "box"
        start, stop = _index_range(image, roi_box, 0.0)
        low, high = np.minimum(roi_box[:3], roi_box[3:]), np.maximum(roi_box[:3], roi_box[3:])
        centre = image.TransformPhysicalPointToContinuousIndex(
            [float(c) for c in (low + high) / 2])
        square = _square_on_slices(image, centre[:2], side)
        return _crop_within(image, [*square[0], start[2]], [*square[1], stop[2]]), "box"
    box = _box_from_mask(image, roi_mask, config.roi_margin_mm if side is None else 0.0)
    if side is not None:
        x0, x1, y0, y1 = box
        square = _square_on_slices(image, ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2), side)
        box = _crop_within(image, *square)
    return box, "mask"


def _square_on_slices(image: sitk.Image, centre: Sequence[float], side_mm: float
                      ) -> tuple[list[int], list[int]]:
    """The x-y voxel range (start, stop) of a square of ``side_mm`` on the T2w's own slices
    centred on ``centre`` (continuous x, y voxel index): the scale the model was trained at on
    any grid. The box of an LPS square's corners projected onto a turned T2w's axes is wider
    (1.37 times on a T2w turned 30 degrees in-plane; by the ROI's height times the tilt's sine
    on a tilted one), and the network, which resizes the crop to its slice size, read the
    rectum shrunk: five T2 phantoms of six turned in-plane got P(T3) 0.84-0.999
    (docs/RESULTS.md, "Storage order and obliquity")."""
    spacing = image.GetSpacing()
    start = [int(np.floor(centre[a] - side_mm / (2 * spacing[a]) + 0.5)) for a in (0, 1)]
    stop = [int(np.floor(centre[a] + side_mm / (2 * spacing[a]) + 0.5)) + 1 for a in (0, 1)]
    return start, stop


def _side_mm(box: Sequence[float]) -> tuple[float, float]:
    low, high = np.minimum(box[:3], box[3:]), np.maximum(box[:3], box[3:])
    return float(high[0] - low[0]), float(high[1] - low[1])


def crop_note(image: sitk.Image, config: StagingConfig, roi_box: Sequence[float] | None,
              roi_mask: sitk.Image | None) -> str | None:
    """What a result says when the network read another square than the ROI drawn."""
    side = config.square_mm
    if side is None or (roi_box is None and roi_mask is None):
        return None
    if roi_box is not None:
        width, height = _side_mm(roi_box)
    else:  # the mask's extent on the T2w's slices
        x0, x1, y0, y1 = _box_from_mask(image, roi_mask, 0.0)
        width, height = (x1 - x0) * image.GetSpacing()[0], (y1 - y0) * image.GetSpacing()[1]
    if max(abs(width - side), abs(height - side)) < 0.5 * min(image.GetSpacing()[:2]):
        return None
    return (f"the network read a {side:g} x {side:g} mm square centred on the ROI (the "
            f"model's crop_mm, the scale it was trained at); the ROI is {width:.3g} x "
            f"{height:.3g} mm")


def prepare_volume(image: sitk.Image, config: StagingConfig,
                   roi_box: Sequence[float] | None = None,
                   roi_mask: sitk.Image | None = None,
                   automatic: bool | None = None) -> PreparedVolume:
    """``automatic``: whether a case without an ROI is cropped round the T2w's centre (None:
    as ``config.without_roi`` says; the data-set paths pass True)."""
    check_t2w(image)
    box, source = crop_box(image, config, roi_box, roi_mask, automatic)
    corrected = n4_correct(image) if config.n4 else sitk.Cast(image, sitk.sitkFloat32)
    x0, x1, y0, y1 = box
    array = sitk.GetArrayViewFromImage(corrected)[:, y0:y1, x0:x1]
    # a copy: the crop may be the whole image's read-only view, which torch must not wrap
    slices = torch.from_numpy(np.array(array, np.float32, order="C"))[:, None]
    shrinking = min(array.shape[1:]) > config.size
    resized = resize_slices(slices, (config.size, config.size), antialias=shrinking)[:, 0].numpy()
    try:
        scale = ZScore.of(resized, "t2w")
    except InputError:
        raise InputError("t2w", "is constant inside the ROI; it holds no image there") from None
    messages = []
    if source == "automatic":
        messages.append(f"no ROI given: a centred {config.automatic_side_mm:g} mm square was "
                        "used as the crop around rectum and tumour; place an ROI for a "
                        "reliable result")
    note = crop_note(image, config, roi_box, roi_mask)
    if note:
        messages.append(note)
    return PreparedVolume(scale.apply(resized), box, source, messages)


def representative_slices(label: np.ndarray, count: int = 3) -> list[int]:
    """Up to ``count`` slices with the largest tumour area: what a radiologist would pick as
    representative, from a tumour mask (D, y, x)."""
    areas = np.asarray(label, bool).reshape(len(label), -1).sum(axis=1)
    order = [int(k) for k in np.argsort(-areas, kind="stable") if areas[k] > 0]
    return sorted(order[:count])
