"""Segment Editor effect "OncoSeg refine": correct a segment with clicks and scribbles that the
model's probability map and the image carry (OncoSegCommonLib.refine holds the logic).

Left click (or drag, a scribble) adds, right click (or drag) removes, in any slice view. Each
click or scribble is one Segment Editor undo step (``saveStateForUndo``), and the change goes
through ``modifySelectedSegmentByLabelmap`` so the editor's masking settings apply.

Read in Slicer's source (github.com/Slicer/Slicer, tags v5.8.0 and v5.10.0):
Extensions/Testing/ScriptedSegmentEditorEffectExtensionTemplate/.../
SegmentEditorScriptedSegmentEditorEffectModuleTemplateLib/SegmentEditorEffect.py (effect class,
``clone``, registration with ``qSlicerSegmentEditorScriptedEffect`` + ``register()``);
Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/
AbstractScriptedSegmentEditorEffect.py (``xyToRas``, ``register`` through
``qSlicerSegmentEditorEffectFactory.instance().registerEffect``), SegmentEditorIslandsEffect.py
and SegmentEditorThresholdEffect.py (``processInteractionEvents``: slice views only, event ids,
``confirmCurrentSegmentVisible``, returning True to abort the event);
Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx
(``setPythonSource``: the module name is the file's folder, the class the file's name, so this
file is ``SegmentEditorEffect.py`` in its own folder) and qSlicerSegmentEditorAbstractEffect.h
(``ModificationModeAdd`` / ``ModificationModeRemove``, ``bypassMasking`` false by default).
"""

import logging
import os
import time

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

EFFECT_NAME = "OncoSeg refine"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Binds mouse events to :class:`OncoSegCommonLib.refine.RefineLogic`; nothing else."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = EFFECT_NAME
        scriptedEffect.perSegment = True  # refines the selected segment
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._logic = None
        self._logic_key = None
        self._stroke = None  # (positive, [RAS points]) while a button is held

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return ("<html>Correct the selected segment with the model's probability map.<p>"
                "<b>Left click</b> or drag: add the region the map and the image support "
                "there. <b>Right click</b> or drag: remove the region under it. Changes stay "
                "within 3 cm of the input, never touch other segments nor what you painted "
                "by hand since the last refine, and follow the masking settings below. "
                "Undo with Segment Editor's Undo.</p></html>")

    def setupOptionsFrame(self):
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def activate(self):
        self._show_status()

    def deactivate(self):
        self._stroke = None

    def _show_status(self, text=None):
        if not hasattr(self, "statusLabel"):
            return
        if text is None:
            from OncoSegCommonLib.refine import describe_refine

            parameters = self.scriptedEffect.parameterSetNode()
            text = describe_refine(parameters.GetSegmentationNode(), _source_volume(parameters))
        self.statusLabel.text = text

    def _refine_logic(self):
        from OncoSegCommonLib.refine import RefineLogic

        parameters = self.scriptedEffect.parameterSetNode()
        segmentation = parameters.GetSegmentationNode()
        source = _source_volume(parameters)
        if segmentation is None or source is None:
            return None
        key = (segmentation.GetID(), source.GetID())
        if self._logic is None or self._logic_key != key:
            self._logic = RefineLogic(segmentation, source)
            self._logic_key = key
        return self._logic

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        modifiers = callerInteractor.GetShiftKey() or callerInteractor.GetControlKey() or \
            callerInteractor.GetAltKey()
        xy = callerInteractor.GetEventPosition()
        press = {vtk.vtkCommand.LeftButtonPressEvent: True,
                 vtk.vtkCommand.RightButtonPressEvent: False}
        release = (vtk.vtkCommand.LeftButtonReleaseEvent, vtk.vtkCommand.RightButtonReleaseEvent)
        if eventId in press and not modifiers:
            confirmed = self.scriptedEffect.confirmCurrentSegmentVisible()
            if confirmed in (self.scriptedEffect.NotConfirmed,
                             self.scriptedEffect.ConfirmedWithDialog):
                return True  # the dialog took the release event: abort this press too
            self._stroke = (press[eventId], [self.xyToRas(xy, viewWidget)])
            return True
        if self._stroke is None:
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            self._stroke[1].append(self.xyToRas(xy, viewWidget))
            return True
        if eventId in release:
            positive, points = self._stroke
            self._stroke = None
            self._apply(positive, points)
            return True
        return False

    def _apply(self, positive, points):
        logic = self._refine_logic()
        segment_id = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        if logic is None or not segment_id:
            slicer.util.showStatusMessage("OncoSeg refine: select a segmentation, a source "
                                          "volume and a segment first", 3000)
            return
        started = time.perf_counter()
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            edit = logic.stroke(segment_id, points, positive)
            if edit.added is None and edit.removed is None:
                self._show_status("Nothing to change there.")
                return
            self.scriptedEffect.saveStateForUndo()
            mode = slicer.qSlicerSegmentEditorAbstractEffect
            if edit.added is not None:
                self.scriptedEffect.modifySelectedSegmentByLabelmap(edit.added,
                                                                    mode.ModificationModeAdd)
            if edit.removed is not None:
                self.scriptedEffect.modifySelectedSegmentByLabelmap(edit.removed,
                                                                    mode.ModificationModeRemove)
            logic.applied()
            self._show_status(f"{'Added' if positive else 'Removed'} up to {edit.changed} "
                              f"voxels in {time.perf_counter() - started:.2f} s.")
        except Exception as error:  # shown to the reader, never a silent failure
            logging.exception("OncoSeg refine failed")
            slicer.util.errorDisplay(f"OncoSeg refine failed: {error}")
        finally:
            qt.QApplication.restoreOverrideCursor()


def register_effect():
    """Register the effect with Segment Editor (call once, after the application started)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(os.path.abspath(__file__).replace("\\", "/"))
    instance.self().register()


def _source_volume(parameters):
    """Segment Editor's source volume (named the master volume before Slicer 5.2)."""
    if hasattr(parameters, "GetSourceVolumeNode"):
        return parameters.GetSourceVolumeNode()
    return parameters.GetMasterVolumeNode()
