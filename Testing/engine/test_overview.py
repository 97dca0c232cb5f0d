"""The overview picture a radiologist opens first (issue 24): read from the matplotlib figure's
objects (legend texts, orientation letters, scale bars, image extents), never from pixels.

A small body with a bright cube in its left-anterior-superior octant, labelled as each task's
segments, is stored as DICOM does (LPS), as NIfTI writers do (RAS) and tilted by 20 degrees.
Where the cube lands on each panel is computed from the image artist's array and extent (the
figure's own data-to-screen transform), and must lie on the side whose letter is L, A or S:
the letters are checked against the anatomy, not against the code that writes them. Slicer's
slice views put the patient's right on the screen's left, anterior up in axial, superior up in
coronal and sagittal, and anterior on the left in sagittal (Slicer v5.10.0,
Libs/MRML/Core/vtkMRMLSliceNode.cxx, Get{Axial,Coronal,Sagittal}SliceToRASMatrix).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from oncoseg import verbs
from oncoseg.method import Hints
from oncoseg.orientation import orientation_of
from oncoseg.overview import overview_figure, save_overview
from oncoseg.overview_layout import LETTER_GID, SCALE_GID, direction_letters, texts_outside
from oncoseg.prediction import Prediction, overview_prediction
from oncoseg.tasks import SegmentSpec, get_task

SIZE, SPACING = (40, 36, 14), (2.0, 2.5, 4.0)  # x, y, z
OPPOSITE = {"L": "R", "P": "A", "S": "I", "R": "L", "A": "P", "I": "S"}
SEGMENTATION_TASKS = ("rectal", "brain", "oar-ct", "oar-mr")


def _phantom(task: str, segments, direction=None):
    """(image, labels, probability maps) in LPS: a body ellipse (100), a cube (1000) at the
    patient's left, anterior, superior, cut into one slab per segment along x (left to right
    in the array), each segment labelled; the maps are the labels, slightly blurred."""
    z, y, x = np.mgrid[0:SIZE[2], 0:SIZE[1], 0:SIZE[0]]
    grey = np.where(((x - 20) / 18) ** 2 + ((y - 18) / 16) ** 2 < 1, 100.0, 0.0)
    cube = (x >= 24) & (x < 36) & (y >= 5) & (y < 15) & (z >= 8) & (z < 13)
    grey[cube] = 1000.0
    labels = np.zeros(grey.shape, np.uint8)
    edges = np.linspace(24, 36, len(segments) + 1).round().astype(int)
    for segment, start, stop in zip(segments, edges[:-1], edges[1:], strict=True):
        labels[cube & (x >= start) & (x < stop)] = segment.label

    def image(array, pixel):
        made = sitk.Cast(sitk.GetImageFromArray(array), pixel)
        made.SetSpacing(SPACING)
        made.SetOrigin((-40.0, -45.0, -28.0))
        if direction is not None:
            made.SetDirection(direction)
        return made

    maps = {s.name: sitk.SmoothingRecursiveGaussian(image((labels == s.label).astype(float),
                                                          sitk.sitkFloat32), 2.0)
            for s in segments}
    return image(grey, sitk.sitkInt16), image(labels, sitk.sitkUInt8), maps


def _stored(image, orientation):
    return image if orientation == "LPS" else sitk.DICOMOrient(image, orientation)


def _prediction(task: str, orientation: str = "LPS", direction=None, segments=None,
                model_name="demo model (synthetic phantoms, not for clinical use)"):
    spec = get_task(task)
    segments = tuple(segments or spec.segments)
    grey, labels, maps = _phantom(task, segments, direction)
    role = spec.inputs[0].name
    return Prediction(task=task, model={"name": model_name},
                      images={role: _stored(grey, orientation)}, display_role=role,
                      segments=segments, labels=_stored(labels, orientation),
                      probabilities={n: _stored(m, orientation) for n, m in maps.items()})


def _image_axes(figure):
    """The image panels: the axes that carry a scale bar."""
    return [ax for ax in figure.axes
            if any(a.get_gid() == SCALE_GID for a in ax.artists)]


def _letters(ax):
    return {t.get_gid()[len(LETTER_GID):]: t.get_text() for t in ax.texts
            if (t.get_gid() or "").startswith(LETTER_GID)}


def _cube_side(ax):
    """Which side of the panel's centre the bright cube is drawn on, through the figure's own
    transform from the grey image's extent: ('left'|'right', 'top'|'bottom')."""
    grey = next(i for i in ax.get_images() if i.get_cmap().name == "gray")
    array = np.ma.filled(grey.get_array(), 0)
    rows, columns = np.nonzero(array > 500)
    assert rows.size, "the cube is not on this panel"
    left, right, bottom, top = grey.get_extent()
    height, width = array.shape
    x = left + (columns.mean() + 0.5) * (right - left) / width
    y = top + (rows.mean() + 0.5) * (bottom - top) / height  # row 0 is drawn at 'top'
    screen = ax.transData.transform((x, y))
    box = ax.get_window_extent()
    return ("right" if screen[0] > (box.x0 + box.x1) / 2 else "left",
            "top" if screen[1] > (box.y0 + box.y1) / 2 else "bottom")


