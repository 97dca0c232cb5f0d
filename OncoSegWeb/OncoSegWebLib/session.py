"""One reviewer's session on an MRML scene: open a case, run a task, correct, accept, export.

The web page calls these; nothing here knows about trame, so the whole review runs headless on
``slicer-core`` in the tests. Input volumes are never modified; a new run replaces the previous
run's nodes; exports go into ``<case>/reviewed/`` under the data root and never replace a file
(the next free name is taken).
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oncoseg.errors import InputError
from oncoseg.export import ExportResult
from oncoseg.export_formats import DICOM_FORMATS, ENDINGS, FORMATS
from oncoseg.io.volumes import list_dicom_series, read_image
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.export import SERIES_FOLDER_ATTRIBUTE, export_node
from OncoSegCommonLib.scenes import node_ids, remove_nodes_added_since
from OncoSegCommonLib.volumes import volume_node_from_image
from OncoSegWebLib.cases import CaseEntry, find_cases
from OncoSegWebLib.runners import ReviewResult, TaskRun, plan_run
from OncoSegWebLib.security import inside_root, relative_paths

EXPORT_FOLDER = "reviewed"
MODEL_FOLDER = "models"  # model files offered besides the demo: <root>/models/*.safetensors
ACCEPTED_ATTRIBUTE = "OncoSeg.acceptedAt"


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
        folder = inside_root(self.root, case_id)
        case = next((c for c in self.cases() if c.folder == folder), None)
        if case is None:
            raise InputError(case_id, "is not a case under the data root")
        if case.error:
            raise InputError(case_id, case.error)
        scene = self.context.scene
        before = set(node_ids(scene))
        try:
            nodes = []
            for name, path in case.volumes.items():
                node = volume_node_from_image(scene, read_image(path), name)
                if path.is_dir() and list_dicom_series(path):  # DICOM exports reference it
                    node.SetAttribute(SERIES_FOLDER_ATTRIBUTE, str(path))
                nodes.append(node)
        except Exception:
            remove_nodes_added_since(scene, before)
            raise
        self._remove(self.volumes + (self.result.nodes if self.result else []))
        self.case, self.volumes, self.result = case, nodes, None
        if case.result is not None:
            self.result = self._stored_result(case, dict(zip(case.volumes, nodes, strict=True)))
        return nodes

    def _stored_result(self, case: CaseEntry, by_role: dict[str, Any]) -> ReviewResult:
        """A cohort case's stored result as nodes, as if it had just been run: the segmentation
        to correct, the probability overlays and the segment volumes."""
        from oncoseg.cohort import stored_prediction
        from oncoseg.tasks import get_task
        from OncoSegCommonLib.taskrun import add_prediction

        prediction = stored_prediction(case.result)
        task = get_task(prediction.task)
        reference = by_role.get(task.reference_role) or next(iter(by_role.values()))
        scene = self.context.scene
        before = set(node_ids(scene))
        try:
            added = add_prediction(scene, prediction, f"OncoSeg {task.name}", reference)
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
        return plan_run(self.context, task, model, device)

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
        return export_node(segmentation, self.result.reference, str(output), fmt,
                           probability_nodes=self.result.probabilities or None)

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


def free_name(folder: Path, stem: str, ending: str) -> Path:
    """``folder/stem+ending``, or ``stem-2``, ``stem-3``, ... when taken: exports never replace
    a file."""
    candidate, number = folder / f"{stem}{ending}", 2
    while candidate.exists():
        candidate, number = folder / f"{stem}-{number}{ending}", number + 1
    return candidate
