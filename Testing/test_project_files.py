"""The build and lint files agree with the tree: CMake lists every module file, ruff is clean."""

import ast
import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cmake_list(text: str, variable: str, module: str) -> set[str]:
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert block, f"{variable} not found"
    items = block.group(1).split()
    return {item.replace("${MODULE_NAME}", module) for item in items}


def module_folders() -> list[Path]:
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return [ROOT / name for name in re.findall(r"add_subdirectory\((\w+)\)", top)]


def test_every_module_folder_is_built():
    declared = {p.name for p in module_folders()}
    on_disk = {p.parent.name for p in ROOT.glob("*/CMakeLists.txt")}
    assert declared == on_disk
    assert "OncoSegCommon" in declared


def test_cmake_lists_match_the_files_on_disk():
    for folder in module_folders():
        text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
        module = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
        assert module == folder.name
        scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
        python_files = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")
                        if "Testing" not in p.parts and "__pycache__" not in p.parts}
        assert scripts == python_files
        resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
        resource_files = {p.relative_to(folder).as_posix()
                          for p in (folder / "Resources").rglob("*") if p.is_file()} \
            if (folder / "Resources").exists() else set()
        assert resources == resource_files


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
