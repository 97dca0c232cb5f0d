"""Click and scribble refinement of an OncoSeg result in the scene (no Qt: slicer-core tests it).

The "OncoSeg refine" Segment Editor effect only binds mouse events to :class:`RefineLogic`:

* :func:`probability_nodes` finds the probability volumes that came with a segmentation
  (``taskrun.add_prediction`` names them ``"<prefix> <segment> probability"`` beside
  ``"<prefix> segmentation"``; node references under :data:`PROBABILITY_REFERENCE_ROLE`, where a
  front end sets them, are read first);
* :meth:`RefineLogic.stroke` takes the reader's points in Slicer's RAS, converts them to LPS
  (``coordinates.ras_lps``, the one place the two meet), runs :func:`oncoseg.refine.refine` on
  the segmentation exported on the source volume's grid, reading every image the model read
  (the segmentation's input links, :meth:`RefineLogic.channel_nodes`; else the source volume),
  with the settings of the task that made it (:func:`refine_settings_for`), and returns the
  change as two modifier labelmaps (``vtkOrientedImageData`` on the source volume's IJK grid,
  the box only): voxels to add and voxels to remove. The effect hands them to
  ``scriptedEffect.modifySelectedSegmentByLabelmap`` with ``ModificationModeAdd`` /
  ``ModificationModeRemove``, so Segment Editor's masking settings (editable area, editable
  intensity range, overwrite of other segments) and its undo apply as to any of its own effects
  (qSlicerSegmentEditorAbstractEffect.h at v5.10.0: ``modifySelectedSegmentByLabelmap(
  modifierLabelmap, modificationMode, bypassMasking=false)``);
* a front end without Segment Editor (tests, a review app) applies them with :func:`apply_edit`.

What the reader painted by hand is locked (:func:`oncoseg.refine.hand_edits`): the logic keeps
the label maps it saw before and after each of its own steps, and a voxel that differs from the
nearest of them was painted by someone else. After an undo the segmentation matches the state
before a step again, so nothing is locked and that step's input is forgotten. A segmentation
edited by hand before the effect first saw it cannot be told apart from the model's result:
those edits are not locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from oncoseg.errors import InputError
from oncoseg.refine import RefineResult, RefineSettings, Stroke, hand_edits, refine
from oncoseg.tasks import get_task
from OncoSegCommonLib.coordinates import ras_lps
from OncoSegCommonLib.segmentations import (
    MODEL_ATTRIBUTE,
    TASK_ATTRIBUTE,
    input_nodes,
    labels_from_segmentation_node,
    probability_nodes,
)
from OncoSegCommonLib.volumes import image_from_volume_node, refuse_unhardened_transform

# How many states (before/after each step) the lock and the undo detection remember.
MAX_STATES = 20


def is_oncoseg_result(segmentation_node: Any) -> bool:
    """True for a segmentation an OncoSeg module made (what the effect offers to refine)."""
    return bool(segmentation_node.GetAttribute(MODEL_ATTRIBUTE)) or \
        bool(probability_nodes(segmentation_node))


def refine_settings_for(segmentation_node: Any) -> RefineSettings:
    """The refine settings of the task that made the segmentation (its task attribute, set
    by ``taskrun.add_prediction``); the defaults for a segmentation of no task known here."""
    name = segmentation_node.GetAttribute(TASK_ATTRIBUTE)
    if not name:
        return RefineSettings()
    try:
        return get_task(name).refine_settings()
    except InputError:  # a plug-in task not installed here
        return RefineSettings()


def describe_refine(segmentation_node: Any | None, source_volume_node: Any | None) -> str:
    """What the effect's panel says a click will use: the segmentation's probability maps and
    the images it reads (:meth:`RefineLogic.channel_nodes`)."""
    maps = probability_nodes(segmentation_node) if segmentation_node is not None else {}
    if not maps:
        return ("No OncoSeg probability map for this segmentation: clicks follow the image "
                "alone.")
    reads = channel_nodes(segmentation_node, source_volume_node)
    return (f"Probability maps found: {', '.join(sorted(maps))}. Clicks read: "
            f"{', '.join(node.GetName() for node in reads) or 'the source volume'}.")


def channel_nodes(segmentation_node: Any, source_volume_node: Any | None) -> list[Any]:
    """The images refine reads: those the model read to make the segmentation (its input
    links, ``taskrun.add_prediction``), else the source volume. Read with one sequence only, a
    click on a multi-sequence result (the brain's enhancing tumour on its T1c, a rectal tumour
    on its b0) can make it worse where every sequence makes it better (docs/RESULTS.md,
    "Click refinement")."""
    return input_nodes(segmentation_node) or \
        ([source_volume_node] if source_volume_node is not None else [])


@dataclass
class RefineEdit:
    """One step's change as modifier labelmaps on the source volume's grid (None: nothing to
    add / remove) and the engine's result (the corrected label map, timings)."""

    segment_id: str
    added: Any | None  # vtkOrientedImageData, 1 where the segment grows
    removed: Any | None  # vtkOrientedImageData, 1 where it shrinks
    result: RefineResult

    @property
    def changed(self) -> int:
        return self.result.changed


