"""A picture a person can check at a glance: the display image with the result on top.

For segmentation tasks: the axial slice where the segmentation is largest, shown plain and with
the probability map and segment outlines; for several segments also the coronal and sagittal
slices with most of the result, so that organs above or beside that slice are seen too. A
legend names each segment with its colour and volume. For staging: the T2w slice the network
scored highest with the ROI box it read, and the slice scores against the decision threshold.
For other classification tasks: the middle slice and the class probabilities.

Images are shown as a radiologist's viewer shows them: in the canonical orientation of
:mod:`oncoseg.orientation` with patient's right on the viewer's left, anterior up (axial),
superior up (coronal, sagittal) and anterior on the left (sagittal), as Slicer's slice views
(``vtkMRMLSliceNode::Get{Axial,Coronal,Sagittal}SliceToRASMatrix``, Slicer v5.10.0). Every
image panel is a square of the same size and scale (millimetres), with orientation letters
read from the image direction (an oblique image gets two letters, the nearer axis first) and a
scale bar; the figure is built by :func:`overview_figure` so that it can be checked without a
file, and its texts are fitted inside it (see :mod:`oncoseg.overview_layout`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from oncoseg.orientation import to_canonical
from oncoseg.overview_layout import (
    add_scale_bar,
    arrange,
    fitted_texts,
    orientation_letters,
    wrapped,
)


class _Segment(Protocol):
    @property
    def label(self) -> int: ...

    @property
    def name(self) -> str: ...

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

    @property
    def details(self) -> Mapping[str, Any]: ...

    def segment_volumes_ml(self) -> Mapping[str, float]: ...


def _best_slice(labels: np.ndarray | None, depth: int) -> int:
    """The axial slice with most of the result; the middle one without a result."""
    if labels is None or not labels.any():
        return depth // 2
    return _busiest(labels, 0)


def _shown_slice(prediction: OverviewContent
                 ) -> tuple[sitk.Image, np.ndarray | None, int, np.ndarray, float, float]:
    """What both pictures show: the display image in the canonical orientation, its label map
    (z, y, x), the slice k with most of the result, that slice as float32 and its grey window
    (1st to 99.5th percentile, without the padding a resampling filled in)."""
    image = to_canonical(prediction.images[prediction.display_role])
    labels = None
    if prediction.labels is not None:
        labels = sitk.GetArrayFromImage(to_canonical(prediction.labels))
    k = _best_slice(labels, image.GetSize()[2])
    plane = np.asarray(sitk.GetArrayViewFromImage(image)[k], np.float32)  # one slice, no copy
    low, high = _window(plane)
    return image, labels, k, plane, low, high


# Planes: the array axis (z, y, x) held fixed, the canonical image axes (x, y, z) that run to
# the viewer's right and down with their signs, and whether the array's rows are turned over
# (superior up).
_PLANES: dict[str, tuple[int, tuple[int, float], tuple[int, float], bool]] = {
    "axial": (0, (0, 1.0), (1, 1.0), False),
    "coronal": (1, (0, 1.0), (2, -1.0), True),
    "sagittal": (2, (1, 1.0), (2, -1.0), True),
}


@dataclass(frozen=True)
class Plane:
    """One slice as the viewer shows it: rows top to bottom, columns left to right."""

    name: str  # axial, coronal, sagittal
    index: int  # the slice, counted along the canonical array axis
    count: int  # slices along that axis
    grey: np.ndarray
    labels: np.ndarray | None
    probability: np.ndarray | None  # the largest of the maps, or None
    row_mm: float
    column_mm: float
    right_lps: tuple[float, float, float]  # the direction to the viewer's right
    down_lps: tuple[float, float, float]

    @property
    def extent_mm(self) -> tuple[float, float, float, float]:
        """imshow's (left, right, bottom, top): voxel centres at whole multiples of spacing."""
        rows, columns = self.grey.shape
        return (-self.column_mm / 2, (columns - 0.5) * self.column_mm,
                (rows - 0.5) * self.row_mm, -self.row_mm / 2)


