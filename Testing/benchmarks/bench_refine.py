"""Click refinement against a simulated reader: Dice after each click for ``oncoseg.refine``
(random walker on the model's probabilities), a plain paint brush and region growing.

The classic protocol of interactive segmentation (e.g. Xu et al. 2016, Sofiiuk et al.
RITM 2022, Wang et al. DeepIGeoS 2018): after each click the reader looks at the target
segment's errors, takes the largest connected error region (false negative or false positive,
6-connected) and clicks at its centre, the voxel farthest from the region's border (maximum of
its distance transform, in mm); a false negative gives a positive click, a false positive a
negative one. Up to ``--clicks`` clicks per segment. The three correctors get the same kind of
clicks, each placed on its own errors:

* ``refine``: :func:`oncoseg.refine.refine` with the click and the earlier clicks, on every
  image the model read, with the task's settings (``Task.refine_settings``), as Slicer's effect
  and the review app run it (the result's linked inputs, ``RefineLogic.channel_nodes``);
* ``brush``: a ball of ``--brush-mm`` radius painted (or erased) at the click, never over other
  segments (what Segment Editor's Paint / Erase with "overwrite other segments: none" does);
* ``grow``: SimpleITK's ConfidenceConnected region growing from the click on the image the
  task's overview shows (rectal T2w, brain FLAIR, the CT, the MR; mean +- 2.5 sd of the
  neighbourhood, 2 iterations), added or erased, never over other segments: region growing on
  the image alone, without the model.

A second protocol, ``session``, follows one reader through a whole case: a segment whose
missed voxels lie under other segments cannot gain from its own clicks until those segments are
corrected (refine never writes over another segment), so the reader corrects the segments in
turn, those with the smallest share of their errors under other segments first, each
with ``--session-clicks`` clicks placed as above on the case's labels as the earlier segments
left them. Each segment's Dice is reported before and after its own clicks, against the model's
result.

Cases are phantoms of every segmentation task drawn with seed 3100 (no demo model trained on
it: docs/DEMO_MODELS.md lists the seeds in use), segmented by the task's demo model.

    python Testing/benchmarks/bench_refine.py --output refine.png     # every task, 2 cases
    python Testing/benchmarks/bench_refine.py --quick                 # rectal, 1 case, 3 clicks
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk
from report import report

TASKS = ("rectal", "oar-ct", "oar-mr", "brain")
METHODS = ("refine", "brush", "grow")
SEED = 3100


def truth_labels(task: str, case, prediction) -> np.ndarray:
    """The phantom's reference labels on the prediction's label grid, in its label values."""
    grid = prediction.labels
    if task == "rectal":
        return case.label_on(grid, "dwi_b0")
    if task == "brain":
        labels = case.label_on(grid, prediction.display_role)
        for source, target in case.info.get("label_map", {}).items():
            labels[labels == int(source)] = int(target)
        return labels
    if task == "oar-ct":
        from oncoseg.oar.ct.training import case_labels

        labels, _ = case_labels(case, grid)
        return labels
    from oncoseg.oar.mr.preprocessing import network_view
    from oncoseg.oar.mr.training import case_masks
    from oncoseg.tasks import get_task

    masks = case_masks(case, network_view(case.read("mr")))
    labels = np.zeros(masks.shape[1:], np.uint8)
    specs = [s for s in get_task(task).segments]
    for spec, mask in zip(specs, masks, strict=True):
        labels[mask] = spec.label
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def next_click(segment: np.ndarray, truth: np.ndarray, labels: sitk.Image,
               free: np.ndarray | None = None) -> tuple[tuple[float, ...], bool] | None:
    """The simulated reader's click: centre of the largest error region, and its sign.

    ``free``: where the segment may grow (voxels of no other segment). A false negative under
    another segment is that segment's error: no corrector here overwrites other segments
    (refine by design, brush and region growing as Segment Editor's "overwrite other
    segments: none"), so the reader corrects it on the other segment, not here."""
    structure = ndi.generate_binary_structure(3, 1)
    best = None
    missing = truth & ~segment if free is None else truth & ~segment & free
    for positive, errors in ((True, missing), (False, segment & ~truth)):
        components, count = ndi.label(errors, structure)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[0]:
            best = (int(sizes[k - 1]), positive, components == k)
    if best is None:
        return None
    _, positive, region = best
    distance = ndi.distance_transform_edt(np.pad(region, 1),
                                          sampling=labels.GetSpacing()[::-1])[1:-1, 1:-1, 1:-1]
    z, y, x = np.unravel_index(int(np.argmax(distance)), region.shape)
    return labels.TransformIndexToPhysicalPoint((int(x), int(y), int(z))), positive


def ball(grid: sitk.Image, point, radius_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """A ball of ``radius_mm`` round ``point`` (LPS) on ``grid``: its box and its mask there."""
    index = np.array(grid.TransformPhysicalPointToContinuousIndex(point))[::-1]
    spacing = np.array(grid.GetSpacing())[::-1]
    reach = np.ceil(radius_mm / spacing).astype(int)
    centre = np.floor(index + 0.5).astype(int)
    low = np.maximum(centre - reach, 0)
    high = np.minimum(centre + reach + 1, grid.GetSize()[::-1])
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    grids = np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high, strict=True)),
                        indexing="ij")
    inside = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)) \
        <= radius_mm ** 2
    return box, inside