def modifier_labelmap(mask: np.ndarray, box: tuple[slice, slice, slice],
                      volume_node: Any) -> Any:
    """A binary ``vtkOrientedImageData`` holding ``mask`` (z, y, x, the shape of ``box``) at
    ``box`` of ``volume_node``'s IJK grid, in world (RAS) coordinates as Segment Editor's
    modifier labelmaps are (its extent is the box; IJK-to-world is the volume's)."""
    import slicer

    image = slicer.vtkOrientedImageData()
    image.SetExtent(box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1,
                    box[0].start, box[0].stop - 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, np.uint8).ravel(),
                                         deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def apply_edit(segmentation_node: Any, edit: RefineEdit) -> None:
    """Apply an edit without Segment Editor (no masking, no undo): added voxels merged in as
    Segment Editor adds (MODE_MERGE_MASK: the segment's own label value in a shared layer;
    MODE_MERGE_MAX would write the modifier's 1, another segment's value there:
    vtkSlicerSegmentEditorLogic.cxx and vtkSegmentationModifier.cxx at v5.10.0), removed voxels
    by minimum with the inverted mask, over the box only."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if edit.added is not None:
        logic.SetBinaryLabelmapToSegment(edit.added, segmentation_node, edit.segment_id,
                                         logic.MODE_MERGE_MASK, edit.added.GetExtent())
    if edit.removed is not None:
        keep = slicer.vtkOrientedImageData()
        keep.DeepCopy(edit.removed)
        array = numpy_support.vtk_to_numpy(keep.GetPointData().GetScalars())
        array[:] = 1 - array
        keep.GetPointData().GetScalars().Modified()
        logic.SetBinaryLabelmapToSegment(keep, segmentation_node, edit.segment_id,
                                         logic.MODE_MERGE_MIN, keep.GetExtent())


@dataclass
class _State:
    labels: np.ndarray
    strokes: list[tuple[str, Stroke]]  # the input that led to this state, in order


@dataclass
class RefineLogic:
    """Refinement of one segmentation node on one source volume's grid (Segment Editor's),
    reading the images the model read."""

    segmentation_node: Any
    source_volume_node: Any
    # None: the settings of the task that made the segmentation (refine_settings_for)
    settings: RefineSettings | None = None
    _states: list[_State] = field(default_factory=list, repr=False)
    _cache: dict[str, tuple[int, sitk.Image]] = field(default_factory=dict, repr=False)

    def _image(self, node: Any) -> sitk.Image:
        """The node as an LPS image, converted again only when its voxels or geometry
        changed (a 256 x 256 x 40 volume costs ~10 ms to copy; each click needs it)."""
        image_data = node.GetImageData()
        stamp = max(node.GetMTime(), image_data.GetMTime() if image_data else 0)
        cached = self._cache.get(node.GetID())
        if cached is None or cached[0] != stamp:
            cached = (stamp, image_from_volume_node(node))
            self._cache[node.GetID()] = cached
        return cached[1]

    def channel_nodes(self) -> list[Any]:
        """The images this logic's clicks read (:func:`channel_nodes`)."""
        return channel_nodes(self.segmentation_node, self.source_volume_node)

    def segment_value(self, segment_id: str) -> int:
        """The segment's value in :meth:`current_labels` (segments in order, 1, 2, ...)."""
        segmentation = self.segmentation_node.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            if segmentation.GetNthSegmentID(index) == segment_id:
                return index + 1
        raise KeyError(f"segmentation '{self.segmentation_node.GetName()}' has no segment "
                       f"'{segment_id}'")

    def current_labels(self) -> sitk.Image:
        return labels_from_segmentation_node(self.segmentation_node, self.source_volume_node)

    def _nearest_state(self, labels: np.ndarray) -> _State | None:
        best, fewest = None, None
        for state in self._states:
            if state.labels.shape != labels.shape:
                continue
            differing = int(np.count_nonzero(state.labels != labels))
            if fewest is None or differing < fewest:
                best, fewest = state, differing
        return best

    def stroke(self, segment_id: str, ras_points: list[tuple[float, float, float]] | np.ndarray,
               positive: bool = True) -> RefineEdit:
        """Refine ``segment_id`` with one click (one point) or scribble (several), in RAS."""
        channels = self.channel_nodes()
        for node in (*channels, self.source_volume_node, self.segmentation_node):
            refuse_unhardened_transform(f"'{node.GetName()}'", node)  # RAS clicks are world
        points = np.asarray(ras_points, float).reshape(-1, 3)
        new = Stroke(tuple(tuple(float(v) for v in ras_lps(p)) for p in points), positive)
        labels = self.current_labels()
        array = sitk.GetArrayFromImage(labels)
        state = self._nearest_state(array)
        if state is None:  # first step on this segmentation: what it holds is the baseline
            state = _State(array.copy(), [])
        locked = hand_edits(array, state.labels)
        earlier = [s for sid, s in state.strokes if sid == segment_id]
        name = self.segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        probability_node = probability_nodes(self.segmentation_node).get(name)
        probability = None if probability_node is None else self._image(probability_node)
        result = refine([self._image(node) for node in channels], probability, labels,
                        self.segment_value(segment_id), [new], earlier,
                        locked if locked.any() else None,
                        self.settings or refine_settings_for(self.segmentation_node))
        added = modifier_labelmap(result.added, result.box, self.source_volume_node) \
            if result.added.any() else None
        removed = modifier_labelmap(result.removed, result.box, self.source_volume_node) \
            if result.removed.any() else None
        self._remember(_State(array, list(state.strokes)))
        self._remember(_State(sitk.GetArrayFromImage(result.labels),
                              [*state.strokes, (segment_id, new)]))
        return RefineEdit(segment_id, added, removed, result)

    def applied(self) -> None:
        """Record the segmentation as it is after an edit was applied (Segment Editor's
        masking may have kept some of it out): the next step's lock compares with this."""
        if not self._states:
            return
        last = self._states[-1]
        self._states[-1] = _State(sitk.GetArrayFromImage(self.current_labels()), last.strokes)

    def _remember(self, state: _State) -> None:
        self._states.append(state)
        del self._states[:-MAX_STATES]


def ras_of_voxel(volume_node: Any, ijk: tuple[int, int, int]) -> tuple[float, float, float]:
    """RAS of a voxel centre of ``volume_node`` (what a click on it gives)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ras = matrix.MultiplyPoint((*(float(v) for v in ijk), 1.0))
    return float(ras[0]), float(ras[1]), float(ras[2])
