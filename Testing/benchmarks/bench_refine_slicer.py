"""Seconds per refine click as Slicer's effect runs it, against a paint stroke applied the same
way, on slicer-core's real MRML: each task's first phantom (seed 3100, as ``bench_refine.py``),
segmented by its demo model, resampled to 256 x 256 x 40 (issue 23: under 0.5 s per click on
two CPU cores) and added to a scene as the modules add a result (every image the model read
linked to it; the reference role's volume is Segment Editor's source).

A click is the Slicer logic's whole step: ``RefineLogic.stroke`` (the segmentation read back as
a label map, the hand-edit lock, the engine's refine, the modifier labelmaps) then
``apply_edit`` and ``applied``. The peer is a plain paint stroke of ``--brush-mm`` radius at
the same point, applied through the same segmentation logic (a modifier labelmap merged into
the segment, as Segment Editor's Paint applies its brush): the ratio says what refine costs
over painting. The simulated reader places the clicks (``bench_refine.next_click``) on the
first segment the model starts below 0.90 (else the first segment).

    python Testing/benchmarks/bench_refine_slicer.py            # every task, 10 clicks
    python Testing/benchmarks/bench_refine_slicer.py --quick    # rectal, 3 clicks
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from bench_refine import SEED, TASKS, ball, dice, next_click, resampled, truth_labels
from report import report

ROOT = Path(__file__).resolve().parents[2]
# Slicer puts each module's folder on the path; here the common library's
sys.path.insert(0, str(ROOT / "OncoSegCommon"))


def paint_edit(volume_node, grid: sitk.Image, segment_id: str, point, positive: bool,
               radius_mm: float):
    """The peer's stroke: a ball at ``point`` (LPS) as a modifier labelmap over its box,
    painted or erased."""
    from OncoSegCommonLib.refine import RefineEdit, modifier_labelmap

    box, inside = ball(grid, point, radius_mm)
    stroke = modifier_labelmap(inside, box, volume_node)
    return RefineEdit(segment_id, stroke if positive else None, None if positive else stroke,
                      None)


def time_task(task: str, clicks: int, brush_mm: float) -> dict:
    from oncoseg import verbs
    from oncoseg.datasets import read_dataset
    from oncoseg.tasks import get_task
    from OncoSegCommonLib.context import MRMLContext
    from OncoSegCommonLib.coordinates import ras_lps
    from OncoSegCommonLib.refine import RefineLogic, apply_edit
    from OncoSegCommonLib.segmentations import (
        labels_from_segmentation_node,
        segment_id,
        segmentation_node_from_labels,
    )
    from OncoSegCommonLib.taskrun import add_prediction
    from OncoSegCommonLib.volumes import volume_node_from_image

    with tempfile.TemporaryDirectory() as tmp:
        verbs.phantom(task, Path(tmp) / task, cases=1, seed=SEED)
        roles = [r.name for r in get_task(task).inputs]
        case = read_dataset(Path(tmp) / task, roles=roles, partial=True).cases[0]
        prediction = verbs.predict(task, {r: case.read_stored(r) for r in case.images}, "demo")
        truth = truth_labels(task, case, prediction)
    big, truth = resampled(prediction, truth)
    start = sitk.GetArrayFromImage(big.labels)
    present = [s for s in big.segments if (truth == s.label).any()]
    spec = next((s for s in present if dice(start == s.label, truth == s.label) < 0.90),
                present[0])
    mrml = MRMLContext.headless()
    # each image the model read as a volume, the reference (Segment Editor's source) among
    # them, linked to the result as the modules link them
    volumes = {role: volume_node_from_image(mrml.scene, image, role)
               for role, image in big.images.items()}
    volume = volumes.get(get_task(task).reference_role, next(iter(volumes.values())))
    nodes = add_prediction(mrml.scene, big, "case", volume, inputs=volumes)
    logic = RefineLogic(nodes.segmentation, volume)
    # the peer paints its own copy of the model's result, at the reader's points
    painted = segmentation_node_from_labels(mrml.scene, big.labels, big.segments, volume, "paint")
    target = segment_id(spec)
    refine_s, paint_s = [], []
    for _ in range(clicks):
        labels = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                      big.segments))
        click = next_click(labels == spec.label, truth == spec.label, big.labels, labels == 0)
        if click is None:
            break
        point, positive = click
        started = time.perf_counter()
        edit = logic.stroke(target, [tuple(ras_lps(np.array(point)))], positive=positive)
        apply_edit(nodes.segmentation, edit)
        logic.applied()
        refine_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        apply_edit(painted, paint_edit(volume, big.labels, target, point, positive, brush_mm))
        paint_s.append(time.perf_counter() - started)
    final = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, volume,
                                                                 big.segments))
    return {"task": task, "segment": spec.name, "clicks": len(refine_s),
            "channels": [n.GetName() for n in logic.channel_nodes()],
            "dice_before": round(dice(start == spec.label, truth == spec.label), 4),
            "dice_after": round(dice(final == spec.label, truth == spec.label), 4),
            "refine_s": [round(t, 3) for t in refine_s], "paint_s": [round(t, 4) for t in paint_s],
            "refine_median_s": round(statistics.median(refine_s), 3),
            "paint_median_s": round(statistics.median(paint_s), 4),
            "ratio_refine_over_paint": round(statistics.median(refine_s)
                                             / max(statistics.median(paint_s), 1e-6), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--brush-mm", type=float, default=5.0, help="the peer's brush radius")
    parser.add_argument("--quick", action="store_true", help="rectal, 3 clicks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.clicks = ["rectal"], 3
    rows = [time_task(task, args.clicks, args.brush_mm) for task in args.tasks]
    lines = ["refine click through the Slicer logic vs a paint stroke applied the same way, "
             "256 x 256 x 40"]
    for r in rows:
        lines.append(f"  {r['task']:7} {r['segment'][:22]:22} {r['clicks']} clicks: refine "
                     f"{min(r['refine_s']):.3f}-{max(r['refine_s']):.3f} s (median "
                     f"{r['refine_median_s']:.3f}) vs paint {r['paint_median_s']:.4f} s: ratio "
                     f"{r['ratio_refine_over_paint']}; Dice {r['dice_before']:.3f} -> "
                     f"{r['dice_after']:.3f}")
    report({"rows": rows, "max_refine_s": max(max(r["refine_s"]) for r in rows)}, args.json,
           lines)


if __name__ == "__main__":
    main()
