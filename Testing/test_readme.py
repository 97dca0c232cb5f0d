"""Every command in README.md, run as written (issue 24, point 3), so that the README cannot
drift from the code again.

Each ```bash / ```sh / ```console block of the README is one test, run in a fresh folder of its
own, one command at a time through ``bash`` with the installed ``oncoseg`` first on PATH (and
linked as ``.venv/bin/oncoseg`` for the commands that say so), each within what is left of the
block's time limit. Where a command names the reader's own data (``T2.nii.gz``,
``DICOM_COHORT/``, a trained ``run/model.safetensors``) a phantom or the task's demo model
stands in for it under that name (:data:`PLACEHOLDERS`); the command itself is not changed.

What is not run, and why (:func:`kind_of`):

- installs (pip, apt-get, venv): checked for their syntax (``bash -n``) and for what they name
  (the constraints file, the extras of pyproject.toml), not run;
- ``python -m pytest``: this suite itself;
- ``oncoseg serve``: a server that runs until stopped (Testing/web/test_browser_review.py
  starts one); GPU commands (``--device cuda``, ``torchrun`` over several GPUs or nodes); and
  trainings at paper scale (every task's defaults but the rectal one's need a GPU for hours to
  days, docs/FIDELITY.md): their options are parsed by the command's own parser, ``--set``
  keys checked against the task and the verb's phase, the data they read present;
- slow commands (the rectal training; the brain prediction and evaluations; the staging
  evaluation: :data:`SLOW_COMMANDS`) run with ``--run-slow`` only, and are checked like the
  previous group otherwise. A block can be marked slow as a whole with
  ``<!-- slow -->`` on the line before it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LANGUAGES = {"bash", "sh", "console"}
BLOCK_LIMIT_S = 300  # a default block, all its commands together
SLOW_BLOCK_LIMIT_S = 3600  # with --run-slow

INSTALL, SUITE, PARSED, SLOW, RUN = "install", "suite", "parsed", "slow", "run"


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marks: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced shell blocks, each with the marks of an HTML comment on the line before it
    (``<!-- slow -->``)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(k for k in range(index + 1, len(lines)) if lines[k].startswith("```"))
        if fence.group(1) in LANGUAGES:
            before = next((lines[k] for k in range(index - 1, -1, -1) if lines[k].strip()), "")
            marks = set(re.findall(r"[\w-]+", before[4:-3])) if before.startswith(
                "<!--") and before.rstrip().endswith("-->") else set()
            blocks.append(Block(index + 1, fence.group(1), "\n".join(lines[index + 1:end]),
                                marks))
        index = end + 1
    return blocks


def block_commands(block: Block) -> list[str]:
    """The commands of a block: continuation lines joined, comment-only lines dropped, each
    line split at ``&&`` outside quotes and braces (a ``console`` block: the ``$`` lines)."""
    lines = block.text.splitlines()
    if block.language == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    logical, current = [], ""
    for line in lines:
        current += line[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(current)
            current = ""
    commands = []
    for line in logical:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        commands += split_and(line)
    return commands


def split_and(line: str) -> list[str]:
    """``a && b`` -> [a, b], leaving ``&&`` inside quotes, braces and $( ) alone."""
    parts, depth, quote, start, k = [], 0, "", 0, 0
    while k < len(line):
        char = line[k]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "{(":
            depth += 1
        elif char in "})":
            depth -= 1
        elif line.startswith("&&", k) and depth == 0:
            parts.append(line[start:k].strip())
            start = k + 2
            k += 1
        k += 1
    parts.append(line[start:].strip())
    return [p for p in parts if p]


def words(command: str) -> list[str]:
    """The command's words, its trailing comment dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return list(lexer)


def oncoseg_arguments(command: str) -> list[str] | None:
    """What follows ``oncoseg`` (or ``-m oncoseg``) in the command, or None."""
    tokens = words(command)
    for index, token in enumerate(tokens):
        if Path(token).name == "oncoseg" and (index == 0 or tokens[index - 1] == "-m"
                                              or token.endswith("bin/oncoseg")):
            return tokens[index + 1:]
    return None


