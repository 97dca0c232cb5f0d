"""The review app's refine (issue 23: "the browser review app offers the same") on a rectal
phantom case run through the session on a real MRML scene (slicer-core): a negative click
removes, a positive one grows, each undo restores exactly, a segment the reader added never
changes, refusals change nothing; and the slice-view pipeline that turns mouse events into
strokes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.verbs import phantom


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    """A session showing the rectal demo model's result on one phantom case."""
    from OncoSegCommonLib.context import MRMLContext
    from OncoSegWebLib.session import ReviewSession

    root = tmp_path_factory.mktemp("refine")
    phantom("rectal", root / "rectal", cases=1, seed=11)
    session = ReviewSession(MRMLContext.headless(), root)
    session.open_case("rectal/rectal_000")
    result = session.run("rectal", device="cpu")
    assert result.segmentation is not None and result.probabilities, result.summary
    return session


def labels(session) -> np.ndarray:
    """Every segment on the reference grid, in order: 1 the tumour, 2 the reader's mark."""
    from OncoSegCommonLib.segmentations import labels_from_segmentation_node

    return sitk.GetArrayFromImage(labels_from_segmentation_node(
        session.result.segmentation, session.result.reference))


def centre_of_tumour(session) -> tuple[int, int, int]:
    """(x, y, z) of the tumour voxel deepest inside the model's segment."""
    inside = labels(session) == 1
    assert inside.sum() > 50, "the demo model found the phantom's tumour"
    depth = ndi.distance_transform_edt(inside)
    z, y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x), int(y), int(z)


def add_mark(session, block: tuple[slice, slice, slice]) -> str:
    """A segment the reader adds by hand ("Reader's mark") holding ``block`` (z, y, x)."""
    import slicer

    from OncoSegCommonLib.refine import modifier_labelmap

    segmentation = session.result.segmentation
    segment_id = segmentation.GetSegmentation().AddEmptySegment("mark", "Reader's mark")
    shape = tuple(s.stop - s.start for s in block)
    image = modifier_labelmap(np.ones(shape, np.uint8), block, session.result.reference)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, segmentation, segment_id,
                                            logic.MODE_MERGE_MASK)
    return segment_id


def test_negative_removes_positive_grows_undo_restores_and_the_mark_never_changes(shown):
    from OncoSegCommonLib.refine import ras_of_voxel

    session = shown
    reference = session.result.reference
    x, y, z = centre_of_tumour(session)
    model = labels(session)
    # the reader marks a block beside the tumour's centre, inside the refine box (30 mm)
    mark = (slice(z, z + 1), slice(y + 6, y + 9), slice(x - 1, x + 2))
    mark_id = add_mark(session, mark)
    start = labels(session)
    assert (start == 2).sum() == 9 and np.array_equal(start == 1, (model == 1) & (start != 2))

    # a negative scribble across the tumour's centre (by name) removes the voxels under it
    line = [(x + d, y, z) for d in range(-3, 4)]
    removed = session.refine("Rectal tumour", [ras_of_voxel(reference, v) for v in line],
                             positive=False)
    after_negative = labels(session)
    assert removed["segment"] == "Rectal tumour" and not removed["positive"]
    assert removed["removed"] >= len(line) and removed["added"] == 0
    assert removed["changed"] == removed["removed"] and removed["undo_steps"] == 1
    assert all(after_negative[k, j, i] == 0 for i, j, k in line), "the scribble's voxels left"
    assert (after_negative == 1).sum() == (start == 1).sum() - removed["removed"]
    assert np.array_equal(after_negative == 2, start == 2), "the mark never changes"
    assert not ((after_negative == 1) & (start != 1)).any(), "a negative stroke only removes"

    # a positive click just beyond the tumour's edge on the scribble's row (by segment ID this
    # time; away from the negative input, which wins where both lie) grows the segment there
    edge = next(i for i in range(x, -1, -1) if start[z, y, i] == 0)
    assert edge < x - 5, "beyond the negative scribble's seeds (x - 3 and 2 mm around)"
    grown = session.refine(session.result.segmentation.GetSegmentation()
                           .GetNthSegmentID(0), [ras_of_voxel(reference, (edge, y, z))],
                           positive=True)
    after_positive = labels(session)
    assert grown["positive"] and grown["added"] > 0 and grown["removed"] == 0
    assert grown["undo_steps"] == 2 and after_positive[z, y, edge] == 1
    assert (after_positive == 1).sum() == (after_negative == 1).sum() + grown["added"]
    assert np.array_equal(after_positive == 2, start == 2), "the mark never changes"
    assert not ((after_negative == 1) & (after_positive != 1)).any(), "positive only adds"

    # each undo restores the segmentation before its stroke, voxel for voxel
    assert session.undo_refine() == {"segment": "Rectal tumour", "undo_steps": 1}
    np.testing.assert_array_equal(labels(session), after_negative)
    assert session.undo_refine() == {"segment": "Rectal tumour", "undo_steps": 0}
    np.testing.assert_array_equal(labels(session), start)
    with pytest.raises(InputError, match="nothing to undo"):
        session.undo_refine()
    np.testing.assert_array_equal(labels(session), start)

    # after the undo the logic forgot the undone input: the same negative click gives the
    # same answer as the first time
    again = session.refine("Rectal tumour", [ras_of_voxel(reference, v) for v in line],
                           positive=False)
    assert again["removed"] == removed["removed"]
    np.testing.assert_array_equal(labels(session), after_negative)
    session.undo_refine()
    session.result.segmentation.GetSegmentation().RemoveSegment(mark_id)
    np.testing.assert_array_equal(labels(session), model)