def _check_letters_against_the_cube(figure):
    """On every panel the cube's side carries L, A or S and the far side its opposite; the
    panels together show the axial (L-R, A-P), coronal (L-R, S-I), sagittal (A-P, S-I)
    pairs in the order they were drawn. Returns the letters per panel."""
    found = []
    for ax in _image_axes(figure):
        letters = _letters(ax)
        assert set(letters) == {"left", "right", "top", "bottom"}
        horizontal, vertical = _cube_side(ax)
        far = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
        for side in (horizontal, vertical):
            near_letter, far_letter = letters[side][0], letters[far[side]][0]
            assert near_letter in "LAS", (ax.get_title(), letters)
            assert far_letter == OPPOSITE[near_letter], (ax.get_title(), letters)
        found.append(letters)
    return found


def _legend_entries(figure):
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    return legends[0]


def _volumes(prediction):
    """Each segment's volume (mL) counted here with numpy, not by the prediction."""
    array = sitk.GetArrayFromImage(prediction.labels)
    voxel_ml = float(np.prod(prediction.labels.GetSpacing())) / 1000.0
    return {s.name: float((array == s.label).sum()) * voxel_ml for s in prediction.segments}


def _check_fits(figure):
    """No text leaves the figure; no title runs over a panel, the legend or the colour bar;
    the image panels are equal squares."""
    figure.canvas.draw()
    assert texts_outside(figure) == []
    renderer = figure.canvas.get_renderer()
    titles = [figure._suptitle] + [ax.title for ax in figure.axes]
    for title in titles:
        if title is None or not title.get_text():
            continue
        box = title.get_window_extent(renderer)
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), \
                (title.get_text(), ax.get_title())
    sizes = {(round(ax.get_window_extent().width), round(ax.get_window_extent().height))
             for ax in _image_axes(figure)}
    assert len(sizes) == 1 and len({*next(iter(sizes))}) == 1, sizes


@pytest.mark.parametrize("task", SEGMENTATION_TASKS)
def test_each_segmentation_overview_names_every_segment_with_its_colour_and_volume(task):
    prediction = _prediction(task)
    figure = overview_figure(prediction)
    legend = _legend_entries(figure)
    expected = _volumes(prediction)
    texts = [" ".join(t.get_text().split()) for t in legend.get_texts()]
    assert len(texts) == len(prediction.segments) == len(expected)
    for text, handle, segment in zip(texts, legend.legend_handles, prediction.segments,
                                     strict=True):
        name, ml = re.fullmatch(r"(.+): ([0-9.]+) mL", text).groups()
        assert name == segment.name
        assert float(ml) == pytest.approx(expected[segment.name], abs=0.051)
        assert expected[segment.name] > 0
        np.testing.assert_allclose(handle.get_facecolor()[:3], segment.color, atol=1e-6)
    panels = _image_axes(figure)
    # one segment: the plain and the overlaid axial slice; several: also coronal and sagittal
    assert len(panels) == (2 if len(prediction.segments) == 1 else 4)
    role = prediction.display_role
    planes = ["axial", "axial", "coronal", "sagittal"][:len(panels)]
    assert [ax.get_title().split(" ")[-2] for ax in panels] == planes
    assert panels[0].get_title().startswith(f"{role}, axial ")
    _check_letters_against_the_cube(figure)
    _check_fits(figure)


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PSL"])
def test_the_letters_follow_the_anatomy_whatever_the_storage_order(orientation):
    stored = overview_figure(_prediction("brain", orientation))
    letters = _check_letters_against_the_cube(stored)
    assert letters == [
        {"left": "R", "right": "L", "top": "A", "bottom": "P"},  # plain axial
        {"left": "R", "right": "L", "top": "A", "bottom": "P"},
        {"left": "R", "right": "L", "top": "S", "bottom": "I"},  # coronal
        {"left": "A", "right": "P", "top": "S", "bottom": "I"}]  # sagittal, as Slicer's