def kind_of(command: str, block: Block) -> tuple[str, str]:
    """(what is done with the command, why)."""
    tokens = words(command)
    text = " ".join(tokens)
    if re.search(r"\bpip3? install\b|\bapt-get\b|-m venv\b|^command -v\b", text):
        return INSTALL, "installs: its syntax and what it names are checked"
    if re.search(r"-m pytest\b", text):
        return SUITE, "this test suite itself"
    args = oncoseg_arguments(command) or []
    verb, task = [*args, "", ""][:2]
    if verb == "serve":
        return PARSED, "a server that runs until stopped (Testing/web/test_browser_review.py)"
    if (tokens and tokens[0] == "torchrun") or "cuda" in args:
        return PARSED, "GPUs or several machines"
    if verb == "train" and task in GPU_SCALE_TRAININGS:
        return PARSED, f"a training at paper scale: {GPU_SCALE_TRAININGS[task]}"
    if "slow" in block.marks:
        return SLOW, "a block marked slow"
    if verb == "train":
        return SLOW, "a training"
    reason = SLOW_COMMANDS.get((verb, task))
    if reason:
        return SLOW, reason
    return RUN, ""


# Trainings whose defaults (the papers') need a GPU: docs/FIDELITY.md, "Paper-scale runs".
GPU_SCALE_TRAININGS = {
    "oar-ct": "14-15 days on one H200", "brain": "4-8 h on one H200",
    "oar-mr": "under an hour on one H200 (a 77.8 GFLOP network per slice)",
    "staging": "about 30 min per fold on one H100",
}
# What runs with --run-slow only, besides the rectal training, so that the default part of
# this file stays near 2.5 min (dev-cpu, 2 shared cores, quiet: 16 s for the brain prediction,
# 6-8 s per brain evaluation of one case, 12 s for the staging evaluation of 4 phantoms; three
# to ten times that when the cores are shared).
SLOW_COMMANDS = {
    ("predict", "brain"): "the brain pipeline: 16 s a case on two quiet cores",
    ("evaluate", "brain"): "the brain pipeline: 6-8 s a case on two quiet cores",
    ("evaluate", "staging"): "N4 and the network on every case: about 3 s a case",
}


# ---------------------------------------------------------------- the reader's data, stood in


def _phantom(task: str, cases: int = 1, seed: int = 4242, **options) -> Callable:
    def make(target: Path, _task: str) -> None:
        from oncoseg import verbs

        verbs.phantom(task, target, cases=cases, seed=seed, **options)
    return make


def _rectal_file(role: str) -> Callable:
    def make(target: Path, _task: str) -> None:
        case = _cached_case("rectal")
        shutil.copy(case / f"{role}.nii.gz", target)
    return make


def _brain_file(suffix: str) -> Callable:
    def make(target: Path, _task: str) -> None:
        case = _cached_case("brain")
        shutil.copy(next(case.glob(f"*_{suffix}.nii.gz")), target)
    return make


def _t2(target: Path, task: str) -> None:
    (_brain_file("t2") if task == "brain" else _rectal_file("t2w"))(target, task)


_CASES: dict[str, Path] = {}


def _cached_case(task: str) -> Path:
    """One phantom case per task for the whole module (the reader's own files stand on it)."""
    if task not in _CASES:
        from oncoseg import verbs

        folder = Path(os.environ["ONCOSEG_README_CASES"]) / task
        [_CASES[task]] = verbs.phantom(task, folder, cases=1, seed=4242)
    return _CASES[task]


def _diffusion(kind: str) -> Callable:
    """The rectal phantom's DWI as the scanner or a converter stores it (Testing/helpers)."""
    def make(target: Path, _task: str) -> None:
        import SimpleITK as sitk
        from dwi_series import write_4d_nifti, write_dwi_series, write_dwmri_nrrd

        case = _cached_case("rectal")
        b0, b1000 = (sitk.ReadImage(str(case / f"{r}.nii.gz")) for r in ("dwi_b0", "dwi_b1000"))
        volumes = [(0.0, None, b0), (1000.0, None, b1000)]
        if kind == "series":
            write_dwi_series(volumes, target, "siemens")
        elif kind == "nifti":
            write_4d_nifti(volumes, target)
        else:
            write_dwmri_nrrd(volumes, target)
    return make


