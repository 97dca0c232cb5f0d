"""The ``oncoseg`` command: the same tasks the Slicer modules run, from a terminal or a cluster.

Exit codes: 0 success, 2 bad input (the message names the input and what is wrong), 1 anything
else. Long verbs show tqdm bars on stderr, or JSON lines on stdout with ``--progress json``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import oncoseg
from oncoseg.errors import Cancelled, InputError, OncoSegError
from oncoseg.export_formats import FORMATS
from oncoseg.io.atomic import refuse_nonempty_folder
from oncoseg.progress import CancelToken, JsonLinesProgress, ProgressCallback, TqdmProgress
from oncoseg.settings import PREDICTION, TRAINING
from oncoseg.terminology import DEFAULT_NAMING, STRUCTURE_NAMINGS

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"oncoseg: error: {message}\n")


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="tqdm bars on stderr, JSON lines on stdout, or nothing")


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a configuration field "
                        "(repeatable; see `oncoseg tasks --json` for the fields)")


def _task_verb(verbs: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A verb on one task, writing into --output, on a device, with progress."""
    parser = verbs.add_parser(name, help=help_text)
    parser.add_argument("task")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _add_progress_option(parser)
    return parser


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--layout", default="auto", help="data set layout, or auto to detect it")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model a verb runs (predict, evaluate) and whether its output folder may be replaced."""
    parser.add_argument("--model", default="demo", help="a .safetensors model file, or 'demo'")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="oncoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"oncoseg {oncoseg.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    p = verbs.add_parser("tasks", help="list the tasks, their inputs and outputs")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("info", help="describe an image, a segmentation or a model file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")

    p = verbs.add_parser("phantom", help="write a synthetic data set in the task's layout")
    p.add_argument("task")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="native",
                   help="native (the task's own layout), nnunet (nnU-Net raw), or a layout "
                   "the task offers (brain: brats2021, brats2023)")
    p.add_argument("--orientation", default="LPS", metavar="LPS|RAS|LAS|CODE|random",
                   help="how the volumes are stored: where each array axis points (LPS as "
                   "DICOM, RAS or LAS as dcm2niix and nibabel write NIfTI, any of the 48 codes), "
                   "or random: one per case")
    p.add_argument("--tilt", type=float, default=0.0, metavar="DEGREES",
                   help="oblique acquisitions: each case's grids turned about a random axis by "
                   "up to this angle (rendered on the tilted grid; default 0, upright)")
    _add_progress_option(p)

    p = _task_verb(verbs, "predict", "run a task on one case")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="ROLE=PATH",
                   help="an input volume, DICOM file, DICOM series folder, or study folder / "
                   "DICOMDIR tree with --series (repeat for each role)")
    p.add_argument("--series", dest="series", action="append", default=[],
                   metavar="[ROLE=]UID|NUMBER|PATTERN",
                   help="which DICOM series an --input folder means when it holds several "
                   "(sub-folders are searched 5 levels deep): the series UID, the series "
                   "number, or a pattern on the series description ('*t2*ax*', any case). "
                   "ROLE= names the input; it may be left out when only one input is given. "
                   "Repeat for each role. Without it such a folder is refused with a table of "
                   "its series")
    _add_model_options(p)
    p.add_argument("--seed-point", metavar="X,Y,Z", help="LPS point (mm) inside the structure: "
                   "keep the candidate component there (tasks with candidates)")
    p.add_argument("--roi", metavar="X0,Y0,Z0,X1,Y1,Z1", help="box (LPS, mm) around the region "
                   "to classify (staging: rectum and tumour); write --roi=-80,... when the "
                   "first number is negative")
    p.add_argument("--probability-format", default="uint8",
                   choices=["uint8", "float32", "float32-gzip"],
                   help="how probability maps are stored: uint8 (default: round(p*255) with "
                   "scl_slope 1/255, read as float p within 1/510 by Slicer, SimpleITK and "
                   "nibabel), float32 (uncompressed .nii) or float32-gzip (.nii.gz, 10-40x "
                   "slower to write)")
    p.add_argument("--dataset", type=Path, help="instead of --input: every case of a data set "
                   "(any layout train reads, or a CSV manifest case_id,role,path), the model "
                   "read once; one folder per case in OUTPUT/cases/, failures in "
                   "OUTPUT/failed/, cohort.csv, cohort.json and report.html with quality "
                   "flags. Running it again goes on where the last run stopped")
    p.add_argument("--layout", default="auto", help="with --dataset: its layout, or auto")
    p.add_argument("--shard", metavar="K/N", help="with --dataset: predict share K of N only "
                   "(array jobs, e.g. --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT); "
                   "under torchrun each rank takes its share by itself")
    _add_set_option(p)

    p = _task_verb(verbs, "train", "train a task's model on a data set")
    _add_dataset_options(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--description", default="", help="what the model file says it is")
    p.add_argument("--synthetic", action="store_true", help="mark the model as trained on "
                   "synthetic data (a demo model: not for clinical use)")
    p.add_argument("--license", default="", metavar="SPDX", help="the licence of the weights, "
                   "stated in the model file (e.g. Apache-2.0, CC-BY-NC-4.0); the data set's "
                   "own licence (its dataset.json) is recorded beside it")
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation by patient "
                   "instead of one model (tasks that offer it: staging)")
    p.add_argument("--stage", help="train one stage of a staged method (brain: 2d-axial, "
                   "2d-coronal, 2d-sagittal, 2d3d, all)")
    _add_set_option(p)

    p = _task_verb(verbs, "evaluate", "evaluate a model on a labelled data set")
    _add_dataset_options(p)
    _add_model_options(p)
    _add_set_option(p)

    p = verbs.add_parser("export", help="write a segmentation as DICOM SEG, RTSTRUCT, NRRD, "
                         "NIfTI or .seg.nrrd, a result's probability maps as a FRACTIONAL "
                         "DICOM SEG (dicom-seg-fractional), its measurements as a DICOM SR "
                         "(dicom-sr)")
    p.add_argument("segmentation", help="a .seg.nrrd (as predict writes it), a label map, or "
                   "a predict output folder or its result.json (dicom-seg-fractional: the "
                   "maps it lists; dicom-sr: its volumes and staging result)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, type=Path, help="the file to write")
    p.add_argument("--reference", type=Path, help="folder of the DICOM series the "
                   "segmentation belongs to (dicom-seg, rtstruct)")
    p.add_argument("--series-uid", help="which series, when the folder holds several: its "
                   "UID, series number or a pattern on its description")
    p.add_argument("--task", help="name a label map's labels after this task's segments")
    p.add_argument("--label", default="OncoSeg", help="series description and structure set "
                   "label")
    p.add_argument("--maximum-fractional-value", type=int, help="dicom-seg-fractional: the "
                   "stored value of probability 1, 1-255 (default 255: steps of 1/255)")
    p.add_argument("--names", choices=STRUCTURE_NAMINGS, default=DEFAULT_NAMING, help="DICOM "
                   "structure and segment names: AAPM TG-263 where it defines the structure "
                   "(OncoSeg's name kept as the description), or OncoSeg's own")
    p.add_argument("--seg", type=Path, help="dicom-sr: the DICOM SEG already exported from "
                   "this result (same --names); without it one is written beside the report "
                   "(OUTPUT with .seg.dcm)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p = verbs.add_parser("demo", help="the main job on bundled sample data and demo models")
    p.add_argument("--output", type=Path, default=Path("oncoseg-demo"))
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    _add_progress_option(p)

    p = verbs.add_parser("serve", help="the browser review app (needs oncoseg[web] and a "
                         "source checkout)")
    p.add_argument("--data", type=Path, default=Path("."), help="the data root: case folders "
                   "and DICOM series; exports are written under it")
    p.add_argument("--host", default="127.0.0.1", help="the interface to listen on (default: "
                   "this machine only)")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--device", default="auto")
    return parser


def _progress(choice: str) -> ProgressCallback | None:
    if choice == "json":
        return JsonLinesProgress()
    if choice == "bar":
        return TqdmProgress()
    return None


def parse_overrides(items: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON when they parse as JSON, otherwise strings."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item}", "must be KEY=VALUE")
        if defaults and key not in defaults:
            raise InputError(f"--set {key}", f"is not a configuration field (fields: "
                             f"{', '.join(sorted(defaults))})")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def task_overrides(items: Sequence[str], task: Any, phase: str) -> dict[str, Any]:
    """``--set`` pairs for a task's verb: each a setting of the task that the verb's phase
    reads (``predict --set max_epochs=3`` is refused, before anything is read or loaded)."""
    from oncoseg.settings import check_phase

    overrides = parse_overrides(items, dict(task.default_config))
    if task.settings is not None:
        check_phase(task.settings, overrides, phase)
    return overrides


def parse_numbers(text: str, count: int, option: str, form: str) -> list[float]:
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise InputError(f"{option} {text}", f"must be {count} numbers {form}")
    return numbers


def parse_point(text: str) -> list[float]:
    return parse_numbers(text, 3, "--seed-point", "X,Y,Z (LPS, mm)")


def parse_inputs(items: Sequence[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for item in items:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise InputError(f"--input {item}", "must be ROLE=PATH")
        if role in inputs:
            raise InputError(f"--input {role}", "is given twice")
        inputs[role] = path
    return inputs


def parse_series(items: Sequence[str], inputs: dict[str, str]) -> dict[str, str]:
    """``--series [ROLE=]SELECTOR`` options: role -> selector. Without ROLE= the selector
    applies to the only input; every role named must be a DICOM folder input."""
    selectors: dict[str, str] = {}
    for item in items:
        role, sep, selector = item.partition("=")
        if not sep or role not in inputs:  # no ROLE= (a pattern may itself hold '=')
            if len(inputs) != 1:
                raise InputError(f"--series {item}", "say which input it is for: --series "
                                 f"ROLE={item} (inputs: {', '.join(inputs) or 'none'})")
            role, selector = next(iter(inputs)), item
        if not selector:
            raise InputError(f"--series {item}", "needs a series UID, number or pattern")
        if role in selectors:
            raise InputError(f"--series {role}", "is given twice")
        path = Path(inputs[role])
        if not (path.is_dir() or path.name.upper() == "DICOMDIR"):
            raise InputError(f"--series {item}", f"--input {role} is {path}, not a DICOM "
                             "folder to choose a series in")
        selectors[role] = selector
    return selectors


@contextlib.contextmanager
def _choosing_series(role: str):
    """A folder with several series becomes an error that says how to choose one."""
    from oncoseg.io.dicom_series import SeriesChoiceError

    try:
        yield
    except SeriesChoiceError as error:
        raise InputError(f"--input {role}={error.what}", f"{error.problem}\nChoose one "
                         f"with --series {role}=UID|NUMBER|PATTERN") from None


def check_input_sizes(paths: dict[str, str], selectors: dict[str, str]) -> None:
    """Refuse an input that cannot fit in memory from its header alone, before anything
    heavy (torch) is loaded."""
    from oncoseg.io.diffusion import DWI_ROLE
    from oncoseg.io.header import check_declared_size

    for role, path in paths.items():
        with _choosing_series(role):  # a diffusion series is read whole, its volumes at once
            check_declared_size(path, selectors.get(role), split=role != DWI_ROLE)


def read_inputs(paths: dict[str, str], selectors: dict[str, str]
                ) -> tuple[dict[str, Any], list[str], dict[str, dict[str, str]]]:
    """The input images by role, the reading notes (a DICOM series resampled onto a regular
    grid ...) in words for the terminal and result.json, and each DICOM input's identity
    (series, study, frame of reference, patient: :func:`series_identity`)."""
    from oncoseg.io.volumes import input_series, read_volume, reading_notes

    volumes = {}
    for role, path in paths.items():
        with _choosing_series(role):
            volumes[role] = read_volume(path, selectors.get(role))
    return ({role: v.image for role, v in volumes.items()}, reading_notes(volumes),
            input_series(volumes))


def _cmd_tasks(args: argparse.Namespace) -> int:
    from oncoseg.tasks import all_tasks

    tasks = [t.describe() for t in all_tasks()]
    if args.json:
        print(json.dumps(tasks, indent=2))
        return EXIT_OK
    if not tasks:
        print("No tasks are installed.")
    for t in tasks:
        print(f"{t['name']}: {t['title']} ({t['kind']}; {t['paper']})")
        for role in t["inputs"]:
            optional = " (optional)" if role["optional"] else ""
            print(f"    input  {role['role']:<10} {role['description']}{optional}")
        for s in t["segments"]:
            print(f"    output {s['name']} (label {s['label']})")
        for c in t["classes"]:
            print(f"    class  {c}")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from oncoseg.info import describe, format_description

    info = describe(args.file)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from oncoseg.device import resolve_device
    from oncoseg.prediction import write_prediction
    from oncoseg.tasks import get_task
    from oncoseg.verbs import Hints, RunContext, check_hints, predict

    task = get_task(args.task)
    if args.dataset is not None:
        return _cmd_predict_cohort(args, task)
    for option, value in (("--shard", args.shard), ("--layout", args.layout != "auto")):
        if value:
            raise InputError(option, "is an option of a cohort run (--dataset)")
    paths = parse_inputs(args.inputs)
    selectors = parse_series(args.series, paths)
    # dwi: one series or 4D file with every b-value, instead of dwi_b0 + dwi_b1000
    from oncoseg.io import diffusion

    dwi = diffusion.DWI_ROLE in paths and diffusion.accepts_dwi_series(task.inputs)
    for role in paths:
        if not (dwi and role == diffusion.DWI_ROLE):
            task.role(role)
    if dwi:
        diffusion.check_dwi_roles(paths)
    missing = [r for r in task.required_roles if r not in paths
               and not (dwi and r in (diffusion.B0_ROLE, diffusion.HIGH_B_ROLE))]
    if missing:
        raise InputError(f"--input {missing[0]}", f"is required by task '{task.name}' "
                         f"(give it as --input {missing[0]}=PATH"
                         f"{diffusion.dwi_hint(missing[0], task.inputs)})")
    overrides = task_overrides(args.overrides, task, PREDICTION)
    refuse_nonempty_folder(args.output, args.overwrite, "--output ")
    check_input_sizes(paths, selectors)
    device = resolve_device(args.device)
    hints = check_hints(task, Hints(
        seed_lps_mm=parse_point(args.seed_point) if args.seed_point else None,
        roi_lps_mm=parse_numbers(args.roi, 6, "--roi", "X0,Y0,Z0,X1,Y1,Z1 (LPS, mm)")
        if args.roi else None))
    images, reading_notes, input_series = read_inputs(
        {r: p for r, p in paths.items() if not (dwi and r == diffusion.DWI_ROLE)}, selectors)
    if dwi:  # its reading notes come with the b-value choice the task reports
        images[diffusion.DWI_ROLE] = diffusion.read_diffusion(
            paths[diffusion.DWI_ROLE], selectors.get(diffusion.DWI_ROLE))
    started = time.perf_counter()
    prediction = predict(task, images, args.model, overrides,
                         RunContext(device, _progress(args.progress), CancelToken()), hints)
    prediction.timings.setdefault("total", time.perf_counter() - started)
    prediction.messages[:0] = reading_notes  # printed below and kept in result.json
    write_prediction(prediction, args.output, {r: str(p) for r, p in paths.items()},
                     overwrite=args.overwrite, probability_format=args.probability_format,
                     input_series=input_series)
    for message in prediction.messages:
        print(f"note: {message}", file=sys.stderr)
    print(f"Results written to {args.output}/")
    return EXIT_OK


def _cmd_predict_cohort(args: argparse.Namespace, task: Any) -> int:
    """``predict --dataset``: every case, resumable; under torchrun every rank its share and
    rank 0 the summary once all are done."""
    from oncoseg import cohort
    from oncoseg.datasets.layouts import read_dataset, role_hints
    from oncoseg.device import resolve_device
    from oncoseg.distributed import session
    from oncoseg.verbs import RunContext

    for option, value in (("--input", args.inputs), ("--series", args.series),
                          ("--seed-point", args.seed_point), ("--roi", args.roi),
                          ("--overwrite", args.overwrite)):
        if value:
            raise InputError(option, "cannot be used with --dataset (a cohort folder is "
                             "resumed, never replaced; per-case hints come from the data set)")
    overrides = task_overrides(args.overrides, task, PREDICTION)
    cohort.check_output(args.output, task.name)
    dataset = read_dataset(args.dataset, args.layout, roles=[r.name for r in task.inputs],
                           check=False, partial=True, role_hints=role_hints(task))
    device = resolve_device(args.device)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.shard and torchrun:
        raise InputError("--shard", "is chosen by torchrun itself (one share per rank)")
    shard = cohort.Shard.parse(args.shard) if args.shard else cohort.Shard.from_torchrun()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with session(device) as group:
        say(f"cohort: {len(dataset.cases)} cases of {args.dataset} ({dataset.layout} layout)"
            + ("" if shard.count == 1 else f", shard {shard}: {len(shard.cases(dataset.cases))}"))
        outcomes = cohort.predict_cohort(task, dataset, args.output, args.model, overrides,
                                         RunContext(device, None, CancelToken()), shard, say,
                                         args.probability_format)
        group.barrier()  # torchrun: the summary once every rank is done
        if group.is_main:
            summary = cohort.write_summary(task, dataset, args.output)
            print(f"Cohort: {summary['done']} of {summary['cases']} cases done, "
                  f"{summary['failed']} failed, {summary['flagged']} flagged; report: "
                  f"{Path(args.output) / cohort.REPORT}")
    failed = [o.case_id for o in outcomes if o.status == "failed"]
    if failed:
        say(f"oncoseg: {len(failed)} case(s) failed ({', '.join(failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''}); the reasons are in "
            f"{Path(args.output) / cohort.FAILED}/. Run the command again to retry them")
        return EXIT_FAILURE
    return EXIT_OK


def _cmd_phantom(args: argparse.Namespace) -> int:
    from oncoseg.tasks import get_task
    from oncoseg.verbs import RunContext, phantom

    task = get_task(args.task)
    context = RunContext(progress=_progress(args.progress), cancel=CancelToken())
    if args.layout == "nnunet":
        from oncoseg.datasets.convert import phantoms_as_nnunet

        written = phantoms_as_nnunet(task, args.output, args.cases, args.seed,
                                     context.progress, context.cancel, args.orientation,
                                     args.tilt)
    else:
        written = phantom(task, args.output, args.cases, args.seed, args.layout,
                          args.orientation, args.tilt, context)
    print(f"{len(written)} {task.name} phantom case(s) written to {args.output}/")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from oncoseg.device import resolve_device
    from oncoseg.distributed import is_main_process
    from oncoseg.tasks import get_task
    from oncoseg.verbs import RunContext, TrainOptions, train

    task = get_task(args.task)
    overrides = task_overrides(args.overrides, task, TRAINING)
    if args.folds:
        if "folds" not in task.default_config:
            raise InputError("--folds", f"task '{task.name}' has no cross-validation")
        overrides["folds"] = args.folds
    if args.stage:
        if "stage" not in task.default_config:
            raise InputError("--stage", f"task '{task.name}' is not trained in stages")
        overrides["stage"] = args.stage
    context = RunContext(resolve_device(args.device), _progress(args.progress), CancelToken())
    if is_main_process():  # once per torchrun job, not once per process
        _say_licences(args.license, args.dataset)
    model = train(task, args.dataset, args.output, overrides, context, args.layout,
                  TrainOptions(args.resume, args.description, args.synthetic, args.license))
    if is_main_process():
        print(f"Cross-validation written to {model}" if args.folds
              else f"Model written to {model}")
    return EXIT_OK


def _say_licences(license: str, dataset: Path) -> None:
    """Before hours of training: which licences the model file will state."""
    from oncoseg.datasets.base import stated_license

    if not license:
        print("note: the model file states no licence; pass --license SPDX (e.g. Apache-2.0) "
              "to state the one its weights are shared under", file=sys.stderr)
    data_license = stated_license(dataset)
    if data_license:
        print(f"training data licence: {data_license} (recorded in the model file)",
              file=sys.stderr)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from oncoseg.device import resolve_device
    from oncoseg.tasks import get_task
    from oncoseg.verbs import RunContext, evaluate

    task = get_task(args.task)
    overrides = task_overrides(args.overrides, task, PREDICTION)
    context = RunContext(resolve_device(args.device), _progress(args.progress), CancelToken())
    summary = evaluate(task, args.dataset, args.output, args.model, overrides, context,
                       args.layout, args.overwrite)
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from oncoseg.export import export_file

    result = export_file(args.segmentation, args.output, args.format, args.reference,
                         args.series_uid, args.task, args.overwrite, args.label,
                         args.maximum_fractional_value, args.names, args.seg)
    for message in result.messages:
        print(f"note: {message}")
    if result.segments:
        print(f"{result.format} with {len(result.segments)} segments "
              f"({', '.join(result.segments)}) written to {result.path}")
    else:
        print(f"{result.format} written to {result.path}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from oncoseg.demo import demo, summary_lines
    from oncoseg.device import resolve_device
    from oncoseg.verbs import RunContext

    context = RunContext(resolve_device(args.device), _progress(args.progress), CancelToken())
    result = demo(args.output, context, args.overwrite)
    print("\n".join(summary_lines(result)))
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib

    from oncoseg.frontends import add_module_folders

    if not args.data.is_dir():
        raise InputError(str(args.data), "is not a folder (--data: the data root to review)")
    add_module_folders()
    try:
        app = importlib.import_module("OncoSegWebLib.app")
    except ImportError as error:
        raise InputError("oncoseg serve", f"needs the web extra: pip install -e '.[web]' "
                         f"({error})") from None
    app.serve(args.data, args.host, args.port, args.device)
    return EXIT_OK


COMMANDS = {"serve": _cmd_serve, "tasks": _cmd_tasks, "info": _cmd_info, "predict": _cmd_predict,
            "phantom": _cmd_phantom, "train": _cmd_train, "evaluate": _cmd_evaluate,
            "export": _cmd_export, "demo": _cmd_demo}


def _input_paths(args: argparse.Namespace) -> list[tuple[str, str]]:
    """What a verb reads, as (how the command line names it, path): no output may hold it."""
    found = [(f"--input {spec.split('=', 1)[0]}", spec.split("=", 1)[1])
             for spec in getattr(args, "inputs", None) or [] if "=" in spec]
    for option in ("dataset", "reference", "segmentation"):
        value = getattr(args, option, None)
        if value:
            found.append((f"--{option}" if option != "segmentation" else "the segmentation",
                          str(value)))
    model = getattr(args, "model", None)
    if model and model != "demo":
        found.append(("--model", str(model)))
    return [(what, path) for what, path in found if path]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "output", None):
            from oncoseg.io.atomic import check_output_apart, check_output_place

            check_output_place(args.output, "--output ")
            check_output_apart(args.output, _input_paths(args), "--output ")
        return COMMANDS[args.verb](args)
    except InputError as error:
        print(f"oncoseg: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print("oncoseg: cancelled; no output was kept", file=sys.stderr)
        return EXIT_FAILURE
    except OncoSegError as error:
        print(f"oncoseg: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        if args.debug:
            raise
        print(f"oncoseg: unexpected error: {type(error).__name__}: {error} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def console_main() -> None:
    """The ``oncoseg`` console script (and ``python -m oncoseg``): :func:`main`, then a quick
    exit.

    Tearing the interpreter down after a prediction took 1.6 s on two cores (issue 25): torch's
    and itk's modules and up to a gigabyte of objects finalised one by one, for nothing a user
    needs. By the time ``main`` returns every output is complete (files and folders are written
    atomically, ``oncoseg.io.atomic``) and the command's temporary folders are gone (context
    managers closed on the way out). What is left to do is done here, in order: the exit
    functions registered with ``atexit`` (e.g. ending a child process still running,
    ``oncoseg.childprocess``), logging's handlers flushed and closed, stdout and stderr flushed;
    then ``os._exit``. Tests call :func:`main` in-process and keep the ordinary exit.
    """
    code = main()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (oncoseg ... | head) is no error
            stream.flush()
    os._exit(code)