def brush(labels: np.ndarray, grid: sitk.Image, target: int, point, positive: bool,
          radius_mm: float) -> np.ndarray:
    box, inside = ball(grid, point, radius_mm)
    out = labels.copy()
    crop = out[box]
    if positive:
        crop[inside & (crop == 0)] = target
    else:
        crop[inside & (crop == target)] = 0
    return out


def grow(labels: np.ndarray, image: sitk.Image, target: int, point, positive: bool
         ) -> np.ndarray:
    index = image.TransformPhysicalPointToIndex(point)
    region = sitk.GetArrayViewFromImage(sitk.ConfidenceConnected(
        sitk.Cast(image, sitk.sitkFloat32), seedList=[index], numberOfIterations=2,
        multiplier=2.5, initialNeighborhoodRadius=1, replaceValue=1)).astype(bool)
    out = labels.copy()
    if positive:
        out[region & (out == 0)] = target
    else:
        out[region & (out == target)] = 0
    return out


def task_settings(prediction):
    """The refine settings of the prediction's task (what Slicer's effect and the review app
    use: ``Task.refine_settings``)."""
    from oncoseg.tasks import get_task

    return get_task(prediction.task).refine_settings()


def refine_click(images, probability, grid: sitk.Image, labels: np.ndarray, label: int,
                 click, earlier: list, times: list[float] | None = None,
                 settings=None) -> np.ndarray:
    """The label array after one refine click (the earlier clicks kept as seeds, and this one
    appended to them); ``times`` gets the refine call's seconds."""
    from oncoseg.refine import Stroke, refine

    current = sitk.GetImageFromArray(labels)
    current.CopyInformation(grid)
    stroke = Stroke.click(*click)
    started = time.perf_counter()
    out = sitk.GetArrayFromImage(refine(images, probability, current, label, [stroke],
                                        earlier, settings=settings).labels)
    if times is not None:
        times.append(time.perf_counter() - started)
    earlier.append(stroke)
    return out


def simulate(method: str, prediction, truth: np.ndarray, spec, clicks: int, brush_mm: float,
             times: list[float]) -> list[float]:
    """Dice of the target segment after 0, 1, ..., ``clicks`` clicks of the simulated reader."""
    from oncoseg.refine import Stroke

    grid = prediction.labels
    images = [prediction.images[r] for r in prediction.images]
    settings = task_settings(prediction)
    probability = prediction.probabilities[spec.name]
    labels = sitk.GetArrayFromImage(grid)
    wanted = truth == spec.label
    curve = [dice(labels == spec.label, wanted)]
    earlier: list[Stroke] = []
    for _ in range(clicks):
        click = next_click(labels == spec.label, wanted, grid, labels == 0)
        if click is None:
            curve.append(curve[-1])
            continue
        point, positive = click
        if method == "refine":
            labels = refine_click(images, probability, grid, labels, spec.label, click, earlier,
                                  times, settings)
        elif method == "brush":
            labels = brush(labels, grid, spec.label, point, positive, brush_mm)
        else:
            labels = grow(labels, images[0] if prediction.display_role not in prediction.images
                          else prediction.images[prediction.display_role], spec.label, point,
                          positive)
        curve.append(dice(labels == spec.label, wanted))
    return curve


def hidden_share(labels: np.ndarray, truth: np.ndarray, label: int) -> float:
    """The share of a segment's errors (missed and false voxels) that its own clicks cannot
    reach: missed voxels another segment holds."""
    segment, wanted = labels == label, truth == label
    missed = wanted & ~segment
    errors = int(missed.sum() + (segment & ~wanted).sum())
    return float((missed & (labels != 0)).sum()) / max(errors, 1)