def _t2_series(target: Path, _task: str) -> None:
    import SimpleITK as sitk
    from dwi_series import write_dwi_series

    write_dwi_series([(0.0, None, sitk.ReadImage(str(_cached_case("rectal") / "t2w.nii.gz")))],
                     target)


def _t2_nrrd(target: Path, _task: str) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(_cached_case("rectal") / "t2w.nii.gz")), str(target))


def _demo_model(target: Path, task: str) -> None:
    """A trained model of the command's task: its bundled demo model."""
    import oncoseg

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(oncoseg.__file__).parent / "data" / "models" / f"{task}-demo.safetensors",
                target)


PLACEHOLDERS: dict[str, Callable[[Path, str], None]] = {
    "T2.nii.gz": _t2, "B0.nii.gz": _rectal_file("dwi_b0"),
    "B1000.nii.gz": _rectal_file("dwi_b1000"),
    "data/rectal": _phantom("rectal", 2), "data/test": _phantom("rectal", 1, seed=4343),
    "T2_TSE/": _t2_series, "EP2D_DIFF/": _diffusion("series"), "t2.nii.gz": _rectal_file("t2w"),
    "dwi.nii.gz": _diffusion("nifti"), "t2.nrrd": _t2_nrrd, "dwi.nrrd": _diffusion("nrrd"),
    "CT_SERIES_FOLDER/": lambda target, task: shutil.copytree(
        _cached_case("oar-ct"), target),
    "DICOM_COHORT/": _phantom("oar-ct", 1), "UW_MADISON_FOLDER/": _phantom("oar-mr", 1),
    "STAGING_FOLDER/": _phantom("staging", 4), "BRATS_FOLDER/": _phantom("brain", 1),
    "T1.nii.gz": _brain_file("t1"), "T1C.nii.gz": _brain_file("t1ce"),
    "FLAIR.nii.gz": _brain_file("flair"),
    "run/model.safetensors": _demo_model,
}


def named_paths(command: str) -> list[str]:
    """Every word of the command that may be a path it reads (a ROLE=PATH's path)."""
    names, tokens = [], words(command)
    for index, token in enumerate(tokens):
        if index and tokens[index - 1] == "--output":
            continue  # what the command writes is never stood in for
        names.append(token.split("=", 1)[1] if re.match(r"^[a-z_0-9]+=", token) else token)
    return names


def provide_placeholders(command: str, folder: Path) -> list[str]:
    """The reader's data the command names, stood in for where missing; returns their names."""
    args = oncoseg_arguments(command) or []
    task = args[1] if len(args) > 1 else ""
    made = []
    for name in named_paths(command):
        maker = PLACEHOLDERS.get(name) or PLACEHOLDERS.get(name.rstrip("/") + "/")
        if maker is not None and not (folder / name).exists():
            maker(folder / name.rstrip("/"), task)
            made.append(name)
    return made


# ---------------------------------------------------------------- checks without running


def check_install(command: str) -> None:
    """Syntax, and that the constraints file and the extras it names exist."""
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    tokens = words(command)
    from importlib.metadata import metadata

    extras = set(metadata("oncoseg").get_all("Provides-Extra") or [])  # pyproject's extras
    for index, token in enumerate(tokens):
        if token == "-c":
            assert (ROOT / tokens[index + 1]).is_file(), tokens[index + 1]
        if token == "-e":
            target = tokens[index + 1]
            match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
            assert match, f"installs {target}, not this checkout"
            for extra in filter(None, (match.group(1) or "").split(",")):
                assert extra in extras, f"extra [{extra}] is not in pyproject.toml"


def check_parsed(command: str, folder: Path) -> None:
    """The command's options as its parser reads them, its ``--set`` keys against the task
    and the phase, and the data it reads present."""
    from oncoseg.cli import build_parser, task_overrides
    from oncoseg.settings import PREDICTION, TRAINING
    from oncoseg.tasks import get_task

    args = oncoseg_arguments(command)
    assert args is not None, f"not an oncoseg command: {command}"
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as error:
        pytest.fail(f"{command}: the parser refuses it (exit {error.code})")
    if getattr(parsed, "overrides", None):
        phase = TRAINING if parsed.verb == "train" else PREDICTION
        task_overrides(parsed.overrides, get_task(parsed.task), phase)
    if "torchrun" in command or "cuda" in args:
        return  # the data of a GPU cluster is not stood in for
    for option in ("dataset", "data"):
        path = getattr(parsed, option, None)
        if path is not None:
            assert (folder / path).exists(), f"{command}: {path} does not exist"


