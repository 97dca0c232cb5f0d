"""The cohort report a person reads: one self-contained HTML file (pictures inlined, no script,
no network), flagged cases first.

It is built from the cohort's folder alone (``cohort.json``, the table's rows and the
thumbnails), like the table, so whichever process finishes last can write it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oncoseg.io.atomic import write_text_atomic
from oncoseg.tasks import Task

REPORT = "report.html"
THUMBNAILS = "thumbnails"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table.counts td{padding:.2em 1em .2em 0} .flagged{color:#b3261e;font-weight:600}
.cases{display:flex;flex-wrap:wrap;gap:12px}
.case{border:1px solid #ccc;border-radius:6px;padding:8px;width:300px}
.case.flag{border-color:#b3261e;background:#fff6f5} .case.fail{border-color:#555;background:#eee}
.case img{display:block;margin:4px 0;image-rendering:pixelated}
.case ul{margin:.3em 0;padding-left:1.2em;font-size:.85em} .meta{font-size:.85em;color:#444}
.hists{display:flex;flex-wrap:wrap;gap:16px} .hist{font-size:.8em}
"""


def write_report(output: Path, task: Task, summary: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]]) -> Path:
    """``report.html`` in ``output``: the summary, each measurement's distribution (with the
    task's plausible range shaded) and a card per case, flagged and failed cases first."""
    order = {"flagged": 0, "failed": 1, "done": 2, "not run": 3}

    def group(row: Mapping[str, Any]) -> str:
        if row["status"] == "done" and int(row.get("flags") or 0):
            return "flagged"
        return str(row["status"])

    cases = sorted(rows, key=lambda r: (order[group(r)], r["case_id"]))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>OncoSeg cohort: {_e(task.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>OncoSeg cohort report: {_e(task.title)}</h1>",
        f"<p class='meta'>Data set {_e(summary['dataset'])} ({_e(summary['layout'])} layout); "
        f"written {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Flags mark cases a "
        "reader should open; they never change a result.</p>",
        _counts(summary),
        "<h2>Distributions</h2><div class='hists'>",
        *(_histogram(column, [r[column] for r in rows if r.get(column) not in (None, "")],
                     _plausible(task, column))
          for column in summary.get("distributions", {})
          if column.startswith(("volume_ml:", "probability:"))),
        "</div><h2>Cases (flagged first)</h2><div class='cases'>",
        *(_card(output, row, group(row)) for row in cases),
        "</div></body></html>",
    ]
    path = output / REPORT
    write_text_atomic(path, "\n".join(parts) + "\n", overwrite=True)
    return path


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _counts(summary: Mapping[str, Any]) -> str:
    cells = [("cases", summary["cases"]), ("done", summary["done"]),
             ("flagged", summary.get("flagged", 0)), ("failed", summary["failed"]),
             ("not run", summary["not run"])]
    row = "".join(f"<td{' class=flagged' if name in ('flagged', 'failed') and n else ''}>"
                  f"{_e(name)}: <b>{n}</b></td>" for name, n in cells)
    return f"<table class='counts'><tr>{row}</tr></table>"


def _plausible(task: Task, column: str) -> tuple[float, float] | None:
    if not column.startswith("volume_ml:"):
        return None
    name = column.split(":", 1)[1]
    for segment in task.segments:
        if segment.name == name:
            return segment.plausible.volume_ml
    return None


def _histogram(column: str, values: Sequence[Any], plausible: tuple[float, float] | None,
               width: int = 260, height: int = 90, bins: int = 20) -> str:
    """An inline SVG histogram over the values' own range; the part of the task's plausible
    range in view, where declared, is shaded green (bars outside it are the outliers)."""
    data = np.asarray([float(v) for v in values], float)
    if data.size == 0:
        return ""
    low, high = float(data.min()), float(data.max())
    pad = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
    low, high = max(low - pad, 0.0) if low >= 0 else low - pad, high + pad
    counts, edges = np.histogram(data, bins, (low, high))
    top = max(int(counts.max()), 1)

    def x(v: float) -> float:
        return 4 + (width - 8) * (v - low) / (high - low)

    shapes = []
    if plausible is not None:  # the part of the plausible range in view
        left, right = x(max(plausible[0], low)), x(min(plausible[1], high))
        if right > left:
            shapes.append(f"<rect x='{left:.1f}' y='0' width='{right - left:.1f}' "
                          f"height='{height}' fill='#e3f4e1'/>")
    for count, left, right in zip(counts, edges[:-1], edges[1:], strict=True):
        h = (height - 4) * count / top
        shapes.append(f"<rect x='{x(left):.1f}' y='{height - h:.1f}' width="
                      f"'{max(x(right) - x(left) - 1, 0.5):.1f}' height='{h:.1f}' "
                      "fill='#4a6fa5'/>")
    unit = " mL" if column.startswith("volume_ml:") else ""
    return (f"<div class='hist'><div>{_e(column.split(':', 1)[1])}{' (mL)' if unit else ''}: "
            f"median {np.median(data):.3g}, n = {data.size}</div>"
            f"<svg width='{width}' height='{height}' role='img'>{''.join(shapes)}</svg>"
            f"<div>{low:.3g}{unit} ... {high:.3g}{unit}</div></div>")


def _card(output: Path, row: Mapping[str, Any], group: str) -> str:
    case_id = str(row["case_id"])
    css = {"flagged": "case flag", "failed": "case fail"}.get(group, "case")
    picture = output / THUMBNAILS / f"{case_id}.png"
    parts = [f"<div class='{css}' id='case-{_e(case_id)}'><b>{_e(case_id)}</b> "
             f"<span class='meta'>{_e(group)}</span>"]
    if row["status"] == "done" and picture.is_file():
        data = base64.b64encode(picture.read_bytes()).decode("ascii")
        parts.append(f"<a href='{_e(row['folder'])}/overview.png'><img alt='{_e(case_id)}' "
                     f"src='data:image/png;base64,{data}'></a>")
    measures = [f"{_e(k.split(':', 1)[1])} {float(v):.1f} mL" for k, v in row.items()
                if k.startswith("volume_ml:") and v not in (None, "")]
    measures += [f"P({_e(k.split(':', 1)[1])}) {float(v):.2f}" for k, v in row.items()
                 if k.startswith("probability:") and v not in (None, "")]
    if measures:
        parts.append(f"<div class='meta'>{'; '.join(measures)}</div>")
    reasons = [r for r in str(row.get("flag_reasons") or "").split(" | ") if r]
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
    if row.get("error"):
        parts.append(f"<ul><li>{_e(row['error'])}</li></ul>")
    if row.get("folder"):
        parts.append(f"<div class='meta'><a href='{_e(row['folder'])}/'>case folder</a> | "
                     f"<a href='{_e(row['folder'])}/result.json'>result.json</a></div>")
    parts.append("</div>")
    return "".join(parts)