def session(prediction, truth: np.ndarray, clicks: int) -> list[dict]:
    """One reader corrects every segment of the case in turn (module docstring): per segment,
    its Dice on the model's result and after each of its own clicks."""
    from oncoseg.refine import Stroke

    grid = prediction.labels
    images = [prediction.images[r] for r in prediction.images]
    settings = task_settings(prediction)
    labels = sitk.GetArrayFromImage(grid)
    specs = [s for s in prediction.segments if (truth == s.label).any()]
    specs.sort(key=lambda s: hidden_share(labels, truth, s.label))
    start = {s.name: dice(labels == s.label, truth == s.label) for s in specs}
    out = []
    for spec in specs:
        wanted = truth == spec.label
        curve = [dice(labels == spec.label, wanted)]
        earlier: list[Stroke] = []
        for _ in range(clicks):
            click = next_click(labels == spec.label, wanted, grid, labels == 0)
            if click is not None:
                labels = refine_click(images, prediction.probabilities[spec.name], grid,
                                      labels, spec.label, click, earlier,
                                      settings=settings)
            curve.append(dice(labels == spec.label, wanted))
        out.append({"segment": spec.name, "model": round(start[spec.name], 4),
                    "session": [round(d, 4) for d in curve]})
    return out


def resampled(prediction, truth: np.ndarray, size=(256, 256, 40)):
    """The prediction (its images, probability maps and labels) and the reference labels on a
    grid of ``size`` over the same box (the issue's 256 x 256 x 40): what the timings read."""
    from oncoseg.prediction import Prediction

    source = prediction.labels
    spacing = [e * (n - 1) / (m - 1) for e, n, m in zip(source.GetSpacing(), source.GetSize(),
                                                         size, strict=True)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetOrigin(source.GetOrigin())
    grid.SetDirection(source.GetDirection())
    grid.SetSpacing(spacing)

    def nearest(image):
        return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)

    def linear(image):
        return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32)

    truth_image = sitk.GetImageFromArray(truth.astype(np.uint8))
    truth_image.CopyInformation(source)
    moved = Prediction(task=prediction.task, model=prediction.model,
                       images={r: linear(i) for r, i in prediction.images.items()},
                       display_role=prediction.display_role, segments=prediction.segments,
                       labels=nearest(source),
                       probabilities={k: linear(v) for k, v in prediction.probabilities.items()})
    return moved, sitk.GetArrayFromImage(nearest(truth_image))


def speed(prediction, spec, truth: np.ndarray, repeats: int) -> list[float]:
    """Seconds per refine click on the case resampled to 256 x 256 x 40 (the issue's size)."""
    from oncoseg.refine import Stroke

    big, truth = resampled(prediction, truth)
    settings = task_settings(prediction)
    wanted = truth == spec.label
    images = list(big.images.values())
    probability = big.probabilities[spec.name]
    times = []
    array = sitk.GetArrayFromImage(big.labels)
    earlier: list[Stroke] = []
    for _ in range(repeats):
        click = next_click(array == spec.label, wanted, big.labels, array == 0)
        if click is None:
            break
        array = refine_click(images, probability, big.labels, array, spec.label, click, earlier,
                             times, settings)
    return times


def run_task(task: str, cases: int, clicks: int, brush_mm: float, folder: Path,
             rows: list[dict], times: list[float], session_clicks: int = 0,
             sessions: list[dict] | None = None) -> None:
    from oncoseg import verbs
    from oncoseg.datasets import read_dataset
    from oncoseg.tasks import get_task

    data = folder / task
    verbs.phantom(task, data, cases=cases, seed=SEED)
    roles = [r.name for r in get_task(task).inputs]
    for case in read_dataset(data, roles=roles, partial=True).cases:
        images = {r: case.read_stored(r) for r in case.images}
        prediction = verbs.predict(task, images, "demo")
        truth = truth_labels(task, case, prediction)
        if truth.shape != sitk.GetArrayViewFromImage(prediction.labels).shape:
            raise RuntimeError(f"{task} {case.id}: reference labels {truth.shape} are not on "
                               "the prediction's grid")
        for spec in prediction.segments:
            if not (truth == spec.label).any():
                continue  # a segment the phantom does not hold: no reader would click
            row = {"task": task, "case": case.id, "segment": spec.name}
            for method in METHODS:
                row[method] = [round(d, 4) for d in simulate(method, prediction, truth, spec,
                                                             clicks, brush_mm, times)]
            rows.append(row)
        if session_clicks and sessions is not None:
            for entry in session(prediction, truth, session_clicks):
                sessions.append({"task": task, "case": case.id, **entry})


def mean_curve(rows: list[dict], method: str) -> list[float]:
    return [round(float(np.mean(v)), 4) for v in zip(*(r[method] for r in rows), strict=True)]