# ---------------------------------------------------------------- what the README says


def check_demo_paragraph(folder: Path) -> None:
    """What the README says `oncoseg demo` wrote is there: every file the paragraph after the
    first two commands names, and result.json's inputs."""
    import json

    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("Command 1 writes"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    output = folder / "oncoseg-demo"
    named = [n for n in re.findall(r"`([\w/.-]+)`", paragraph) if re.search(r"\.\w+$", n)]
    assert {"overview.png", "result.json", "t2w.nii.gz"} <= {Path(n).name for n in named}
    for name in named:
        assert (output / name).is_file() or (output / "input" / name).is_file(), name
    inputs = json.loads((output / "result.json").read_text())["inputs"]
    assert all((output / path).is_file() for path in inputs.values()), inputs


# checks after a command ran, by its words
AFTER: dict[str, tuple[Callable[[Path], None], ...]] = {
    ".venv/bin/oncoseg demo": (check_demo_paragraph,),
}


# ---------------------------------------------------------------- the test


def oncoseg_script() -> Path:
    """The installed ``oncoseg`` command of the Python running the tests."""
    beside = Path(sys.executable).parent / "oncoseg"
    found = beside if beside.is_file() else shutil.which("oncoseg")
    assert found, "the oncoseg command is not installed (pip install -e .)"
    return Path(found)


def shell_environment(folder: Path) -> dict[str, str]:
    venv_bin = oncoseg_script().parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # as a reader's shell: the installed package only
    return env


@pytest.fixture(scope="module")
def cases_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme-cases")
    os.environ["ONCOSEG_README_CASES"] = str(folder)
    _CASES.clear()
    yield folder
    os.environ.pop("ONCOSEG_README_CASES", None)


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: b.name)
def test_readme_block_runs_as_written(block, cases_folder, tmp_path, request):
    run_slow = request.config.getoption("--run-slow")
    if "slow" in block.marks and not run_slow:
        pytest.skip("a slow block: opt in with --run-slow")
    folder = tmp_path / "work"
    folder.mkdir()
    # `.venv/bin/oncoseg`, as the install commands (checked, not run) would have made it
    (folder / ".venv" / "bin").mkdir(parents=True)
    (folder / ".venv" / "bin" / "oncoseg").symlink_to(oncoseg_script())
    deadline = time.monotonic() + (SLOW_BLOCK_LIMIT_S if run_slow else BLOCK_LIMIT_S)
    env = shell_environment(folder)
    commands = block_commands(block)
    assert commands, f"{block.name}: no command"
    for command in commands:
        kind, _ = kind_of(command, block)
        if kind == INSTALL:
            check_install(command)
            continue
        if kind == SUITE:
            continue
        provide_placeholders(command, folder)
        if kind == PARSED or (kind == SLOW and not run_slow):
            check_parsed(command, folder)
            continue
        left = deadline - time.monotonic()
        assert left > 0, f"{block.name}: over its time limit before `{command}`"
        started = time.monotonic()
        try:
            result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command],
                                    cwd=folder, env=env, capture_output=True, text=True,
                                    timeout=left)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.name}: `{command}` ran past the block's time limit")
        assert result.returncode == 0, (
            f"{block.name}: `{command}` exited {result.returncode}\n{result.stdout[-2000:]}"
            f"\n{result.stderr[-4000:]}")
        print(f"{time.monotonic() - started:6.1f} s  {command}")  # shown with -s
        for check in AFTER.get(" ".join(words(command)), ()):
            check(folder)


