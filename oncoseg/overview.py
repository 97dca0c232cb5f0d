"""A picture a person can check at a glance: the display image with the result on top.

For segmentation tasks: the slice where the segmentation is largest, shown plain and with the
probability map and segment outlines. For classification tasks: the middle slice and the class
probabilities. Images are shown in the canonical orientation of :mod:`oncoseg.orientation`,
the radiological convention (patient's right on the viewer's left, anterior up), with their
true aspect ratio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from oncoseg.orientation import to_canonical


class _Segment(Protocol):
    @property
    def label(self) -> int: ...

    @property
    def color(self) -> tuple[float, float, float]: ...


class OverviewContent(Protocol):
    """What the picture reads, as :class:`oncoseg.prediction.Prediction` holds it. Declared
    here rather than imported, so that the arrow runs one way: writing a prediction uses the
    picture, the picture knows no prediction type."""

    @property
    def task(self) -> str: ...

    @property
    def model(self) -> Mapping[str, Any]: ...

    @property
    def images(self) -> Mapping[str, sitk.Image]: ...

    @property
    def display_role(self) -> str: ...

    @property
    def labels(self) -> sitk.Image | None: ...

    @property
    def probabilities(self) -> Mapping[str, sitk.Image]: ...

    @property
    def class_probabilities(self) -> Mapping[str, float]: ...

    @property
    def segments(self) -> Sequence[_Segment]: ...

    def segment_volumes_ml(self) -> Mapping[str, float]: ...


def _best_slice(labels: np.ndarray | None, depth: int) -> int:
    if labels is None or not labels.any():
        return depth // 2
    return int(np.argmax((labels > 0).reshape(depth, -1).sum(axis=1)))


def _shown_slice(prediction: OverviewContent
                 ) -> tuple[sitk.Image, np.ndarray | None, int, np.ndarray, float, float]:
    """What both pictures show: the display image in the canonical orientation, its label map
    (z, y, x), the slice k with most of the result, that slice as float32 and its grey window
    (1st to 99.5th percentile)."""
    image = to_canonical(prediction.images[prediction.display_role])
    labels = None
    if prediction.labels is not None:
        labels = sitk.GetArrayFromImage(to_canonical(prediction.labels))
    k = _best_slice(labels, image.GetSize()[2])
    plane = np.asarray(sitk.GetArrayViewFromImage(image)[k], np.float32)  # one slice, no copy
    low, high = np.percentile(plane, [1, 99.5])
    return image, labels, k, plane, float(low), float(high)


def _slice_of(maps: Mapping[str, sitk.Image], name: str, canonical: sitk.Image, k: int
              ) -> np.ndarray:
    """Slice ``k`` of the canonical grid of a map, and only that slice: a map kept on another
    grid (``oncoseg.prediction.ResampledMaps``) is resampled straight onto it, one on the
    display grid is cut (the canonical grid's voxel centres are the stored ones, reordered)."""
    plane = sitk.Extract(canonical, [*canonical.GetSize()[:2], 1], [0, 0, k])
    onto = getattr(maps, "onto", None)
    if onto is not None:
        picked = onto(name, plane)
    else:
        picked = sitk.Resample(maps[name], plane, sitk.Transform(), sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
    return sitk.GetArrayFromImage(picked)[0].astype(np.float32)


def save_overview(prediction: OverviewContent, path: str | os.PathLike[str]) -> None:
    """Draw ``prediction`` (a :class:`oncoseg.prediction.Prediction`, or anything that offers
    what :class:`OverviewContent` lists) into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    image, labels, k, plane, low, high = _shown_slice(prediction)
    depth = image.GetSize()[2]
    spacing = image.GetSpacing()
    aspect = spacing[1] / spacing[0]

    panels = 2
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 5.4), dpi=110)
    for ax in axes:
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high, aspect=aspect,
                  interpolation="nearest")
        ax.set_axis_off()
    axes[0].set_title(f"{prediction.display_role}, slice {k + 1}/{depth}")
    overlay_ax = axes[1]
    if prediction.probabilities:
        total = np.zeros_like(plane)
        for name in prediction.probabilities:
            total = np.maximum(total, _slice_of(prediction.probabilities, name, image, k))
        shown = np.ma.masked_less(total, 0.05)
        im = overlay_ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.55, aspect=aspect,
                               interpolation="nearest")
        fig.colorbar(im, ax=overlay_ax, fraction=0.046, pad=0.02, label="probability")
    if labels is not None:
        for segment in prediction.segments:
            mask = labels[k] == segment.label
            if mask.any():
                overlay_ax.contour(mask.astype(float), levels=[0.5], linewidths=1.6,
                                   colors=[to_rgba(segment.color)])
        volumes = prediction.segment_volumes_ml()
        title = ", ".join(f"{name} {ml:.1f} mL" for name, ml in volumes.items())
    else:
        title = ", ".join(f"P({name}) = {p:.2f}"
                          for name, p in prediction.class_probabilities.items())
    overlay_ax.set_title(title or prediction.task, fontsize=10)
    fig.suptitle(f"OncoSeg {prediction.task}: {prediction.model.get('name', '')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)


def thumbnail(prediction: OverviewContent, size: int = 160) -> np.ndarray:
    """A small RGB picture (uint8, rows x columns x 3) of the slice with most of the result,
    each segment outlined in its colour: what a cohort report shows per case, a thousand times
    over, so it is drawn with numpy alone (no figure) in a few milliseconds."""
    from PIL import Image
    from scipy import ndimage

    image, labels, k, plane, low, high = _shown_slice(prediction)
    spacing = image.GetSpacing()
    height_mm, width_mm = plane.shape[0] * spacing[1], plane.shape[1] * spacing[0]
    scale = size / max(height_mm, width_mm)
    shape = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))  # PIL: (w, h)
    grey = np.clip((plane - low) / max(high - low, 1e-6), 0, 1)
    grey = np.asarray(Image.fromarray((255 * grey).astype(np.uint8)).resize(shape,
                                                                            Image.BILINEAR))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:  # outlined at the picture's own size, so no edge is lost
        small = np.asarray(Image.fromarray(np.asarray(labels[k], np.uint8)).resize(
            shape, Image.NEAREST))
        for segment in prediction.segments:
            mask = small == segment.label
            edge = mask & ~ndimage.binary_erosion(mask)
            rgb[edge] = (255 * np.asarray(segment.color)).astype(np.uint8)
    return rgb


def save_thumbnail(prediction: OverviewContent, path: str | os.PathLike[str],
                   size: int = 160) -> None:
    from PIL import Image

    from oncoseg.io.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(thumbnail(prediction, size)).save(tmp, format="PNG", optimize=True)