def _cut(array: np.ndarray, axis: int, index: int, flip: bool) -> np.ndarray:
    plane = np.take(array, index, axis=axis)  # (y, x), (z, x) or (z, y)
    return plane[::-1] if flip else plane


def _map_plane(maps: Mapping[str, sitk.Image], name: str, canonical: sitk.Image, axis: int,
               index: int) -> np.ndarray:
    """One slice of the canonical grid of a map, and only that slice: a map kept on another
    grid (``oncoseg.prediction.ResampledMaps``) is resampled straight onto it, one on the
    display grid is cut (the canonical grid's voxel centres are the stored ones, reordered)."""
    size = list(canonical.GetSize())
    start = [0, 0, 0]
    size[2 - axis], start[2 - axis] = 1, index
    plane = sitk.Extract(canonical, size, start)
    onto = getattr(maps, "onto", None)
    if onto is not None:
        picked = onto(name, plane)
    else:
        picked = sitk.Resample(maps[name], plane, sitk.Transform(), sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
    return np.take(sitk.GetArrayFromImage(picked), 0, axis=axis).astype(np.float32)


def _plane(maps: Mapping[str, sitk.Image], image: sitk.Image, labels: np.ndarray | None,
           name: str, index: int) -> Plane:
    axis, (right_axis, right_sign), (down_axis, down_sign), flip = _PLANES[name]
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = image.GetSpacing()
    grey = np.asarray(_cut(sitk.GetArrayViewFromImage(image), axis, index, flip), np.float32)
    probability = None
    for map_name in maps:
        one = _map_plane(maps, map_name, image, axis, index)
        one = one[::-1] if flip else one
        probability = one if probability is None else np.maximum(probability, one)
    return Plane(
        name=name, index=index, count=image.GetSize()[2 - axis], grey=grey,
        labels=None if labels is None else _cut(labels, axis, index, flip),
        probability=probability,
        row_mm=float(spacing[down_axis]), column_mm=float(spacing[right_axis]),
        right_lps=tuple(float(v) for v in right_sign * direction[:, right_axis]),
        down_lps=tuple(float(v) for v in down_sign * direction[:, down_axis]))


def _busiest(labels: np.ndarray, axis: int) -> int:
    """The slice along ``axis`` with most labelled voxels."""
    others = tuple(a for a in range(3) if a != axis)
    return int(np.argmax((labels > 0).sum(axis=others)))


def _volume_text(ml: float) -> str:
    return f"{ml:.1f} mL" if ml >= 0.95 or ml == 0 else f"{ml:.2f} mL"


def legend_label(name: str, ml: float) -> str:
    """A legend entry: the segment's name and volume, wrapped to the legend's width."""
    return wrapped(f"{name}: {_volume_text(ml)}", 30)


def padding(plane: np.ndarray) -> np.ndarray:
    """The voxels a resampling filled in (one constant value, reaching the slice's edge, as
    rectal's T2w on the DWI grid has): shown black like the space around the image rather
    than as grey bands. A value counts as filling when it holds a tenth of the edge voxels;
    what it marks is its runs connected to the edge."""
    from scipy import ndimage

    edge = np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]])
    values, counts = np.unique(edge, return_counts=True)
    if not len(values) or counts.max() < max(2, 0.1 * edge.size):
        return np.zeros(plane.shape, bool)
    same = plane == values[np.argmax(counts)]
    parts, _ = ndimage.label(same)
    touching = np.unique(np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]))
    return np.isin(parts, touching[touching > 0])