def test_the_commands_are_found_and_sorted():
    """The extraction itself: the blocks the README holds, their commands, and what is done
    with each (so that a block that stopped being seen, or a command that stopped running, is
    noticed)."""
    blocks = readme_blocks()
    assert len(blocks) >= 12
    kinds = [kind_of(c, b)[0] for b in blocks for c in block_commands(b)]
    assert kinds.count(RUN) >= 20 and kinds.count(INSTALL) >= 3 and SUITE in kinds
    sample = Block(1, "bash", "# a comment\noncoseg phantom rectal \\\n    --output x  # why\n"
                   "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/oncoseg "
                   "demo\n{ a && b; }")
    assert block_commands(sample) == [
        "oncoseg phantom rectal      --output x  # why", "python3 -m venv .venv",
        ".venv/bin/pip install -e .", ".venv/bin/oncoseg demo", "{ a && b; }"]
    assert [kind_of(c, sample)[0] for c in block_commands(sample)[:4]] == [
        RUN, INSTALL, INSTALL, RUN]
    assert oncoseg_arguments(".venv/bin/oncoseg demo") == ["demo"]
    assert oncoseg_arguments("torchrun --standalone -m oncoseg train x") == ["train", "x"]
    marked = readme_blocks("<!-- slow -->\n```bash\noncoseg tasks\n```\n```python\nx\n```\n")
    assert [(b.marks, b.text) for b in marked] == [({"slow"}, "oncoseg tasks")]


def test_the_staging_example_boxes_the_phantoms_own_roi(tmp_path):
    """The staging example's --roi is staging_000's own box (it was 40 mm off once and made a
    T2 phantom T3): the numbers in README are the phantom's roi_lps_mm, which predict reads in
    LPS mm."""
    import json

    from oncoseg import verbs

    [command] = [c for b in readme_blocks() for c in block_commands(b)
                 if "predict staging" in c and "--roi" in c]
    roi = re.search(r"--roi[= ]([-\d.,]+)", command).group(1)
    [case] = verbs.phantom("staging", tmp_path / "staging-data", cases=1)
    assert case.name == "staging_000" and "staging-data/staging_000/" in command
    recorded = json.loads((case / "case.json").read_text())["roi_lps_mm"]
    assert [float(v) for v in roi.split(",")] == pytest.approx(recorded, abs=0.01)


def test_the_synopsis_offers_only_options_each_verb_has():
    """The README's command synopsis (a plain block, not run): every --option listed under a
    verb is one that verb's parser accepts (``--seed-point`` once stood under ``train``)."""
    from oncoseg.cli import build_parser

    text = README.read_text(encoding="utf-8")
    synopsis = text[text.index("## Command line"):]
    synopsis = synopsis[synopsis.index("```\n") + 4:]
    synopsis = synopsis[:synopsis.index("```")]
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # argparse's own map
    verb, problems = None, []
    for line in synopsis.splitlines():
        code = line.split("#")[0]
        start = re.match(r"^oncoseg (\w+)", code)
        if start:
            verb = start.group(1)
        elif re.match(r"^oncoseg --", code):
            verb = None
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", code):
            accepted = parser if verb is None else verbs[verb]
            if option not in accepted._option_string_actions:
                problems.append(f"{verb or 'oncoseg'} {option}")
    assert problems == []


def test_the_oar_mr_exclude_example_names_cases_of_the_phantom_it_follows(tmp_path):
    """The training example's ``--set exclude=`` names a patient and a scan of the phantom the
    block writes (it named Kaggle cases once, refused on that phantom); the check training
    makes before it starts is run here, the training itself with --run-slow only."""
    from oncoseg import verbs
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.oar.mr.config import OarMrConfig
    from oncoseg.oar.mr.training import select_cases

    [block] = [b for b in readme_blocks() if "--set exclude=" in b.text]
    commands = block_commands(block)
    [phantom] = [words(c) for c in commands if "phantom oar-mr" in c]
    [train] = [words(c) for c in commands if "train oar-mr" in c and "exclude=" in c]
    output = phantom[phantom.index("--output") + 1]
    cases = int(phantom[phantom.index("--cases") + 1])
    verbs.phantom("oar-mr", tmp_path / output, cases=cases)
    assert train[train.index("--dataset") + 1].rstrip("/") == output
    exclude = train[train.index("--set") + 1].split("=", 1)[1]
    dataset = read_dataset(tmp_path / output, "auto", roles=["mr"])
    kept, patients = select_cases(dataset, OarMrConfig(exclude=exclude))
    assert len(patients) == len(exclude.split(",")) and kept.cases
    assert not {c.patient for c in kept.cases} & set(patients)
