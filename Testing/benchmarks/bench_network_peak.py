"""Each task's network stage against the machine's convolution peak, measured in the same run.

Each task's stage runs in a process of its own, as a prediction does (with ``--quick``, the
suite's check that every stage runs, all in this one). The peak: the best
GFLOP/s torch reaches on a few large channels-last convolutions (3D and 2D,
64-256 channels) with the run's threads. Then each task's network stage, exactly as its
prediction code runs it, on its shipped demo model and a phantom case (preprocessed as
prediction preprocesses it; only the network stage is timed): rectal (dense form), oar-ct
(sliding window), oar-mr (slice batches), staging (test-time passes), brain 2D models (three
orientations) and brain 2D-3D members (sliding window). FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` on one run of the same stage (convolutions, matrix
products and transposed convolutions; normalisations and activations count nothing, so the
fraction is of useful convolution work). Each stage is also given its own "shape ceiling": the
best GFLOP/s of its single most expensive convolution run alone, in isolation, with the same
shape and memory format, which says how much of the gap to the peak the shapes alone explain
(8-16 channel convolutions are memory-bound on this CPU whatever the code around them does).

With ``--widths default`` the same stages run the demo models' architectures at the widths the
tasks' training builds by default (oar-ct 16-32-64-128 filters instead of the demo's 8-64,
oar-mr width 64 instead of 16, brain 16 instead of 8 and the 2D-3D members without the demo's
instance norm, as the paper; the rectal and staging demos already have them), with random
weights: the same cases, windows and code, so the figure says what the engine reaches on the
networks a user trains.

    python Testing/benchmarks/bench_network_peak.py [--quick] [--tasks T ...] [--repeat N]
                                                    [--widths demo|default]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from report import report
from torch.utils.flop_counter import FlopCounterMode

TASKS = ("rectal", "oar-ct", "oar-mr", "staging", "brain-2d", "brain-3d")
CL = {4: torch.channels_last, 5: torch.channels_last_3d}

# (spatial dims, batch, in, out, spatial size, kernel): large enough channel counts for the
# vector units to be busy; the best of these is "the peak"
PEAK_SHAPES = ((3, 1, 64, 64, (32, 48, 48), 3), (3, 1, 128, 128, (24, 32, 32), 3),
               (2, 8, 128, 128, (64, 64), 3), (2, 4, 256, 256, (48, 48), 3))
QUICK_PEAK_SHAPES = ((3, 1, 64, 64, (16, 24, 24), 3), (2, 2, 128, 128, (32, 32), 3))
# the narrow 3D convolutions the demo models are made of (not part of the peak): what the same
# oneDNN kernels reach when 8-32 channels fill half to two AVX-512 registers
NARROW_SHAPES = ((3, 1, 8, 8, (70, 70, 70), 3), (3, 1, 16, 16, (35, 35, 35), 3),
                 (3, 1, 32, 32, (17, 17, 17), 3), (3, 2, 8, 8, (72, 136, 136), 3))


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs after one warm-up (the machine is shared: the minimum is
    the least disturbed)."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def conv_gflops(dims: int, batch: int, cin: int, cout: int, size: tuple[int, ...],
                kernel: int, repeat: int, padding: int | None = None,
                dilation: int = 1) -> float:
    """GFLOP/s of one channels-last convolution of this shape (2 FLOPs per multiply-add)."""
    x = torch.randn(batch, cin, *size).contiguous(memory_format=CL[dims + 2])
    w = torch.randn(cout, cin, *([kernel] * dims)).contiguous(memory_format=CL[dims + 2])
    conv = F.conv3d if dims == 3 else F.conv2d
    pad = kernel // 2 * dilation if padding is None else padding
    with torch.inference_mode():
        out = conv(x, w, padding=pad, dilation=dilation)
        flops = 2.0 * out.numel() * cin * kernel ** dims
        seconds = best_seconds(lambda: conv(x, w, padding=pad, dilation=dilation), repeat)
    return flops / seconds / 1e9


def machine_peak(quick: bool, repeat: int, with_narrow: bool = True) -> dict:
    """Best GFLOP/s over a few large channels-last convolutions, per shape and overall (and
    the narrow shapes' GFLOP/s, unless ``quick`` or not ``with_narrow``)."""
    shapes = {}
    for dims, batch, cin, cout, size, kernel in (QUICK_PEAK_SHAPES if quick else PEAK_SHAPES):
        name = f"conv{dims}d {cin}->{cout} {'x'.join(map(str, size))} b{batch}"
        shapes[name] = round(conv_gflops(dims, batch, cin, cout, size, kernel, repeat), 1)
    narrow = {}
    measured = NARROW_SHAPES if with_narrow and not quick else ()
    for dims, batch, cin, cout, size, kernel in measured:
        name = f"conv{dims}d {cin}->{cout} {'x'.join(map(str, size))} b{batch}"
        narrow[name] = round(conv_gflops(dims, batch, cin, cout, size, kernel, repeat), 1)
    return {"peak_gflops": max(shapes.values()), "peak_shapes": shapes, "narrow_shapes": narrow}


def _biggest_convolution(module_calls: list[tuple]) -> tuple | None:
    return max(module_calls, key=lambda c: c[-1]) if module_calls else None


def _mkldnn_convolution_flops(x_shape, w_shape, bias_shape, padding, stride, dilation,
                              groups, out_shape=None) -> int:
    """2 x multiply-adds of ``aten.mkldnn_convolution``, which torch's counter does not know
    (oncoseg.device.OneDnnConv3d calls it directly)."""
    per_output = 1
    for size in w_shape[1:]:
        per_output *= size
    total = 2 * per_output
    for size in out_shape:
        total *= size
    return total


def _pointwise_flops(x_shape, w_shape, bias_shape, padding, stride, dilation, groups, attr,
                     scalars, algorithm, out_shape=None) -> int:
    """oneDNN's convolution with a post-op (``network_fusion``): the convolution's FLOPs."""
    return _mkldnn_convolution_flops(x_shape, w_shape, bias_shape, padding, stride, dilation,
                                     groups, out_shape)


def _residual_flops(other_shape, x_shape, w_shape, *args, out_shape=None) -> int:
    """oneDNN's convolution summed into a residual in place (``network_fusion``)."""
    return _mkldnn_convolution_flops(x_shape, w_shape, None, None, None, None, None,
                                     other_shape)


def _addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """A matrix product accumulated in place (``network_fusion``'s 1 x 1 residual), which
    torch's counter knows only out of place."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_flops(stage: Callable[[], object]) -> float:
    """FLOPs of one run of the stage, as torch's flop counter sees them (plus the direct oneDNN
    convolutions and in-place products, counted by hand)."""
    mapping = {torch.ops.aten.mkldnn_convolution: _mkldnn_convolution_flops,
               torch.ops.mkldnn._convolution_pointwise: _pointwise_flops,
               torch.ops.mkldnn._convolution_pointwise_: _residual_flops,
               torch.ops.aten.addmm_: _addmm_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        stage()
    return float(counter.get_total_flops())


def convolution_shapes(stage: Callable[[], object]) -> list[tuple]:
    """Every distinct convolution the stage runs: (dims, batch, in, out, spatial out, kernel,
    stride, padding, dilation, channels-last input, FLOPs summed over its calls)."""
    seen: dict[tuple, float] = {}
    aten = torch.ops.aten

    direct = (aten.conv2d.default, aten.conv3d.default)  # what inference mode dispatches

    def argument(args: tuple, kwargs: dict, index: int, name: str, default: object,
                 dims: int) -> tuple:
        value = args[index] if len(args) > index else kwargs.get(name, default)
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        return value * dims if len(value) == 1 else value

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            convolution = func is aten.convolution.default and not args[6]
            # (x, w, b, padding, stride, ...): oneDNN directly, with a post-op or without
            onednn = func in (aten.mkldnn_convolution.default,
                              torch.ops.mkldnn._convolution_pointwise.default)
            if func is torch.ops.mkldnn._convolution_pointwise_.binary:  # (residual, x, ...)
                args, onednn = args[1:], True
            if func in direct or convolution or onednn:
                x, w = args[0], args[1]
                dims = x.dim() - 2
                stride, padding = (4, 3) if onednn else (3, 4)
                key = (dims, x.shape[0], x.shape[1], w.shape[0], tuple(x.shape[2:]),
                       tuple(w.shape[2:]), argument(args, kwargs, stride, "stride", 1, dims),
                       argument(args, kwargs, padding, "padding", 0, dims),
                       argument(args, kwargs, 5, "dilation", 1, dims),
                       x.is_contiguous(memory_format=CL[x.dim()]) and x.shape[1] > 1)
                seen[key] = seen.get(key, 0.0) + 2.0 * out.numel() * w[0].numel()
            return out

    with Spy():
        stage()
    return [(*k, v) for k, v in seen.items()]


def shape_ceiling(calls: list[tuple], repeat: int) -> tuple[float, str]:
    """GFLOP/s of the stage's most expensive convolution alone (its shape, channels-last),
    and a description of it."""
    dims, batch, cin, cout, size, kernel, stride, padding, dilation, _, _ = \
        _biggest_convolution(calls)
    x = torch.randn(batch, cin, *size).contiguous(memory_format=CL[dims + 2])
    w = torch.randn(cout, cin, *kernel).contiguous(memory_format=CL[dims + 2])

    def conv():  # oneDNN directly, as the prepared networks call it (DirectConv)
        return torch.ops.aten.mkldnn_convolution(x, w, None, list(padding), list(stride),
                                                 list(dilation), 1)

    with torch.inference_mode():
        flops = 2.0 * conv().numel() * w[0].numel()
        seconds = best_seconds(conv, repeat)
    text = (f"conv{dims}d {cin}->{cout} k{'x'.join(map(str, kernel))} on "
            f"{'x'.join(map(str, size))} b{batch}")
    return flops / seconds / 1e9, text


# --- each task's network stage on its demo model and a phantom case -------------------------


def _case(task: str, folder: Path, seed: int = 1):
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.verbs import phantom

    if not (folder / task).exists():  # brain's two stages share one case
        phantom(task, folder / task, cases=1, seed=seed)
    return read_dataset(folder / task).cases[0]


def _default_widths(task: str, settings, demo: dict) -> dict:
    """The architecture arguments (of the demo's, ``demo``) that differ between a task's demo
    model (narrowed to train on a CPU) and the network its training builds by default."""
    if task == "oar-ct":
        return {"filters": list(settings.filters)}
    if task == "oar-mr":
        return {"width": settings.width}
    if task == "brain":
        return {"width_2d": settings.width_2d, "members": [
            {**member, "width": settings.width_3d, "norm": settings.norm_3d}
            for member in demo["members"]]}
    return {}  # rectal and staging: the demo models have the paper's widths


def _prepared(task: str, widths: str):
    """The demo model as prediction prepares it; with ``--widths default`` the same model
    file's architecture at the widths the task's training builds by default, random weights
    (the speed of a network does not depend on its weights)."""
    from dataclasses import replace

    from oncoseg.method import Prepared, training_settings
    from oncoseg.modelfile import LoadedModel, build_network
    from oncoseg.verbs import RunContext, prepare

    prepared = prepare(task, "demo", context=RunContext("cpu"))
    if widths == "demo":
        return prepared
    metadata = prepared.model.metadata
    widths = _default_widths(task, training_settings(task), metadata.architecture_args)
    metadata = replace(metadata, architecture_args={**metadata.architecture_args, **widths})
    torch.manual_seed(0)
    network = build_network(metadata).eval()
    return Prepared(prepared.task, LoadedModel(network, metadata, prepared.model.path),
                    prepared.settings)


def rectal_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    from oncoseg.orientation import canonical_images
    from oncoseg.rectal.dense import probability_map
    from oncoseg.rectal.preprocessing import ROLES, prepare

    case = _case("rectal", folder)
    ready = prepare(canonical_images({r: case.read(r) for r in ROLES}), "none")
    channels = ready.channels[:, :2] if quick else ready.channels
    network = _prepared("rectal", widths).network
    return lambda: probability_map(network, channels)


def oar_ct_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    from oncoseg.oar.ct.predict import organ_probabilities
    from oncoseg.oar.ct.preprocessing import to_working_grid, working_grid

    prepared = _prepared("oar-ct", widths)
    settings, metadata = prepared.settings, prepared.model.metadata
    image = _case("oar-ct", folder).read("ct")
    hu = to_working_grid(image, working_grid(image, settings.grid_spacing))
    patch = tuple(metadata.preprocessing.get("patch_size", settings.patch_size))
    if quick:
        hu, patch = hu[:16, :48, :48], (16, 32, 32)
    return lambda: organ_probabilities(hu, prepared.network, settings, patch)


def oar_mr_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    import SimpleITK as sitk

    from oncoseg.oar.mr.predict import slice_outputs
    from oncoseg.oar.mr.preprocessing import network_view, scale_scan, working_volume

    prepared = _prepared("oar-mr", widths)
    settings = prepared.settings
    array = sitk.GetArrayFromImage(network_view(_case("oar-mr", folder).read("mr")))
    working = working_volume(scale_scan(array[:4] if quick else array), settings.size)
    return lambda: [m for _, m, _ in slice_outputs(working, prepared.network, settings)]


def staging_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    from dataclasses import replace

    from oncoseg.orientation import to_canonical
    from oncoseg.staging.predict import volume_scores
    from oncoseg.staging.preprocessing import prepare_volume

    prepared = _prepared("staging", widths)
    settings = prepared.settings
    case = _case("staging", folder)
    volume = prepare_volume(to_canonical(case.read("t2w")), settings,
                            roi_box=case.info["roi_lps_mm"])
    array = volume.array[:4] if quick else volume.array
    config = replace(settings, tta=2) if quick else settings
    return lambda: volume_scores(array, prepared.network, config)


def _brain_volume(folder: Path, quick: bool):
    from oncoseg.brain.config import SEQUENCES
    from oncoseg.brain.preprocessing import prepare_volume

    case = _case("brain", folder)
    volume = prepare_volume({r: case.read(r) for r in SEQUENCES}, 1.0)
    if quick:
        volume.array = np.ascontiguousarray(volume.array[:, :16, :32, :32])
    return volume


def brain_2d_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    from oncoseg.brain.predict import features_2d

    ensemble = _prepared("brain", widths).network.eval()
    volume = _brain_volume(folder, quick)
    kinds = dict.fromkeys(net.features_from for net in ensemble.nets3d)
    return lambda: [features_2d(ensemble.models_2d(k), volume.array, volume.present)
                    for k in kinds]


def brain_3d_stage(folder: Path, quick: bool, widths: str) -> Callable[[], object]:
    from dataclasses import replace

    from oncoseg.brain.predict import features_2d, member_results

    prepared = _prepared("brain", widths)
    ensemble, settings = prepared.network.eval(), prepared.settings
    volume = _brain_volume(folder, quick)
    config = replace(settings, patch=16) if quick else settings
    features = {k: features_2d(ensemble.models_2d(k), volume.array, volume.present)
                for k in dict.fromkeys(net.features_from for net in ensemble.nets3d)}
    return lambda: member_results(ensemble, volume, features, config)


STAGES = {"rectal": rectal_stage, "oar-ct": oar_ct_stage, "oar-mr": oar_mr_stage,
          "staging": staging_stage, "brain-2d": brain_2d_stage, "brain-3d": brain_3d_stage}


def measure(task: str, folder: Path, quick: bool, repeat: int, peak: float,
            widths: str = "demo") -> dict:
    """Seconds, FLOPs, GFLOP/s and fraction of the peak of one task's network stage.

    The fraction is of the peak measured in the stage's own process right before and right
    after its timed runs (the higher of the two): this shared machine's speed drifts by 15 %
    within minutes, so a peak measured a minute earlier says less about the stage's moment.
    The fraction of the run's first peak (``peak``) is reported too."""
    stage = STAGES[task](folder, quick, widths)
    before = machine_peak(quick, repeat, with_narrow=False)["peak_gflops"]
    seconds = best_seconds(stage, repeat)
    local = max(before, machine_peak(quick, repeat, with_narrow=False)["peak_gflops"])
    flops = count_flops(stage)
    calls = convolution_shapes(stage)
    ceiling, biggest = shape_ceiling(calls, repeat)
    conv_flops = sum(c[-1] for c in calls)
    channels_last = sum(c[-1] for c in calls if c[-2]) / conv_flops if conv_flops else 0.0
    gflops = flops / seconds / 1e9
    return {"task": task, "seconds": round(seconds, 3), "gflop": round(flops / 1e9, 2),
            "gflops": round(gflops, 1), "peak_gflops": round(local, 1),
            "fraction_of_peak": round(gflops / local, 3),
            "fraction_of_run_peak": round(gflops / peak, 3),
            "biggest_conv": biggest, "biggest_conv_gflops": round(ceiling, 1),
            "biggest_conv_fraction_of_peak": round(ceiling / local, 3),
            "channels_last_flop_share": round(channels_last, 3)}


def measure_apart(task: str, repeat: int, peak: float, widths: str) -> dict:
    """:func:`measure` in a process of its own, as each prediction runs: what an earlier stage
    left in malloc's heap changes a later one's time (oar-ct's stage after the brain stages:
    1.56 s, first after the rectal one: 1.26-1.31 s; dev CPU)."""
    command = [sys.executable, __file__, "--stage", task, "--repeat", str(repeat),
               "--peak", str(peak), "--widths", widths]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {task} stage failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny inputs (the suite's run)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--repeat", type=int, default=None, help="timed runs (best is kept)")
    parser.add_argument("--widths", choices=("demo", "default"), default="demo",
                        help="the demo models as shipped, or their architectures at the widths "
                             "the tasks' training builds by default (random weights)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stage", choices=TASKS, help=argparse.SUPPRESS)  # one, in this process
    parser.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    torch.manual_seed(0)
    if args.stage:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.stage, Path(tmp), args.quick, repeat, args.peak,
                                     args.widths)))
        return
    peak = machine_peak(args.quick, repeat)
    if args.quick:  # the suite's run checks that every stage runs: one process saves imports
        with tempfile.TemporaryDirectory() as tmp:
            rows = [measure(task, Path(tmp), True, repeat, peak["peak_gflops"],
                            args.widths) for task in args.tasks]
    else:
        rows = [measure_apart(task, repeat, peak["peak_gflops"], args.widths)
                for task in args.tasks]
    summary = {**peak, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "quick": args.quick, "widths": args.widths, "tasks": rows}
    lines = [f"Convolution peak ({torch.get_num_threads()} threads, channels-last): "
             f"{peak['peak_gflops']} GFLOP/s",
             *(f"  {name}: {value} GFLOP/s" for name, value in peak["peak_shapes"].items()),
             *(f"  narrow (not in the peak) {name}: {value} GFLOP/s "
               f"({value / peak['peak_gflops']:.0%})"
               for name, value in peak["narrow_shapes"].items()),
             "", "Networks: " + ("the demo models" if args.widths == "demo" else
                                "the demo architectures at the default widths (random weights)"),
             "(of peak: of the peak measured next to the stage, in its process; of run peak: "
             "of the one above)",
             f"{'task':<10}{'seconds':>9}{'GFLOP':>9}{'GFLOP/s':>9}{'peak':>7}{'of peak':>9}"
             f"{'of run':>8}{'CL share':>9}   biggest convolution alone (GFLOP/s, of peak)"]
    for row in rows:
        lines.append(f"{row['task']:<10}{row['seconds']:>9.3f}{row['gflop']:>9.2f}"
                     f"{row['gflops']:>9.1f}{row['peak_gflops']:>7.0f}"
                     f"{row['fraction_of_peak']:>9.0%}{row['fraction_of_run_peak']:>8.0%}"
                     f"{row['channels_last_flop_share']:>9.0%}   {row['biggest_conv']}: "
                     f"{row['biggest_conv_gflops']} ({row['biggest_conv_fraction_of_peak']:.0%})")
    report(summary, args.json, lines)


if __name__ == "__main__":
    main()