def test_an_oblique_image_gets_two_letters_nearest_axis_first():
    angle = np.radians(20)
    # the image's x axis turned from L towards P, its y axis from P towards R (about S)
    direction = (np.cos(angle), -np.sin(angle), 0.0,
                 np.sin(angle), np.cos(angle), 0.0,
                 0.0, 0.0, 1.0)
    letters = _check_letters_against_the_cube(overview_figure(_prediction("rectal",
                                                                          direction=direction)))
    assert letters[0] == {"left": "RA", "right": "LP", "top": "AL", "bottom": "PR"}
    assert direction_letters((0.02, 0.0, -1.0)) == "I"  # a tilt under 5 degrees: one letter


def test_every_image_panel_has_a_scale_bar_in_millimetres():
    prediction = _prediction("oar-ct")
    figure = overview_figure(prediction)
    for ax in _image_axes(figure):
        [bar] = [a for a in ax.artists if a.get_gid() == SCALE_GID]
        assert isinstance(bar, AnchoredSizeBar)
        length = float(re.fullmatch(r"([0-9.]+) mm", bar.txt_label.get_text()).group(1))
        [rectangle] = bar.size_bar.get_children()
        assert rectangle.get_width() == pytest.approx(length)
        # the panel's data units are millimetres: its grey image spans columns x spacing
        grey = ax.get_images()[0]
        left, right, bottom, top = grey.get_extent()
        rows, columns = grey.get_array().shape
        spacings = {"axial": (SPACING[0], SPACING[1]), "coronal": (SPACING[0], SPACING[2]),
                    "sagittal": (SPACING[1], SPACING[2])}
        plane = next(p for p in spacings if p in ax.get_title())
        assert (right - left) == pytest.approx(columns * spacings[plane][0])
        assert (bottom - top) == pytest.approx(rows * spacings[plane][1])
        assert 0 < length <= (right - left)


