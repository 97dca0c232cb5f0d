"""Run the engine, the modules' logic and every export against one Slicer release's Python
packages.

Slicer embeds its own Python with its own numpy, SciPy, SimpleITK, pydicom, ... (pinned in its
SuperBuild); the extension installs only what ``OncoSegCommon/Resources/requirements.txt``
adds, constrained to those. The main test environment (``constraints.txt``) has the newest of
everything, so it cannot tell that, say, a pydicom-3-only call breaks DICOM export in Slicer 5.10.
This tier builds a virtual environment per release from ``constraints/slicer-<release>.txt``
(Slicer's pins, each read from its SuperBuild file) plus the torch pin of ``constraints.txt``,
installs oncoseg from this working tree with the requirements file and the test tools, checks
that the installed versions are the release's, and runs pytest on the chosen tests.

    python3 Testing/tiers/run_slicer_tier.py 5.10            # the default test selection
    python3 Testing/tiers/run_slicer_tier.py 5.12 -- -k dicom  # extra pytest arguments
    python3 Testing/tiers/run_slicer_tier.py 5.10 --all       # Testing/engine and Testing/mrml
    python3 Testing/tiers/run_slicer_tier.py 5.10 --tests Testing/engine/test_export.py

The environment is kept in ``--cache`` (default ``~/.cache/oncoseg/slicer-tiers``) and rebuilt
only when an input changes (constraints, pyproject.toml, requirements.txt, Python). Standard
library only: it runs with any Python 3.11+. Opt-in: CI does not run it (several minutes of
installs per release).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints"
REQUIREMENTS = ROOT / "OncoSegCommon" / "Resources" / "requirements.txt"
DEFAULT_CACHE = Path.home() / ".cache" / "oncoseg" / "slicer-tiers"
# Where the Slicer-shipped versions matter: DICOM reading and writing (pydicom), every export
# (validated by dciodvfy), volume and segmentation I/O (SimpleITK), a method end to end on
# numpy/SciPy, and every module's logic on slicer-core (sample data included: the Pelvic CT
# sample writes a DICOM series).
DEFAULT_TESTS = (
    "Testing/engine/test_export.py",
    "Testing/engine/test_export_fractional.py",
    "Testing/engine/test_dicomsr.py",
    "Testing/engine/test_structure_names.py",
    "Testing/engine/test_dicom_series.py",
    "Testing/engine/test_diffusion.py",
    "Testing/engine/test_volume_io.py",
    "Testing/engine/test_segnrrd.py",
    "Testing/engine/test_segmentation_labels.py",
    "Testing/engine/test_dicom_seg_labels.py",
    "Testing/engine/test_terminology.py",
    "Testing/engine/test_method_contract.py",
    "Testing/engine/test_oar_ct_pipeline.py",
    "Testing/mrml",
)
ALL_TESTS = ("Testing/engine", "Testing/mrml")
# Slicer's packages that the engine imports: each must be installed at the release's version.
MUST_MATCH = ("numpy", "scipy", "simpleitk", "pydicom", "pillow", "slicer-core")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s#;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def releases() -> list[str]:
    return sorted(p.stem.removeprefix("slicer-") for p in CONSTRAINTS.glob("slicer-*.txt"))


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a constraints file."""
    pins = {}
    for line in path.read_text("utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def torch_pin() -> str:
    """The torch line of the main environment's ``constraints.txt``: the CPU build the
    development and CI machines have (a plain ``torch`` would pull a CUDA build)."""
    for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines():
        match = _PIN.match(line)
        if match and canonical(match.group(1)) == "torch":
            return f"torch=={match.group(2)}"
    raise SystemExit("constraints.txt pins no torch version")


def test_requirements() -> list[str]:
    """The ``test`` extra of pyproject.toml without the review app (``oncoseg[web]``): the
    browser tests are not part of a Slicer tier, and trame-slicer pins its own slicer-core."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    return [r for r in project["optional-dependencies"]["test"]
            if not r.replace(" ", "").startswith("oncoseg[")]


def inputs_digest(release: str, python: str) -> str:
    """What the environment was built from: rebuilt when any of it changes."""
    digest = hashlib.sha256()
    for path in (CONSTRAINTS / f"slicer-{release}.txt", ROOT / "constraints.txt",
                 ROOT / "pyproject.toml", REQUIREMENTS):
        digest.update(path.read_bytes())
    digest.update(python_version(python).encode())
    return digest.hexdigest()


def python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)  # type: ignore[arg-type]


def build(release: str, python: str, venv: Path) -> Path:
    """A fresh virtual environment with the release's packages; returns its Python."""
    if venv.exists():
        shutil.rmtree(venv)
    run([python, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    constraints = CONSTRAINTS / f"slicer-{release}.txt"
    torch = venv / "torch-constraint.txt"
    torch.write_text(torch_pin() + "\n", "utf-8")
    quiet = ["--quiet", "--disable-pip-version-check"]
    run([str(py), "-m", "pip", "install", *quiet, "-c", str(constraints), "pip"])
    # oncoseg's own dependencies, what Slicer ships at the release's versions, what the
    # extension installs inside Slicer (requirements.txt), the test tools, slicer-core
    run([str(py), "-m", "pip", "install", *quiet, "-c", str(constraints), "-c", str(torch),
         "-e", str(ROOT), "-r", str(REQUIREMENTS), *test_requirements(), "slicer-core"],
        cwd=ROOT)
    return py


def installed(py: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m, json; print(json.dumps("
         "{d.metadata['Name']: d.version for d in m.distributions()}))"],
        check=True, capture_output=True, text=True).stdout
    return {canonical(k): v for k, v in json.loads(out).items()}


def check_versions(release: str, py: Path) -> dict[str, str]:
    """Every pinned package that is installed has the release's version, and the ones the
    engine imports are there; returns the installed versions."""
    pins = read_pins(CONSTRAINTS / f"slicer-{release}.txt")
    have = installed(py)
    wrong = [f"{n} {have[n]} (Slicer {release}: {v})" for n, v in pins.items()
             if n in have and have[n] != v]
    missing = [n for n in MUST_MATCH if n not in have]
    if wrong or missing:
        raise SystemExit(f"the tier environment is not Slicer {release}'s: "
                         + "; ".join(wrong + [f"{n} not installed" for n in missing]))
    return have


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to pytest.")
    parser.add_argument("release", choices=releases(), help="Slicer release line")
    parser.add_argument("--python", default=shutil.which("python3.11") or sys.executable,
                        help="interpreter for the environment (default: python3.11)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where environments are kept (default {DEFAULT_CACHE})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the environment")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--all", action="store_true",
                           help="run Testing/engine and Testing/mrml instead of the default set")
    selection.add_argument("--tests", nargs="+", metavar="PATH",
                           help="run these test files or folders instead of the default set")
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

    start = time.monotonic()
    version = python_version(args.python)
    venv = args.cache / f"slicer-{args.release}-py{'.'.join(version.split('.')[:2])}"
    stamp = venv / "oncoseg-tier-inputs"
    digest = inputs_digest(args.release, args.python)
    py = venv / "bin" / "python"
    if args.rebuild or not stamp.is_file() or stamp.read_text("utf-8") != digest:
        py = build(args.release, args.python, venv)
        stamp.write_text(digest, "utf-8")
    have = check_versions(args.release, py)
    installed_s = time.monotonic() - start
    shown = ("numpy", "scipy", "simpleitk", "pydicom", "pillow", "highdicom", "vtk",
             "slicer-core", "torch", "itk-elastix", "scikit-image")
    print(f"Slicer {args.release} tier, Python {version}: "
          + ", ".join(f"{n} {have[n]}" for n in shown if n in have), flush=True)
    tests = args.tests or list(ALL_TESTS if args.all else DEFAULT_TESTS)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([str(py), "-m", "pytest", "-p", "no:cacheprovider", *tests,
                             *pytest_args], cwd=ROOT, env=env)
    total = time.monotonic() - start
    print(f"Slicer {args.release} tier: pytest exit {result.returncode}; "
          f"environment {installed_s:.0f} s, total {total:.0f} s wall", flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
