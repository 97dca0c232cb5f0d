"""One reviewer's session on an MRML scene: open a case, run a task, correct, accept, export.

The web page calls these; nothing here knows about trame, so the whole review runs headless on
``slicer-core`` in the tests. Input volumes are never modified; a new run replaces the previous
run's nodes; exports go into ``<case>/reviewed/`` under the data root and never replace a file
(the next free name is taken).

A shown result is corrected with the engine's refine (``OncoSegCommonLib.refine.RefineLogic``,
the logic of Slicer's "OncoSeg refine" effect): :meth:`ReviewSession.refine` takes the reader's
clicks and scribbles in RAS, :meth:`ReviewSession.undo_refine` puts the refined segment back as
it was before the last stroke.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.export import ExportResult
from oncoseg.export_formats import DICOM_FORMATS, ENDINGS, FORMATS
from oncoseg.io.folders import links_within
from oncoseg.io.volumes import list_dicom_series, read_volume
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.export import (
    SERIES_CHOICE_ATTRIBUTE,
    SERIES_FOLDER_ATTRIBUTE,
    export_node,
)
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.volumes import volume_node_from_image
from OncoSegWebLib.cases import CaseEntry, find_cases, stated_hints
from OncoSegWebLib.runners import ReviewResult, TaskRun, plan_run
from OncoSegWebLib.security import inside_root, relative_paths

EXPORT_FOLDER = "reviewed"
MODEL_FOLDER = "models"  # model files offered besides the demo: <root>/models/*.safetensors
ACCEPTED_ATTRIBUTE = "OncoSeg.acceptedAt"
# Refine steps undo_refine can take back, per shown result: one copy of the refined segment's
# labelmap each (its effective extent: a rectal tumour's is ~100 kB).
REFINE_UNDO_STEPS = 20


@dataclass
class _RefineStep:
    """What undo_refine needs to take one step back: the segment and its labelmap before."""

    segment_id: str
    before: Any  # vtkOrientedImageData, the segment's binary labelmap (RAS), a deep copy


class ReviewSession:
    def __init__(self, context: MRMLContext, root: str | os.PathLike[str]):
        self.context = context
        self.given_root = Path(root).absolute()  # as the server was started: messages may say it
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(str(root), "is not a folder (the data root to review)")
        self.case: CaseEntry | None = None
        self.volumes: list[Any] = []
        self.result: ReviewResult | None = None
        self.reading_notes: list[str] = []  # how the case's volumes were read, to show
        self._refine_logic: Any = None  # RefineLogic of the result shown (_refine_for)
        self._refine_for: ReviewResult | None = None
        self._refine_steps: list[_RefineStep] = []

    # ------------------------------------------------------------------ cases and models

    def cases(self) -> list[CaseEntry]:
        """The cases under the root, their errors told with relative paths (:meth:`message`)."""
        return [replace(c, error=self.message(c.error)) if c.error else c
                for c in find_cases(self.root)]

    def message(self, text: object) -> str:
        """``text`` (an error, a summary) as the page may show it: paths under the data root
        relative to it, no other absolute server path (security.relative_paths)."""
        return relative_paths(str(text), self.given_root)

    def models(self) -> list[str]:
        """'demo' and the model files in the data root's models folder, relative to the root."""
        folder = self.root / MODEL_FOLDER
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        return ["demo", *(f.relative_to(self.root).as_posix() for f in files)]

    def open_case(self, case_id: str) -> list[Any]:
        """The case's volumes as nodes, replacing the previous case; all or none."""
        with links_within(self.root):  # a linked series folder is read only inside the root
            return self._open_case(case_id)

    def _open_case(self, case_id: str) -> list[Any]:
        folder = inside_root(self.root, case_id)
        case = next((c for c in self.cases() if c.folder.resolve() == folder), None)
        if case is None:
            raise InputError(case_id, "is not a case under the data root")
        if case.error:
            raise InputError(case_id, case.error)
        scene = self.context.scene
        before = set(node_ids(scene))
        try:
            nodes, notes = [], []
            for name, path in case.volumes.items():
                choice = case.series.get(name)
                volume = read_volume(path, choice)
                notes += [f"{name}: {note}" for note in volume.notes]
                node = volume_node_from_image(scene, volume.image, name)
                if path.is_dir() and list_dicom_series(path):  # DICOM exports reference it
                    node.SetAttribute(SERIES_FOLDER_ATTRIBUTE, str(path))
                    if choice:
                        node.SetAttribute(SERIES_CHOICE_ATTRIBUTE, choice)
                nodes.append(node)
        except Exception:
            remove_nodes_added_since(scene, before)
            raise
        self._remove(self.volumes + (self.result.nodes if self.result else []))
        self.case, self.volumes, self.result = case, nodes, None
        self.reading_notes = notes
        self._reset_refine()
        if case.result is not None:
            self.result = self._stored_result(case, dict(zip(case.volumes, nodes, strict=True)))
        return nodes

    def _stored_result(self, case: CaseEntry, by_role: dict[str, Any]) -> ReviewResult:
        """A cohort case's stored result as nodes, as if it had just been run: the segmentation
        to correct, the probability overlays and the segment volumes."""
        from oncoseg.cohort import stored_prediction
        from oncoseg.tasks import get_task
        from OncoSegCommonLib.taskrun import add_prediction, moved_roles, unmoved_inputs

        prediction = stored_prediction(case.result)
        task = get_task(prediction.task)
        reference = by_role.get(task.reference_role) or next(iter(by_role.values()))
        scene = self.context.scene
        before = set(node_ids(scene))
        try:
            # the stored files are the inputs as given: a sequence the run moved onto the
            # reference grid (or may have: no record) is not where the model read it
            handled = prediction.details.get("registration", {})
            moved = [*moved_roles(prediction),
                     *(r for r in task.registered_roles if r not in handled)]
            added = add_prediction(scene, prediction, f"OncoSeg {task.name}", reference,
                                   inputs=unmoved_inputs(moved, by_role))
        except Exception:
            remove_nodes_added_since(scene, before)
            raise
        volumes = prediction.segment_volumes_ml()
        summary = "; ".join(f"{n} {ml:.1f} mL" for n, ml in volumes.items()) or ", ".join(
            f"P({n}) {p:.2f}" for n, p in prediction.class_probabilities.items())
        if case.flags:
            summary += f" | {len(case.flags)} flag(s): " + " | ".join(case.flags)
        rows = [{"segment": n, "volume (mL)": ml} for n, ml in volumes.items()]
        return ReviewResult(task.name, added.segmentation, reference,
                            dict(added.probabilities), summary, rows, added.all(),
                            dict(prediction.model or {}))

    # ------------------------------------------------------------------ running

    def plan(self, task: str, model: str = "demo", device: str = "auto") -> TaskRun:
        """Copy the inputs (main thread); the previous run's nodes go first, so that its
        outputs are not taken for inputs."""
        if self.case is None:
            raise InputError("case", "open a case first")
        if model != "demo":
            model = str(inside_root(self.root, model))
        if self.result is not None:
            self._remove(self.result.nodes)
            self.result = None
            self._reset_refine()
        return plan_run(self.context, task, model, device, stated_hints(self.case, task))

    def finish(self, run: TaskRun, prediction: Any) -> ReviewResult:
        """Main thread: the run's nodes."""
        self.result = run.finish(prediction)
        return self.result

    def run(self, task: str, model: str = "demo", device: str = "auto",
            progress: Any = None, cancel: Any = None) -> ReviewResult:
        """The three halves in a row (scripts and tests)."""
        planned = self.plan(task, model, device)
        return self.finish(planned, planned.compute(progress, cancel))

    # ------------------------------------------------------------------ review

    def accept(self) -> str:
        """Mark the corrected segmentation as reviewed (export requires it): the time, UTC,
        goes onto the node; returns it."""
        segmentation = self._segmentation()
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        segmentation.SetAttribute(ACCEPTED_ATTRIBUTE, stamp)
        return stamp

    @property
    def accepted(self) -> bool:
        return self.result is not None and self.result.segmentation is not None and \
            bool(self.result.segmentation.GetAttribute(ACCEPTED_ATTRIBUTE))

    def export(self, fmt: str) -> ExportResult:
        """Write the segmentation as ``fmt`` into ``<case>/reviewed/`` under a free name."""
        if fmt not in FORMATS:
            raise InputError("format", f"'{fmt}' is not one of {', '.join(FORMATS)}")
        segmentation = self._segmentation()
        if not self.accepted:
            raise InputError("segmentation", "is not accepted yet: review it, then accept")
        folder = inside_root(self.root, Path(self.case.id) / EXPORT_FOLDER)
        folder.mkdir(exist_ok=True)
        output = free_name(folder, f"{Path(self.case.id).name}-{self.result.task}",
                           ENDINGS[fmt][-1] if fmt not in DICOM_FORMATS else f"-{fmt}.dcm")
        # the probabilities export writes the run's own maps (the model's, beside the reviewed
        # segmentation); the SR reports the volumes of the segmentation as accepted
        with links_within(self.root):  # a DICOM export reads the series it references
            return export_node(segmentation, self.result.reference, str(output), fmt,
                               probability_nodes=self.result.probabilities or None)

    # ------------------------------------------------------------------ refine

    def refine(self, segment: str, points_ras: Any, positive: bool = True,
               apply: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """Correct ``segment`` (its ID or name) of the shown result with one click (one point)
        or scribble (several), in RAS mm: positive input adds what the model's probability and
        the image support around it, negative removes the region under it (oncoseg.refine).
        The same logic as Slicer's "OncoSeg refine" effect; other segments never change.

        ``apply(edit)`` applies the edit (a ``RefineEdit``: modifier labelmaps to add and to
        remove), e.g. through the page's segment editor so that its masking settings hold;
        without it :func:`OncoSegCommonLib.refine.apply_edit` applies it as it is. Returns a
        summary: the segment, voxels changed, added and removed (as applied), seconds, and how
        many steps :meth:`undo_refine` can take back."""
        from OncoSegCommonLib.refine import RefineLogic, apply_edit

        segmentation, segment_id = self._refine_target(segment)
        points = np.asarray(points_ras, float)
        if points.size == 0 or points.size % 3 or not np.all(np.isfinite(points)):
            raise InputError("refine", "needs one or more finite RAS points (x, y, z in mm)")
        if self._refine_for is not self.result:  # a new result (run, case): a fresh logic
            self._reset_refine()
            self._refine_logic = RefineLogic(segmentation, self.result.reference)
            self._refine_for = self.result
        logic = self._refine_logic
        started = time.perf_counter()
        before = _segment_labelmap(segmentation, segment_id)
        edit = logic.stroke(segment_id, points.reshape(-1, 3), bool(positive))
        added, removed = int(edit.result.added.sum()), int(edit.result.removed.sum())
        if edit.changed:
            if apply is None:
                apply_edit(segmentation, edit)
                logic.applied()
            else:  # the front end's masking may keep part of the edit out: count what it did
                value = logic.segment_value(segment_id)
                engine = sitk.GetArrayViewFromImage(edit.result.labels) == value
                was = engine ^ _box_mask(edit.result.added | edit.result.removed,
                                         edit.result.box, engine.shape)
                apply(edit)
                logic.applied()
                now = sitk.GetArrayFromImage(logic.current_labels()) == value
                added, removed = int((now & ~was).sum()), int((was & ~now).sum())
            if added or removed:
                self._refine_steps.append(_RefineStep(segment_id, before))
                del self._refine_steps[:-REFINE_UNDO_STEPS]
        return {"segment": segmentation.GetSegmentation().GetSegment(segment_id).GetName(),
                "positive": bool(positive), "changed": added + removed, "added": added,
                "removed": removed, "seconds": round(time.perf_counter() - started, 3),
                "undo_steps": len(self._refine_steps)}

    def undo_refine(self) -> dict[str, Any]:
        """Put the segment the last refine step changed back as it was before that step
        (whatever was painted on it since goes too); the logic then forgets that step's
        input (RefineLogic tells an undone state by its labels). Returns the segment and the
        steps left."""
        segmentation = self._segmentation()
        if self._refine_for is not self.result or not self._refine_steps:
            raise InputError("undo refine", "nothing to undo: no refine step on the result "
                             "shown")
        step = self._refine_steps.pop()
        if segmentation.GetSegmentation().GetSegment(step.segment_id) is None:
            raise InputError("undo refine", f"segment '{step.segment_id}' was deleted since")
        _set_segment_labelmap(segmentation, step.segment_id, step.before)
        return {"segment": segmentation.GetSegmentation().GetSegment(step.segment_id)
                .GetName(), "undo_steps": len(self._refine_steps)}

    @property
    def refine_undo_steps(self) -> int:
        """Refine steps :meth:`undo_refine` can take back on the result shown."""
        return len(self._refine_steps) if self._refine_for is self.result else 0

    def _refine_target(self, segment: str) -> tuple[Any, str]:
        """The segmentation and the segment's ID; refused when there is nothing to refine."""
        from OncoSegCommonLib.segmentations import probability_nodes

        segmentation = self._segmentation()
        if not probability_nodes(segmentation):
            raise InputError("refine", f"the {self.result.task} result has no probability "
                             "maps: refine needs the model's map (correct it with the "
                             "paint tools)")
        found = segmentation.GetSegmentation()
        ids = [found.GetNthSegmentID(i) for i in range(found.GetNumberOfSegments())]
        names = {found.GetSegment(i).GetName(): i for i in ids}
        if segment in ids:
            return segmentation, segment
        if segment in names:
            return segmentation, names[segment]
        raise InputError("segment", f"'{segment}' is not a segment of the {self.result.task} "
                         f"result (one of: {', '.join(names) or 'none'})")

    def _reset_refine(self) -> None:
        self._refine_logic, self._refine_for, self._refine_steps = None, None, []

    # ------------------------------------------------------------------ helpers

    def _segmentation(self) -> Any:
        if self.result is None or self.result.segmentation is None:
            raise InputError("segmentation", "there is none to review: run a segmentation "
                             "task first")
        return self.result.segmentation

    def _remove(self, nodes: list[Any]) -> None:
        for node in nodes:
            if node is not None and node.GetScene() is self.context.scene:
                self.context.scene.RemoveNode(node)


def _box_mask(changed: np.ndarray, box: tuple[slice, slice, slice],
              shape: tuple[int, ...]) -> np.ndarray:
    """A box-shaped mask (refine's added | removed) placed in the whole label array."""
    mask = np.zeros(shape, bool)
    mask[box] = changed
    return mask


def _segment_labelmap(segmentation_node: Any, segment_id: str) -> Any:
    """A deep copy of the segment's binary labelmap (its own voxels, even where segments share
    a layer), in RAS."""
    import slicer

    image = slicer.vtkOrientedImageData()
    # the node's own copy keeps only this segment's label value (vtkMRMLSegmentationNode.cxx
    # at v5.10.0, a vtkImageThreshold); the module logic's copies the whole shared layer
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image):
        raise RuntimeError(f"Slicer could not read segment '{segment_id}' of "
                           f"'{segmentation_node.GetName()}'")
    return image


def _set_segment_labelmap(segmentation_node: Any, segment_id: str, image: Any) -> None:
    """Replace the segment by ``image`` (from :func:`_segment_labelmap`); an empty image
    empties it. Other segments keep their voxels (Slicer's MODE_REPLACE clears only this
    segment, also where it shares a layer: vtkSegmentationModifier.cxx, v5.10.0)."""
    import slicer

    extent = image.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        segmentation_node.GetSegmentation().ClearSegment(segment_id)
        segmentation_node.Modified()
        return
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id,
                                            logic.MODE_REPLACE):
        raise RuntimeError(f"Slicer could not restore segment '{segment_id}' of "
                           f"'{segmentation_node.GetName()}'")


def free_name(folder: Path, stem: str, ending: str) -> Path:
    """``folder/stem+ending``, or ``stem-2``, ``stem-3``, ... when taken: exports never replace
    a file."""
    candidate, number = folder / f"{stem}{ending}", 2
    while candidate.exists():
        candidate, number = folder / f"{stem}-{number}{ending}", number + 1
    return candidate