def test_refusals_change_nothing(shown, tmp_path):
    from OncoSegCommonLib.context import MRMLContext
    from OncoSegCommonLib.refine import ras_of_voxel
    from OncoSegCommonLib.segmentations import PROBABILITY_REFERENCE_ROLE, link_probability
    from OncoSegWebLib.session import ReviewSession

    session = shown
    reference = session.result.reference
    inside = [ras_of_voxel(reference, centre_of_tumour(session))]
    before = labels(session)
    steps = session.refine_undo_steps

    with pytest.raises(InputError, match="'Liver' is not a segment of the rectal result "
                                         r"\(one of: Rectal tumour\)"):
        session.refine("Liver", inside)
    for points in ([], [(1.0, 2.0)], [(np.nan, 0.0, 0.0)]):
        with pytest.raises(InputError, match="finite RAS points"):
            session.refine("Rectal tumour", points)
    with pytest.raises(InputError, match="outside the segmentation's volume"):
        session.refine("Rectal tumour", [(1e4, 1e4, 1e4)])

    # a result whose probability maps are gone (the links removed and the node renamed, so
    # that the maps' names match it no more)
    segmentation = session.result.segmentation
    name = segmentation.GetName()
    segmentation.RemoveNodeReferenceIDs(PROBABILITY_REFERENCE_ROLE)
    segmentation.SetName("Renamed by the reader")
    try:
        with pytest.raises(InputError, match="rectal result has no probability maps"):
            session.refine("Rectal tumour", inside)
    finally:
        segmentation.SetName(name)
        for segment, node in session.result.probabilities.items():
            link_probability(segmentation, segment, node)
    np.testing.assert_array_equal(labels(session), before)
    assert session.refine_undo_steps == steps

    # no segmentation: nothing shown yet
    empty = ReviewSession(MRMLContext.headless(), tmp_path)
    with pytest.raises(InputError, match="there is none to review"):
        empty.refine("Rectal tumour", inside)
    with pytest.raises(InputError, match="there is none to review"):
        empty.undo_refine()