def _window(plane: np.ndarray) -> tuple[float, float]:
    """The grey window: 1st to 99.5th percentile of the slice without its padding."""
    shown = plane[~padding(plane)]
    if not shown.size:
        shown = plane.ravel()
    low, high = np.percentile(shown, [1, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _draw_plane(ax: Any, plane: Plane, window: tuple[float, float], field_mm: float,
                segments: Sequence[_Segment], overlay: str, title: str) -> Any:
    """One image panel: the slice in grey, with ``overlay`` "probability" (the heat map and
    each segment's outline in its colour) or "segments" (each segment filled and outlined in
    its colour) or "" (none); orientation letters, a scale bar, a square field of ``field_mm``
    around the slice's centre (black outside it, as a viewer shows it)."""
    from matplotlib.colors import to_rgba

    extent = plane.extent_mm
    ax.set_facecolor("black")
    ax.imshow(np.ma.masked_where(padding(plane.grey), plane.grey), cmap="gray",
              vmin=window[0], vmax=window[1], extent=extent, interpolation="nearest",
              aspect="equal")
    mappable = None
    if overlay == "probability" and plane.probability is not None:
        shown = np.ma.masked_less(plane.probability, 0.05)
        mappable = ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.55, extent=extent,
                             interpolation="nearest", aspect="equal")
    if overlay and plane.labels is not None:
        rows, columns = plane.labels.shape
        xs = np.arange(columns) * plane.column_mm
        ys = np.arange(rows) * plane.row_mm
        fill = np.zeros((rows, columns, 4))
        for segment in segments:
            mask = plane.labels == segment.label
            if not mask.any():
                continue
            colour = to_rgba(segment.color)
            if overlay == "segments" or rows < 2 or columns < 2:
                fill[mask] = (*colour[:3], 0.4 if rows > 1 and columns > 1 else 0.8)
            if rows > 1 and columns > 1:
                ax.contour(xs, ys, mask.astype(float), levels=[0.5], linewidths=1.6,
                           colors=[colour])
        if fill[..., 3].any():
            ax.imshow(fill, extent=extent, interpolation="nearest", aspect="equal")
    centre_x = (extent[0] + extent[1]) / 2
    centre_y = (extent[2] + extent[3]) / 2
    ax.set_xlim(centre_x - field_mm / 2, centre_x + field_mm / 2)
    ax.set_ylim(centre_y + field_mm / 2, centre_y - field_mm / 2)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    orientation_letters(ax, plane.right_lps, plane.down_lps)
    add_scale_bar(ax, field_mm)
    return mappable


def _plane_title(role: str, plane: Plane, plain: bool) -> str:
    where = f"{plane.name} {plane.index + 1}/{plane.count}"
    return f"{role}, {where}" if plain else where


def _segmentation_figure(prediction: OverviewContent, figure: Any) -> None:
    from matplotlib.patches import Patch

    image, labels, k, _, _, _ = _shown_slice(prediction)
    segments = list(prediction.segments)
    names = ["axial"] if len(segments) <= 1 or labels is None else \
        ["axial", "coronal", "sagittal"]
    planes = [_plane(prediction.probabilities, image, labels, "axial", k)]
    for name in names[1:]:  # segments filled, no heat map: no map is resampled for them
        index = _busiest(labels, _PLANES[name][0]) if labels is not None and labels.any() \
            else image.GetSize()[2 - _PLANES[name][0]] // 2
        planes.append(_plane({}, image, labels, name, index))
    field = max(max(p.grey.shape[0] * p.row_mm, p.grey.shape[1] * p.column_mm) for p in planes)
    axes = [figure.add_axes((0, 0, 1, 1)) for _ in range(len(planes) + 1)]
    window = _window(planes[0].grey)
    _draw_plane(axes[0], planes[0], window, field, segments, "",
                _plane_title(prediction.display_role, planes[0], True))
    mappable = None
    for ax, plane in zip(axes[1:], planes, strict=True):
        overlay = "probability" if plane.name == "axial" else "segments"
        mappable = _draw_plane(ax, plane, window, field, segments, overlay,
                               _plane_title(prediction.display_role, plane, False)) or mappable
    volumes = prediction.segment_volumes_ml()
    handles = [Patch(facecolor=s.color, edgecolor="black", linewidth=0.5,
                     label=legend_label(s.name, float(volumes.get(s.name, 0.0))))
               for s in segments]
    side = figure.add_axes((0, 0, 1, 1))
    side.set_axis_off()
    legend = side.legend(handles=handles, loc="upper left", frameon=False, fontsize=8.5,
                         title="Segment: volume", title_fontsize=9, borderaxespad=0.0,
                         alignment="left") \
        if handles else None
    colorbar_ax = None
    if mappable is not None:
        colorbar_ax = figure.add_axes((0, 0, 1, 1))
        figure.colorbar(mappable, cax=colorbar_ax, orientation="horizontal",
                        label="probability" if len(planes) == 1 else
                        "probability (axial overlay)")
    arrange(figure, axes, side, legend, colorbar_ax, _title(prediction))


def _title(prediction: OverviewContent) -> str:
    return f"OncoSeg {prediction.task}: {prediction.model.get('name', '')}".rstrip(": ")


def _staging_figure(prediction: OverviewContent, figure: Any) -> None:
    """The T2w slice the network scored highest with the ROI box it cropped, and the slice
    scores against the threshold; the stage and P(T3) head the legend."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator

    details = prediction.details
    image = to_canonical(prediction.images[prediction.display_role])
    depth = image.GetSize()[2]
    scores = [float(v) for v in details["slice_p_t3"]]
    centres = details.get("slice_centres_lps_mm") or []
    if len(centres) == len(scores):  # the network's slices placed on the shown grid
        positions = [image.TransformPhysicalPointToContinuousIndex([float(c) for c in centre])[2]
                     for centre in centres]
    else:
        positions = [float(i) for i in range(len(scores))]
    best = int(np.argmax(scores)) if scores else 0
    k = int(np.clip(round(positions[best]), 0, depth - 1)) if scores else depth // 2
    plane = _plane({}, image, None, "axial", k)
    field = max(plane.grey.shape[0] * plane.row_mm, plane.grey.shape[1] * plane.column_mm)
    image_ax, curve_ax = figure.add_axes((0, 0, 1, 1)), figure.add_axes((0, 0, 1, 1))
    _draw_plane(image_ax, plane, _window(plane.grey), field, [], "",
                _plane_title(prediction.display_role, plane, True))
    roi = details.get("roi") or {}
    handles: list[Any] = []
    box = _roi_rectangle(image, roi)
    if box is not None:
        (x0, y0), (x1, y1) = box
        spacing = image.GetSpacing()
        image_ax.add_patch(Rectangle((x0 * spacing[0], y0 * spacing[1]),
                                     (x1 - x0) * spacing[0], (y1 - y0) * spacing[1],
                                     fill=False, edgecolor="#00d0ff", linewidth=1.6))
        handles.append(Patch(facecolor="none", edgecolor="#00d0ff", linewidth=1.6,
                             label=f"ROI ({roi.get('source', 'given')})"))
    threshold = float(details.get("threshold", 0.5))
    slices = np.asarray(positions) + 1
    curve_ax.plot(slices, scores, "-o", color="#d62728", markersize=3)
    curve_ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
    curve_ax.axvline(k + 1, color="#00a0c0", linewidth=1)
    curve_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve_ax.set_ylim(0, 1)
    curve_ax.set_xlim(0.5, depth + 0.5)
    curve_ax.set_xlabel("axial slice (inferior to superior)", fontsize=8)
    curve_ax.set_ylabel("slice P(T3)", fontsize=8)
    curve_ax.tick_params(labelsize=7)
    curve_ax.set_title("slice scores", fontsize=9)
    handles += [Line2D([], [], color="#d62728", marker="o", markersize=3, label="slice P(T3)"),
                Line2D([], [], color="black", linestyle="--", label=f"threshold {threshold:.2f}"),
                Line2D([], [], color="#00a0c0", label=f"shown slice {k + 1}")]
    p_t3 = float(details.get("p_t3", prediction.class_probabilities.get("T3", 0.0)))
    calibrated = "calibrated" if details.get("calibrated") else "uncalibrated"
    heading = (f"{details.get('stage', '')}: P(T3) = {p_t3:.2f}\n"
               f"{'at or above' if p_t3 >= threshold else 'below'} threshold "
               f"{threshold:.2f} ({calibrated})")
    side = figure.add_axes((0, 0, 1, 1))
    side.set_axis_off()
    legend = side.legend(handles=handles, loc="upper left", frameon=False, fontsize=8.5,
                         title=heading, title_fontsize=9, borderaxespad=0.0, alignment="left")
    legend.get_title().set_multialignment("left")
    arrange(figure, [image_ax, curve_ax], side, legend, None, _title(prediction),
            plot_axes=[curve_ax])


def _roi_rectangle(image: sitk.Image, roi: Mapping[str, Any]
                   ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The crop's (x0, y0), (x1, y1) in voxel edges of the shown (canonical) grid: from its
    corners in LPS mm when the result gives them (exact on a coarser overview grid too), else
    from its voxel indices, which count on the grid the network read (the same one unless the
    overview was drawn on a coarser copy)."""
    corners = roi.get("corners_lps_mm")
    if corners:
        points = [image.TransformPhysicalPointToContinuousIndex([float(v) for v in c])
                  for c in corners]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (min(xs), min(ys)), (max(xs), max(ys))
    crop = roi.get("crop_voxels")
    if crop:
        (x0, x1), (y0, y1) = crop["x"], crop["y"]
        return (x0 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5)
    return None


def _classification_figure(prediction: OverviewContent, figure: Any) -> None:
    """The middle slice and a bar per class probability (a classification without slice
    scores)."""
    image = to_canonical(prediction.images[prediction.display_role])
    plane = _plane({}, image, None, "axial", image.GetSize()[2] // 2)
    field = max(plane.grey.shape[0] * plane.row_mm, plane.grey.shape[1] * plane.column_mm)
    image_ax, bar_ax = figure.add_axes((0, 0, 1, 1)), figure.add_axes((0, 0, 1, 1))
    _draw_plane(image_ax, plane, _window(plane.grey), field, [], "",
                _plane_title(prediction.display_role, plane, True))
    names = list(prediction.class_probabilities)
    values = [float(prediction.class_probabilities[n]) for n in names]
    bar_ax.barh(range(len(names)), values, color="#4c72b0")
    bar_ax.set_yticks(range(len(names)), [wrapped(n, 16) for n in names], fontsize=8)
    bar_ax.set_xlim(0, 1)
    bar_ax.set_xlabel("probability", fontsize=8)
    bar_ax.tick_params(labelsize=7)
    bar_ax.set_title("class probabilities", fontsize=9)
    side = figure.add_axes((0, 0, 1, 1))
    side.set_axis_off()
    text = "\n".join(f"P({n}) = {v:.2f}" for n, v in zip(names, values, strict=True))
    side.text(0, 1, text, va="top", ha="left", fontsize=9, transform=side.transAxes)
    arrange(figure, [image_ax, bar_ax], side, None, None, _title(prediction),
            plot_axes=[bar_ax])


def overview_figure(prediction: OverviewContent) -> Any:
    """The overview of ``prediction`` as a matplotlib Figure (not registered with pyplot; no
    file written), its texts fitted inside it: what :func:`save_overview` saves, and what a
    test reads (legend entries, orientation letters, scale bars) without rendering pixels."""
    from matplotlib.figure import Figure

    figure = Figure(dpi=110)
    if prediction.labels is not None:
        _segmentation_figure(prediction, figure)
    elif "slice_p_t3" in prediction.details:
        _staging_figure(prediction, figure)
    else:
        _classification_figure(prediction, figure)
    fitted_texts(figure)
    return figure


def save_overview(prediction: OverviewContent, path: str | os.PathLike[str]) -> None:
    """Draw ``prediction`` (a :class:`oncoseg.prediction.Prediction`, or anything that offers
    what :class:`OverviewContent` lists) into a PNG at ``path``."""
    overview_figure(prediction).savefig(os.fspath(path), format="png")


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
    grey[padding(plane)] = 0.0  # black like the report's page behind it, not grey bands
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