def plot(rows: list[dict], output: Path, clicks: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    figure, axes = plt.subplots(1, len(tasks) + 1, figsize=(4 * (len(tasks) + 1), 3.6),
                                squeeze=False)
    groups = [(t, [r for r in rows if r["task"] == t]) for t in tasks]
    groups.append(("segments starting < 0.90", [r for r in rows if r["refine"][0] < 0.90]))
    for axis, (title, group) in zip(axes[0], groups, strict=True):
        for method in METHODS:
            if group:
                axis.plot(range(clicks + 1), mean_curve(group, method), marker="o", ms=3,
                          label=method)
        axis.set_title(f"{title} ({len(group)})", fontsize=9)
        axis.set_xlabel("clicks")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice of the segment")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--cases", type=int, default=2, help="phantom cases per task")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--brush-mm", type=float, default=5.0, help="brush radius")
    parser.add_argument("--session-clicks", type=int, default=3,
                        help="clicks per segment in the session protocol (0: not run)")
    parser.add_argument("--output", type=Path, help="curve as PNG")
    parser.add_argument("--quick", action="store_true", help="rectal, 1 case, 3 clicks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.cases, args.clicks = ["rectal"], 1, 3
    rows: list[dict] = []
    times: list[float] = []
    sessions: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            run_task(task, args.cases, args.clicks, args.brush_mm, Path(tmp), rows, times,
                     args.session_clicks, sessions)
        from oncoseg import verbs
        from oncoseg.datasets import read_dataset

        first = args.tasks[0]
        case = read_dataset(Path(tmp) / first, partial=True).cases[0]
        prediction = verbs.predict(first, {r: case.read_stored(r) for r in case.images},
                                   "demo")
        spec = next(s for s in prediction.segments
                    if (truth_labels(first, case, prediction) == s.label).any())
        big = speed(prediction, spec, truth_labels(first, case, prediction),
                    3 if args.quick else 10)
    if args.output:
        plot(rows, args.output, args.clicks)
    low = [r for r in rows if r["refine"][0] < 0.90]
    at = min(3, args.clicks)
    goal = [r for r in low if r["refine"][at] - r["refine"][0] >= 0.05]
    summary = {
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "clicks": args.clicks, "brush_mm": args.brush_mm, "rows": rows,
        "mean": {m: mean_curve(rows, m) for m in METHODS},
        "mean_below_090": {m: mean_curve(low, m) for m in METHODS} if low else {},
        "below_090": len(low), f"gain_005_within_{at}": len(goal),
        "refine_s_median": round(statistics.median(times), 3) if times else None,
        "refine_s_max": round(max(times), 3) if times else None,
        "refine_256x256x40_s": [round(t, 3) for t in big],
        "session_clicks": args.session_clicks, "session": sessions,
    }
    session_low = [r for r in sessions if r["model"] < 0.90]
    session_goal = [r for r in session_low if r["session"][-1] - r["model"] >= 0.05]
    summary["session_below_090"] = len(session_low)
    summary[f"session_gain_005_within_{args.session_clicks}"] = len(session_goal)
    marks = sorted({0, 1, min(3, args.clicks), min(5, args.clicks), args.clicks})
    lines = [f"refine vs brush ({args.brush_mm:g} mm) vs region growing, simulated reader, "
             f"Dice after {'/'.join(map(str, marks))} clicks"]
    for r in rows:
        cells = "  ".join(f"{m} " + "/".join(f"{r[m][k]:.2f}" for k in marks) for m in METHODS)
        lines.append(f"  {r['task']:7} {r['case'][:16]:16} {r['segment'][:22]:22} {cells}")
    for name, group in (("all", rows), ("start < 0.90", low)):
        if group:
            cells = "  ".join(f"{m} " + "/".join(f"{mean_curve(group, m)[k]:.3f}"
                                                 for k in marks) for m in METHODS)
            lines.append(f"  mean {name} ({len(group)}): {cells}")
    lines.append(f"  segments starting < 0.90: {len(low)}; +0.05 Dice within {at} clicks: "
                 f"{len(goal)}")
    if sessions:
        lines.append(f"  session (each segment corrected in turn, {args.session_clicks} clicks "
                     "each): Dice on the model's result / before its clicks / after them")
        for r in sessions:
            lines.append(f"  {r['task']:7} {r['case'][:16]:16} {r['segment'][:22]:22} "
                         f"{r['model']:.3f} / {r['session'][0]:.3f} / {r['session'][-1]:.3f}")
        lines.append(f"  session, segments starting < 0.90: {len(session_low)}; +0.05 Dice "
                     f"over the model's result after their own {args.session_clicks} clicks: "
                     f"{len(session_goal)}")
    if times:
        lines.append(f"  refine per click: median {summary['refine_s_median']} s, max "
                     f"{summary['refine_s_max']} s; on 256 x 256 x 40: "
                     f"{summary['refine_256x256x40_s']} s")
    report(summary, args.json, lines)


if __name__ == "__main__":
    main()