def test_an_empty_segment_grows_from_one_click_and_its_undo_empties_it(shown):
    """A second segment in the tumour's layer (label value 2) grows under its own value, not
    the tumour's; the undo back to an empty segment (no labelmap extent) clears it."""
    from OncoSegCommonLib.refine import ras_of_voxel

    session = shown
    reference = session.result.reference
    x, y, z = centre_of_tumour(session)
    segmentation = session.result.segmentation.GetSegmentation()
    empty_id = segmentation.AddEmptySegment("empty", "Second look")
    try:
        start = labels(session)
        # a segment the reader added has no map of its own: the image alone carries the
        # click; the tumour's voxels are another segment's and stay the tumour's
        grown = session.refine("Second look", [ras_of_voxel(reference, (x, y, z))])
        after = labels(session)
        assert grown["changed"] == 0 and np.array_equal(after, start), \
            "a click on another segment's voxel adds nothing (it is not the target's)"
        outside = np.argwhere((start == 0) & (ndi.binary_dilation(start == 1, iterations=2)))
        zz, yy, xx = outside[len(outside) // 2]
        grown = session.refine("Second look", [ras_of_voxel(reference, (xx, yy, zz))])
        after = labels(session)
        assert grown["added"] > 0 and after[zz, yy, xx] == 2  # segments in order: 1, 2
        assert np.array_equal(after == 1, start == 1), "the tumour never changes"
        session.undo_refine()
        np.testing.assert_array_equal(labels(session), start)
    finally:
        segmentation.RemoveSegment(empty_id)


def test_a_new_result_starts_a_new_refine_history(shown, tmp_path):
    from OncoSegCommonLib.refine import ras_of_voxel

    session = shown
    steps = session.refine_undo_steps
    session.refine("Rectal tumour", [ras_of_voxel(session.result.reference,
                                                  centre_of_tumour(session))], positive=False)
    assert session.refine_undo_steps == steps + 1
    session.open_case("rectal/rectal_000")  # the case again: its result is gone
    assert session.result is None and session.refine_undo_steps == 0
    with pytest.raises(InputError, match="there is none to review"):
        session.undo_refine()


def test_the_page_turns_slice_view_clicks_into_strokes(shown):
    """The review page without a browser: its slice views' interactors get mouse events at
    display positions, as the browser's clicks arrive (trame-rca); the views' own interactor
    style turns them into RAS (the slice's XYToRAS) and the Refine effect into strokes."""
    pytest.importorskip("trame_slicer", reason="the review app needs oncoseg[web]")
    import vtk
    from trame.app import get_server

    from OncoSegCommonLib.refine import ras_of_voxel
    from OncoSegWebLib.app import ReviewApp
    from OncoSegWebLib.refine_clicks import RefineStrokeEffect

    app = ReviewApp(shown.root, "cpu", get_server("refine-page", client_type="vue3"))
    app.state.ready()  # as the running server: changes made here reach the page's handlers
    app.state.case_id = "rectal/rectal_000"
    app.open_case()
    app._show(app.session.run("rectal", device="cpu"))
    session, editor = app.session, app.editor.segmentation_editor
    assert app.state.has_segmentation and not app.state.refine_on and app.state.refine_undo == 0
    app.state.refine_on = True
    app.state.flush()
    assert editor.get_active_effect_name() == RefineStrokeEffect.get_effect_name()

    view = app.slicer.view_manager.get_slice_views()[0]
    slice_node, interactor = view.get_view_node(), view.interactor()

    def display(ijk):
        """The display position of a voxel's centre on the slice shown (through it)."""
        to_xy = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(slice_node.GetXYToRAS(), to_xy)
        x, y, depth, _ = to_xy.MultiplyPoint((*ras_of_voxel(session.result.reference, ijk),
                                              1.0))
        assert abs(depth) < 0.5, "the voxel lies on the slice shown"
        return round(x), round(y)

    def stroke(voxels, button):
        press, release = {"left": (vtk.vtkCommand.LeftButtonPressEvent,
                                   vtk.vtkCommand.LeftButtonReleaseEvent),
                          "right": (vtk.vtkCommand.RightButtonPressEvent,
                                    vtk.vtkCommand.RightButtonReleaseEvent)}[button]
        slice_node.JumpSliceByCentering(*ras_of_voxel(session.result.reference, voxels[0]))
        positions = [display(v) for v in voxels]
        events = [press] + [vtk.vtkCommand.MouseMoveEvent] * (len(positions) - 1) + [release]
        for position, event in zip([*positions, positions[-1]], events, strict=True):
            interactor.SetEventPosition(*position)
            interactor.InvokeEvent(event)

    model = labels(session)
    x, y, z = centre_of_tumour(session)
    edge = next(i for i in range(x, -1, -1) if model[z, y, i] == 0)
    stroke([(edge, y, z)], "left")  # a left click beyond the edge adds there
    after_click = labels(session)
    assert after_click[z, y, edge] == 1 and (after_click == 1).sum() > (model == 1).sum()
    assert app.state.message.startswith("Refine Rectal tumour: added ")
    assert app.state.refine_undo == 1

    stroke([(x + d, y, z) for d in range(-2, 3)], "right")  # a right drag removes under it
    after_drag = labels(session)
    assert all(after_drag[z, y, x + d] == 0 for d in range(-2, 3))
    assert app.state.message.startswith("Refine Rectal tumour: removed ")

    app.state.refine_remove = True  # the page's "Remove": the left button removes
    app.state.flush()
    inside = next((i, j, k) for k, j, i in np.argwhere(after_drag == 1) if k != z)
    stroke([inside], "left")
    assert labels(session)[inside[2], inside[1], inside[0]] == 0
    assert app.state.refine_undo == 3

    for left, expected in ((2, after_drag), (1, after_click), (0, model)):
        app.undo_refine()
        assert app.state.refine_undo == left
        np.testing.assert_array_equal(labels(session), expected)
    app.undo_refine()
    assert app.state.message_kind == "error" and "nothing to undo" in app.state.message

    # the page's masking settings hold, as Segment Editor's do for Slicer's effect: an
    # intensity range that no voxel of the source volume meets lets nothing change
    app.state.refine_remove = False  # the left button adds again
    app.state.flush()
    modifier = editor.active_segment_modifier
    modifier.set_source_volume_intensity_mask_range(-1e9, -1e8)
    modifier.set_source_volume_intensity_mask_enabled(True)
    stroke([(edge, y, z)], "left")
    assert "nothing changed there" in app.state.message and app.state.refine_undo == 0
    np.testing.assert_array_equal(labels(session), model)
    modifier.set_source_volume_intensity_mask_enabled(False)
    # and a stroke is one step of the editor's own Undo too
    stroke([(edge, y, z)], "left")
    assert labels(session)[z, y, edge] == 1, app.state.message
    editor.undo_stack.undo()
    np.testing.assert_array_equal(labels(session), model)

    # choosing another effect (Paint) ends Refine; clicks then paint, not refine
    editor.set_active_effect_name("trame_slicer.segmentation.segmentation_effect_paint_erase"
                                  ".SegmentationEffectPaint")
    app.state.flush()
    assert not app.state.refine_on
