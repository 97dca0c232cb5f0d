"""The build and lint files agree with the tree: CMake lists every module file, ruff is clean."""

import ast
import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
