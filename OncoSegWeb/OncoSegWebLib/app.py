"""The browser review app: trame-slicer's slice views and segment editor around a
:class:`~OncoSegWebLib.session.ReviewSession`.

The page is thin on purpose: each button calls one session method; the run's compute half goes
to a worker thread (``OncoSegCommonLib.worker``) and its progress is polled into the page, so the
server keeps answering (and can cancel) while a model runs.

"Refine" (issue 23, as Slicer's "OncoSeg refine" effect): while the switch is on, a click or
drag in a slice view is a stroke on the selected segment (left adds, right removes; the page's
Add/Remove choice swaps them), handed to :meth:`ReviewSession.refine`; "Undo refine" takes the
last stroke back (:meth:`ReviewSession.undo_refine`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from trame.app import TrameApp
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic.layout_button_logic import LayoutButtonLogic
from trame_slicer.app.logic.segmentation import SegmentEditorLogic
from trame_slicer.app.ui import SegmentEditorToolbarUI, SegmentEditorUI, ViewerLayout
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import ModificationMode

from oncoseg.errors import InputError
from oncoseg.export_formats import FORMATS
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.worker import Worker
from OncoSegWebLib.cases import CaseEntry
from OncoSegWebLib.refine_clicks import RefineStrokeEffect
from OncoSegWebLib.runners import ReviewResult, TaskRun, task_titles
from OncoSegWebLib.security import LOOPBACK, TOKEN_PARAMETER, new_token, token_middleware
from OncoSegWebLib.session import ReviewSession

EXPORT_FORMATS = tuple(f for f in FORMATS if f in ("seg.nrrd", "dicom-seg", "rtstruct",
                                                   "dicom-seg-fractional", "dicom-sr"))
POLL_S = 0.25


class ReviewApp(TrameApp):
    def __init__(self, root: str | os.PathLike[str], device: str = "auto", server: Any = None):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        # the views first: effect pipelines made while a view is being built get no view
        self.layouts = LayoutButtonLogic(self.server, self.slicer)
        self.editor = SegmentEditorLogic(self.server, self.slicer)
        self.session = ReviewSession(MRMLContext(self.slicer.scene, self.slicer.app_logic, {
            "Colors": self.slicer.color_logic, "Volumes": self.slicer.volumes_logic,
            "Segmentations": self.slicer.segmentations_logic}), root)
        self.device = device
        self.worker: Worker | None = None
        # the refine strokes: an effect of the page's segment editor, so that choosing Paint
        # (or any effect) ends Refine and Refine ends Paint
        self.refine_effect = self.editor.segmentation_editor.get_effect(RefineStrokeEffect)
        self.refine_effect.on_stroke = self.refine_stroke
        self.editor.segmentation_editor.active_effect_name_changed.connect(
            self._on_effect_changed)
        self._init_state()
        self._build_ui()
        self.refresh_cases()

    # ------------------------------------------------------------------ state

    def _init_state(self) -> None:
        state = self.state
        state.trame__title = "OncoSeg review"
        state.cases, state.case_id, state.case_errors = [], None, []
        state.tasks = [{"value": k, "title": v} for k, v in task_titles().items()]
        state.task, state.models, state.model = "rectal", self.session.models(), "demo"
        state.running, state.progress, state.progress_text = False, 0, ""
        state.message, state.message_kind = "", "info"
        state.summary, state.rows, state.row_headers = "", [], []
        state.slice_scores = []  # staging: P(T3) per slice, drawn as a line
        state.has_segmentation, state.accepted = False, False
        state.export_format, state.export_formats = "seg.nrrd", list(EXPORT_FORMATS)
        state.exports = []
        state.refine_on, state.refine_remove, state.refine_undo = False, False, 0
        state.change("refine_on")(self._on_refine_switched)
        state.change("refine_remove")(self._on_refine_choice)

    def _say(self, message: str, kind: str = "info") -> None:
        """Every message the page shows goes through here, its paths made relative to the
        data root (errors from any layer name the server's absolute paths)."""
        self.state.message, self.state.message_kind = self.session.message(message), kind

    # ------------------------------------------------------------------ actions

    def refresh_cases(self) -> None:
        cases = self.session.cases()
        self.state.cases = [{"value": c.id, "title": case_title(c)} for c in cases if c.usable]
        self.state.case_errors = [f"{c.id}: {c.error}" for c in cases if c.error]

    def open_case(self) -> None:
        try:
            nodes = self.session.open_case(self.state.case_id or "")
        except InputError as error:
            self._say(str(error), "error")
            return
        # slice views only: the volume rendering trame-slicer adds in 3D says nothing here
        self.slicer.display_manager.show_volume_in_slice_background(nodes[0])
        self.slicer.display_manager.show_volume_in_slice_foreground(None)
        self.slicer.display_manager.reset_views()
        self._clear_result()
        self.state.exports = []
        notes = self.session.reading_notes
        self._say(f"Opened {self.state.case_id}: {', '.join(n.GetName() for n in nodes)}"
                  + "".join(f". Note: {note}" for note in notes), "warning" if notes else "info")
        if self.session.result is not None:  # a cohort case: its stored result, to correct
            self._show(self.session.result)
            self.state.task = self.session.result.task
            self._say(f"Opened {self.state.case_id} with its stored result: "
                      f"{self.session.result.summary}", "warning" if self.session.case.flags
                      else "info")

    async def run_task(self) -> None:
        if self.worker is not None:
            return
        try:
            planned = self.session.plan(self.state.task, self.state.model, self.device)
        except (InputError, ValueError) as error:
            self._say(str(error), "error")
            return
        self._clear_result()  # the session dropped the previous run's nodes
        self.worker = Worker(lambda progress, cancel: planned.compute(progress, cancel))
        self.state.running, self.state.progress = True, 0
        self._say(f"Running {task_titles()[planned.task]} on " + ", ".join(
            f"{role}: {name}" for role, name in planned.inputs.items() if name))
        try:
            while not self.worker.done:
                event = self.worker.last_event
                if event is not None:
                    fraction = event.fraction
                    self.state.progress = round(100 * fraction) if fraction is not None else 0
                    self.state.progress_text = f"{event.stage} {event.message}".strip()
                self.state.flush()
                await asyncio.sleep(POLL_S)
            self._finish(planned, self.worker)
        finally:
            self.worker = None
            self.state.running, self.state.progress_text = False, ""
            self.state.flush()

    def _clear_result(self) -> None:
        self.editor.segmentation_editor.deactivate_effect()
        self.state.refine_on, self.state.refine_undo = False, 0
        self.state.summary, self.state.rows, self.state.slice_scores = "", [], []
        self.state.has_segmentation, self.state.accepted = False, False

    def _finish(self, planned: TaskRun, worker: Worker) -> None:
        if worker.error is not None:
            self._say(worker.status_text(), "error")
            return
        try:
            result = self.session.finish(planned, worker.result)
        except Exception as error:  # nodes were not added; say why
            self._say(f"Failed: {error}", "error")
            return
        self._show(result)
        self._say(f"{worker.status_text()} {result.summary}")

    def _show(self, result: ReviewResult) -> None:
        if result.segmentation is not None:
            self.editor.segmentation_editor.set_active_segmentation(result.segmentation,
                                                                    result.reference)
            self.editor.segmentation_editor.trigger_all_signals()
        self.state.summary = self.session.message(
            " | ".join(part for part in (result.summary, result.model_line) if part))
        self.state.slice_scores = [float(r["P(T3)"]) for r in result.rows] \
            if result.task == "staging" else []
        self.state.rows = [{k: f"{v:.4g}" if isinstance(v, float) else str(v)
                            for k, v in row.items()} for row in result.rows]
        self.state.row_headers = [{"title": k, "key": k} for k in (result.rows[0] if
                                                                    result.rows else {})]
        self.state.has_segmentation = result.segmentation is not None
        self.state.accepted = False
        self.state.refine_on, self.state.refine_undo = False, 0

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel.cancel()
            self._say("Cancelling...")

    def accept(self) -> None:
        try:
            stamp = self.session.accept()
        except InputError as error:
            self._say(str(error), "error")
            return
        self.state.accepted = True
        self._say(f"Accepted at {stamp}; export it below.")

    def export(self) -> None:
        try:
            written = self.session.export(self.state.export_format)
        except InputError as error:
            self._say(str(error), "error")
            return
        relative = written.path.relative_to(self.session.root).as_posix()
        self.state.exports = [*self.state.exports, relative]
        self._say(f"Wrote {relative} ({', '.join(written.segments)})")

    # ------------------------------------------------------------------ refine

    def _on_refine_switched(self, refine_on: bool = False, **_: Any) -> None:
        editor = self.editor.segmentation_editor
        if refine_on and editor.active_effect is not self.refine_effect:
            editor.set_active_effect(self.refine_effect)
        elif not refine_on and editor.active_effect is self.refine_effect:
            editor.deactivate_effect()

    def _on_refine_choice(self, refine_remove: bool = False, **_: Any) -> None:
        self.refine_effect.left_removes = bool(refine_remove)

    def _on_effect_changed(self, name: str = "", *_: Any) -> None:
        """Another effect chosen in the segment editor (Paint, ...) ends Refine."""
        self.state.refine_on = name == RefineStrokeEffect.get_effect_name()

    def refine_stroke(self, points_ras: list[tuple[float, float, float]],
                      positive: bool) -> None:
        """A stroke from a slice view (RefineStrokeEffect) on the selected segment."""
        segment_id = self.editor.segmentation_editor.get_active_segment_id()
        with self.state:
            if not segment_id:
                self._say("Refine: select a segment first", "error")
                return
            try:
                summary = self.session.refine(segment_id, points_ras, positive,
                                              apply=self._apply_in_editor)
            except InputError as error:
                self._say(str(error), "error")
                return
            except Exception as error:  # shown on the page; the server keeps serving
                self._say(f"Refine failed: {error}", "error")
                return
            self.state.refine_undo = summary["undo_steps"]
            self._say(refine_message(summary))

    def _apply_in_editor(self, edit: Any) -> None:
        """A refine edit through the page's segment editor, as Slicer's effect hands it to
        Segment Editor: its masking settings (editable area, intensity range, overwrite) hold,
        and the stroke is one step of the editor's own Undo as well."""
        modifier = self.editor.segmentation_editor.active_segment_modifier
        with modifier.group_undo_commands("OncoSeg refine"):
            for labelmap, mode in ((edit.added, ModificationMode.Add),
                                   (edit.removed, ModificationMode.Remove)):
                if labelmap is not None:
                    modifier.apply_labelmap(labelmap, segment_id=edit.segment_id,
                                            modification_mode=mode)

    def undo_refine(self) -> None:
        try:
            summary = self.session.undo_refine()
        except InputError as error:
            self._say(str(error), "error")
            return
        self.state.refine_undo = summary["undo_steps"]
        self._say(f"Undid the last refine of {summary['segment']} "
                  f"({summary['undo_steps']} more can be undone).")

    # ------------------------------------------------------------------ page

    def _build_ui(self) -> None:
        with ViewerLayout(self.server, title="OncoSeg review", is_drawer_visible=True) as layout:
            self.ui = layout
            with layout.drawer:
                self._review_panel()
                self.editor_ui = SegmentEditorUI(v_if=("has_segmentation",))
            with layout.toolbar:
                SegmentEditorToolbarUI(editor_ui=self.editor_ui)
            with layout.content:
                self.layouts.layout_manager.initialize_layout_grid(layout)
        self.editor.set_ui(self.editor_ui)

    def _review_panel(self) -> None:
        with v3.VCard(flat=True, classes="pa-2", id="oncoseg-review"):
            v3.VCardSubtitle("Research use only, not for clinical use", classes="px-0")
            v3.VSelect(label="Case", v_model=("case_id",), items=("cases",), density="compact",
                       id="case-select", hide_details=True, classes="my-1")
            v3.VBtn("Open case", click=self.open_case, id="open-case", block=True,
                    disabled=("!case_id || running",), classes="my-1")
            with html.Div(v_for="e in case_errors", classes="text-caption text-error"):
                html.Span("{{ e }}")
            v3.VSelect(label="Task", v_model=("task",), items=("tasks",), density="compact",
                       id="task-select", hide_details=True, classes="my-1")
            v3.VSelect(label="Model", v_model=("model",), items=("models",), density="compact",
                       hide_details=True, classes="my-1")
            with html.Div(classes="d-flex my-1"):
                v3.VBtn("Run", click=self.run_task, id="run-task", color="primary",
                        disabled=("running",), classes="flex-grow-1 mr-1")
                v3.VBtn("Cancel", click=self.cancel, id="cancel-task",
                        disabled=("!running",), classes="flex-grow-1")
            v3.VProgressLinear(v_show=("running",), model_value=("progress",), height=6,
                               classes="my-1")
            html.Div("{{ progress_text }}", v_show=("running",), classes="text-caption")
            v3.VAlert(text=("message",), type=("message_kind",), v_show=("message",),
                      density="compact", id="message", classes="my-1 text-caption")
            html.Div("{{ summary }}", id="summary", classes="text-body-2 my-1")
            v3.VSparkline(model_value=("slice_scores",), v_show=("slice_scores.length",),
                          min=0, max=1, line_width=2, height=60, auto_draw=True,
                          color="red", id="slice-scores")
            v3.VDataTable(items=("rows",), headers=("row_headers",), density="compact",
                          v_show=("rows.length",), items_per_page=5, classes="my-1")
            with html.Div(v_show=("has_segmentation",)):
                with html.Div(classes="d-flex align-center my-1"):
                    v3.VSwitch(label="Refine", v_model=("refine_on",), id="refine",
                               color="primary", density="compact", hide_details=True,
                               classes="mr-2")
                    with v3.VBtnToggle(v_model=("refine_remove",), mandatory=True,
                                       density="compact", id="refine-mode",
                                       disabled=("!refine_on",)):
                        v3.VBtn("Add", value=False, id="refine-add")
                        v3.VBtn("Remove", value=True, id="refine-remove")
                html.Div("Click or drag in a slice view: the left button "
                         "{{ refine_remove ? 'removes' : 'adds' }}, the right button "
                         "{{ refine_remove ? 'adds' : 'removes' }} (the selected segment, "
                         "guided by the model's probability map).",
                         v_show=("refine_on",), classes="text-caption")
                v3.VBtn("Undo refine", click=self.undo_refine, id="undo-refine", block=True,
                        disabled=("!refine_undo",), classes="my-1")
                v3.VBtn("Accept", click=self.accept, id="accept", block=True,
                        color=("accepted ? 'success' : undefined",), classes="my-1")
                with html.Div(classes="d-flex my-1"):
                    v3.VSelect(v_model=("export_format",), items=("export_formats",),
                               density="compact", hide_details=True, classes="mr-1")
                    v3.VBtn("Export", click=self.export, id="export",
                            disabled=("!accepted",))
                with html.Div(v_for="f in exports", classes="text-caption export-path"):
                    html.Span("{{ f }}")


def refine_message(summary: dict[str, Any]) -> str:
    """What the page says after a stroke (ReviewSession.refine's summary)."""
    if not summary["changed"]:
        return (f"Refine {summary['segment']}: nothing changed there (the map and the image "
                "agree with the segment, or the editor's masking settings keep it out).")
    done = (f"added {summary['added']}" if summary["positive"]
            else f"removed {summary['removed']}")
    return (f"Refine {summary['segment']}: {done} voxel(s) in {summary['seconds']:.2f} s "
            f"({summary['undo_steps']} can be undone).")


def case_title(case: CaseEntry) -> str:
    """The case list's entry: a cohort case says it holds a result, and how many flags."""
    if case.result is None:
        return case.id
    return f"{case.id} (result, {len(case.flags)} flag{'s' * (len(case.flags) != 1)})"


def serve(root: str | os.PathLike[str], host: str = LOOPBACK, port: int = 8080,
          device: str = "auto", token: str | None = None) -> None:
    """Start the server (blocking); prints the address with its access token."""
    token = token or new_token()
    with tempfile.TemporaryDirectory(prefix="oncoseg-review-") as folder:
        key_file = Path(folder) / "token"
        key_file.touch(mode=0o600)
        key_file.write_text(token, encoding="utf-8")
        # trame reads its options from the command line: give it only these
        sys.argv = [sys.argv[0], "--authKeyFile", str(key_file), "--server"]
        app = ReviewApp(root, device)
        app.server.controller.on_server_bind.add(
            lambda wslink_server: wslink_server.app.middlewares.append(token_middleware(token)))

        def announce(**_: Any) -> None:
            port_used = app.server.port
            print(f"OncoSeg review: http://{host}:{port_used}/?{TOKEN_PARAMETER}={token}",
                  flush=True)
            print(f"data root: {app.session.root}", flush=True)

        app.server.controller.on_server_ready.add(announce)
        app.server.start(host=host, port=port, open_browser=False, show_connection_info=False)
