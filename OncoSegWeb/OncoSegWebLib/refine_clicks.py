"""The review app's slice views turn clicks and drags into refine strokes (trame-slicer).

trame-slicer gives a segment editor effect one pipeline per view (a ``vtkMRMLLayerDM``
scripted pipeline made when the effect's parameter node enters the scene); the view's
interactor style hands the pipeline every mouse event with its position already in RAS: the
slice view's style computes it with the slice node's XYToRAS matrix (``ed->SetWorldPosition``
in Libs/MRML/DisplayableManager/vtkMRMLSliceViewInteractorStyle.cxx at v5.10.0), which is how
trame-slicer's own Islands effect finds the island under a click
(``segmentation_islands_pipeline.py``, trame-slicer 2.0.0). The browser sends right-button
events too (trame-rca), so the page follows Slicer's effect: a left press, drag and release
adds (one click = one point, a drag = a scribble), the right button removes; the page's
Add/Remove choice swaps the two for a one-button mouse or a touch pad.

The stroke goes to a callback (the app calls :meth:`ReviewSession.refine`); nothing here
changes the segmentation. Events with a modifier key pressed and mouse moves with no button
held are left to the view (pan, zoom, window/level, the cursor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slicer import vtkMRMLAbstractViewNode, vtkMRMLNode, vtkMRMLSliceNode
from trame_slicer.segmentation import SegmentationEffect, SegmentationEffectPipeline
from vtkmodules.vtkCommonCore import vtkCommand

Point = tuple[float, float, float]
StrokeCallback = Callable[[list[Point], bool], None]

PRESS = {int(vtkCommand.LeftButtonPressEvent): True,
         int(vtkCommand.RightButtonPressEvent): False}  # True: the left button
RELEASE = {int(vtkCommand.LeftButtonReleaseEvent): True,
           int(vtkCommand.RightButtonReleaseEvent): False}
MOVE = int(vtkCommand.MouseMoveEvent)


class RefineStrokeEffect(SegmentationEffect):
    """The "Refine" mode of the review page: while active, slice-view strokes go to
    ``on_stroke(points_ras, positive)``."""

    def __init__(self) -> None:
        super().__init__()
        self.on_stroke: StrokeCallback | None = None
        self.left_removes = False  # the page's "Remove" choice: the left button removes

    def _create_pipeline(self, view_node: vtkMRMLAbstractViewNode, _parameter: vtkMRMLNode
                         ) -> RefineStrokePipeline | None:
        if isinstance(view_node, vtkMRMLSliceNode):
            return RefineStrokePipeline()
        return None  # strokes are drawn on slices, as in Slicer's effect

    def stroke(self, points: list[Point], left_button: bool) -> None:
        """A finished stroke: the left button adds unless the page chose "Remove"; the right
        button does the opposite of the left."""
        if self.on_stroke is not None and points:
            self.on_stroke(points, left_button != self.left_removes)


class RefineStrokePipeline(SegmentationEffectPipeline[RefineStrokeEffect]):
    """One slice view's events: press starts a stroke, moves extend it, release ends it."""

    def __init__(self) -> None:
        super().__init__()
        self._points: list[Point] | None = None
        self._left = True

    def _handles(self, event_data: Any) -> bool:
        kind = event_data.GetType()
        if kind in PRESS:
            return not event_data.GetModifiers()
        return self._points is not None and (kind == MOVE or kind in RELEASE)

    def CanProcessInteractionEvent(self, event_data: Any) -> tuple[bool, float]:
        return bool(self.IsActive()) and self._handles(event_data), 0.0

    def ProcessInteractionEvent(self, event_data: Any) -> bool:
        if not self._handles(event_data):
            return False
        kind = event_data.GetType()
        position = tuple(float(v) for v in event_data.GetWorldPosition())
        if kind in PRESS:
            self._points, self._left = [position], PRESS[kind]
            return True
        if kind == MOVE:
            if position != self._points[-1]:
                self._points.append(position)
            return True
        points, self._points = self._points, None
        if RELEASE[kind] == self._left:
            self._effect.stroke(points, self._left)
        return True

    def SetActive(self, isActive: bool) -> None:
        super().SetActive(isActive)
        if not isActive:
            self._points = None