def test_long_names_are_wrapped_or_shrunk_inside_the_figure():
    segments = (SegmentSpec(1, "Necrotic and non-enhancing tumour core of a rather long name "
                               "that no legend column could hold on one line", (0.9, 0.2, 0.2)),
                SegmentSpec(2, "Peritumoral oedema", (0.2, 0.8, 0.2)))
    prediction = _prediction("brain", segments=segments,
                             model_name="a model file whose name and description run on for "
                                        "far longer than the width of the four panels of the "
                                        "picture, as a user-trained model's may " * 2)
    figure = overview_figure(prediction)
    _check_fits(figure)
    assert "\n" in figure._suptitle.get_text()
    # a name of wide letters, wider than the wrapping reckoned, is shrunk until it fits
    unbroken = _prediction("rectal", model_name="W" * 300)
    figure = overview_figure(unbroken)
    _check_fits(figure)
    assert figure._suptitle.get_fontsize() < 11


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The staging demo model on a RAS-stored phantom with an ROI box (LPS mm); one
    test-time pass (the model fixes N4): the picture, not the stage, is under test here. The
    box the picture draws is the crop the network read: the demo's 80 mm square (crop_mm)
    centred on the 56 x 54 mm ROI."""
    root = tmp_path_factory.mktemp("staging")
    [case] = verbs.phantom("staging", root, cases=1, seed=5, orientation="RAS")
    t2w = sitk.ReadImage(str(case / "t2w.nii.gz"))
    roi = (-30.0, -20.0, -20.0, 26.0, 34.0, 20.0)
    prediction = verbs.predict("staging", {"t2w": t2w}, "demo", overrides={"tta": 1},
                               hints=Hints(roi_lps_mm=roi))
    assert orientation_of(prediction.images["t2w"]) == "RAS"
    centre = (np.asarray(roi[:3]) + np.asarray(roi[3:])) / 2  # the 80 mm square round it
    return prediction, (centre[0] - 40, centre[1] - 40, roi[2], centre[0] + 40, centre[1] + 40,
                        roi[5])


def _drawn_box(figure, prediction):
    """The ROI rectangle on the image panel, in LPS mm (the panel's millimetres count from
    the first voxel centre of the canonical grid it shows)."""
    [image_ax] = _image_axes(figure)  # the T2w once, not twice
    [box] = [p for p in image_ax.patches if isinstance(p, Rectangle)]
    canonical = sitk.DICOMOrient(prediction.images["t2w"], "LPS")
    origin = np.asarray(canonical.GetOrigin())
    x0, y0 = box.get_xy()
    return (np.asarray([x0, y0, x0 + box.get_width(), y0 + box.get_height()])
            + np.tile(origin[:2], 2)), canonical.GetSpacing()


def test_the_staging_overview_shows_the_roi_box_and_the_slice_scores(staged):
    prediction, roi = staged
    figure = overview_figure(prediction)
    [image_ax] = _image_axes(figure)
    assert _letters(image_ax) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    drawn, spacing = _drawn_box(figure, prediction)
    np.testing.assert_allclose(drawn, [roi[0], roi[1], roi[3], roi[4]], atol=max(spacing[:2]))
    # the curve: one point per slice, the threshold, the slice shown is the highest score
    [curve_ax] = [ax for ax in figure.axes if ax.get_title() == "slice scores"]
    lines = curve_ax.get_lines()
    scores = prediction.details["slice_p_t3"]
    [curve] = [line for line in lines if len(line.get_ydata()) == len(scores)]
    np.testing.assert_allclose(curve.get_ydata(), scores)
    threshold = prediction.details["threshold"]
    assert any(np.allclose(line.get_ydata(), threshold) and line.get_linestyle() == "--"
               for line in lines)
    shown = int(re.search(r"axial (\d+)/", image_ax.get_title()).group(1))
    # the canonical slice order (the network's) runs inferior to superior, as the picture's
    assert shown == int(np.argmax(scores)) + 1
    legend = _legend_entries(figure)
    title = legend.get_title().get_text()
    assert prediction.details["stage"] in title and f"{threshold:.2f}" in title
    assert any(isinstance(h, Line2D) for h in legend.legend_handles)
    _check_fits(figure)


def test_the_roi_box_keeps_its_place_on_a_coarser_overview_grid(staged, monkeypatch):
    """A large T2w is drawn from a coarser copy (overview_prediction): the box is placed by
    its corners in LPS mm, not by voxel indices of the grid the network read."""
    prediction, roi = staged
    monkeypatch.setattr("oncoseg.prediction.OVERVIEW_MAX_VOXELS", 100_000)
    coarse = overview_prediction(prediction)
    assert coarse.images["t2w"].GetSpacing()[0] > 1.5 * prediction.images["t2w"].GetSpacing()[0]
    drawn, spacing = _drawn_box(overview_figure(coarse), coarse)
    np.testing.assert_allclose(drawn, [roi[0], roi[1], roi[3], roi[4]], atol=max(spacing[:2]))


def test_a_classification_without_slice_scores_shows_its_class_probabilities(tmp_path):
    grey, _, _ = _phantom("staging", ())
    prediction = Prediction(task="staging", model={"name": "m"}, images={"t2w": grey},
                            display_role="t2w", class_probabilities={"T2": 0.3, "T3": 0.7})
    figure = overview_figure(prediction)
    assert len(_image_axes(figure)) == 1
    [bars] = [ax for ax in figure.axes if ax.get_title() == "class probabilities"]
    assert [round(p.get_width(), 6) for p in bars.patches] == [0.3, 0.7]
    _check_fits(figure)
    save_overview(prediction, tmp_path / "overview.png")
    assert (tmp_path / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_padding_a_resampling_filled_in_is_shown_as_background():
    """Rectal's T2w on the DWI grid is filled with one value where the T2w did not reach: the
    grey bands of issue 24. They are masked (black like the field around the image); the
    window ignores them."""
    prediction = _prediction("rectal")
    array = sitk.GetArrayFromImage(prediction.images["t2w"]).astype(np.float32)
    array[:, :4, :] = 57.0
    array[:, :, -3:] = 57.0
    padded = sitk.GetImageFromArray(array)
    padded.CopyInformation(prediction.images["t2w"])
    prediction.images["t2w"] = padded
    figure = overview_figure(prediction)
    grey = _image_axes(figure)[0].get_images()[0]
    shown = grey.get_array()
    assert shown.mask[:4].all() and shown.mask[:, -3:].all()
    assert not shown.mask[10:20, 10:20].any()
    # the cohort report's thumbnail too: the bands black, the image grey
    from oncoseg.overview import thumbnail

    small = thumbnail(prediction, size=64)
    assert small[0].max() == 0 and small[:, -1].max() == 0
    assert small[small.shape[0] // 2].max() > 0
