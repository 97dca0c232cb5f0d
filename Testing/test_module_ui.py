"""The Qt layer without Qt: every .ui file parses, and every widget name a module's code uses
(``self.ui.<name>``) exists in its .ui file, with the class the code expects of a few."""

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_FILES = sorted(ROOT.glob("*/Resources/UI/*.ui"))


def widgets(ui_file: Path) -> dict[str, str]:
    tree = ElementTree.parse(ui_file)
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def test_there_are_ui_files():
    assert UI_FILES, "no module .ui files found"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_ui_parses_and_names_are_unique(ui_file):
    tree = ElementTree.parse(ui_file)
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    assert tree.getroot().findtext("class") == ui_file.stem
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    used = set(widgets(ui_file).values())
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    receivers = {c.findtext("receiver") for c in tree.iter("connection")}
    assert receivers <= set(names)


PANELS = ROOT / "OncoSegCommon/OncoSegCommonLib/panels.py"
# shared panels' .ui files and the code that uses them
SHARED_PANELS = {
    "OncoSegExport": ROOT / "OncoSegCommon/OncoSegCommonLib/export_panel.py",
    "OncoSegDependencies": ROOT / "OncoSegCommon/OncoSegCommonLib/dependency_panel.py",
}


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_every_widget_the_module_uses_exists(ui_file):
    module = SHARED_PANELS.get(ui_file.stem, ui_file.parents[2] / f"{ui_file.stem}.py")
    code = module.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    if "TaskPanel" in code:  # the shared panel code uses its widgets in this .ui too
        used |= set(re.findall(r"self\.ui\.(\w+)", PANELS.read_text(encoding="utf-8")))
    assert used, f"{module.name} uses no widget of its .ui"
    missing = used - set(widgets(ui_file))
    assert not missing, f"{module.name} uses widgets absent from {ui_file.name}: {missing}"
    # slicer.util.childWidgetVariables lists the panel's children, not the panel itself
    assert ui_file.stem not in used, f"self.ui.{ui_file.stem} does not exist in Slicer"


def test_rectalseg_selectors_are_node_combo_boxes():
    found = widgets(ROOT / "RectalSeg/Resources/UI/RectalSeg.ui")
    for name in ("t2wSelector", "b0Selector", "highBSelector", "referenceSelector"):
        assert found[name] == "qMRMLNodeComboBox"


@pytest.mark.parametrize("module", ["RectalSeg", "OARSeg"])
def test_segmentation_modules_have_the_optional_segmentation_widgets(module):
    """The shared panel uses them where they exist; segmentation modules must have them."""
    text = PANELS.read_text(encoding="utf-8")
    names = re.search(r"SEGMENTATION_WIDGETS = \(([^)]*)\)", text).group(1)
    expected = set(re.findall(r'"(\w+)"', names))
    assert expected and expected <= set(widgets(ROOT / f"{module}/Resources/UI/{module}.ui"))


def test_stagingcnn_plots_slice_scores_and_places_an_roi():
    found = widgets(ROOT / "StagingCNN/Resources/UI/StagingCNN.ui")
    assert found["slicePlotWidget"] == "qMRMLPlotWidget"
    assert found["roiSelector"] == "qMRMLNodeComboBox"


# ------------------------------------------------------------------ the classes Slicer looks for
# Slicer finds a scripted module's parts by name in <Name>.py: the module class <Name>, the panel
# <Name>Widget, and <Name>Test, which every scripted module's runTest looks up (registered in
# slicer.selfTests; without the class it raises "Test case class not found":
# Base/Python/slicer/ScriptedLoadableModule.py, v5.10.0 and v5.12.3).

MODULES = re.findall(r"^add_subdirectory\((\w+)\)", (ROOT / "CMakeLists.txt").read_text(
    encoding="utf-8"), re.MULTILINE)


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _base_names(cls: ast.ClassDef) -> list[str]:
    """The last name of each base: ``panels.OncoSegTest`` -> ``OncoSegTest``."""
    return [ast.unparse(base).rsplit(".", 1)[-1] for base in cls.bases]


def _calls(node: ast.AST) -> set[str]:
    return {ast.unparse(call.func).rsplit(".", 1)[-1] for call in ast.walk(node)
            if isinstance(call, ast.Call)}


def _is_hidden(cls: ast.ClassDef) -> bool:
    """``self.parent.hidden = True`` in the module class: Slicer shows no panel for it."""
    return any(isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) ==
               "self.parent.hidden" and ast.unparse(node.value) == "True"
               for node in ast.walk(cls))


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((node for node in cls.body if isinstance(node, ast.FunctionDef)
                 and node.name == name), None)


def _shared_test_runs_the_lib_scenarios() -> bool:
    """panels.OncoSegTest.runTest runs ``<Name>Lib.scenarios.ALL`` through
    run_scenarios_in_app."""
    shared = _classes(ast.parse(PANELS.read_text(encoding="utf-8"))).get("OncoSegTest")
    run_test = _method(shared, "runTest") if shared is not None else None
    return run_test is not None and "run_scenarios_in_app" in _calls(run_test) and \
        "Lib.scenarios" in ast.unparse(run_test)


def test_the_extension_has_modules():
    assert {"OncoSegCommon", "RectalSeg", "OARSeg", "StagingCNN", "BrainTumor2D3D"} <= \
        set(MODULES), MODULES


@pytest.mark.parametrize("name", MODULES)
def test_every_module_file_defines_what_slicer_looks_up(name):
    """<Name> (a ScriptedLoadableModule), <Name>Widget for a module with a panel (not hidden;
    then also its .ui, and CMake's PANEL, which adds Slicer's generic widget tests), and
    <Name>Test running the module's scenarios through run_scenarios_in_app (so the in-app test
    fails on a VTK/MRML error or warning, as the headless tests do)."""
    path = ROOT / name / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = _classes(tree)
    module = classes.get(name)
    assert module is not None, f"{path.name} defines no module class {name}"
    assert set(_base_names(module)) & {"ScriptedLoadableModule", "OncoSegModule"}, \
        _base_names(module)

    panel = not _is_hidden(module)
    widget = classes.get(f"{name}Widget")
    if panel:
        assert widget is not None, f"{name} is shown in the module list but has no {name}Widget"
        assert set(_base_names(widget)) & {"ScriptedLoadableModuleWidget", "TaskPanel"}
        assert (ROOT / name / "Resources/UI" / f"{name}.ui").is_file()
    cmake = (ROOT / name / "CMakeLists.txt").read_text(encoding="utf-8")
    declared = re.search(rf"oncoseg_scripted_module\({name}( PANEL)?\)", cmake)
    assert declared is not None and bool(declared.group(1)) == panel, \
        f"{name}/CMakeLists.txt: PANEL must be given exactly when the module has a panel"

    test = classes.get(f"{name}Test")
    assert test is not None, f"{path.name} defines no {name}Test: Slicer's self-test raises"
    bases = _base_names(test)
    own = _method(test, "runTest")
    if own is not None:
        assert set(bases) & {"ScriptedLoadableModuleTest", "OncoSegTest"}, bases
        assert "run_scenarios_in_app" in _calls(own), f"{name}Test.runTest runs no scenario"
    else:
        assert bases == ["OncoSegTest"], f"{name}Test neither has nor inherits a runTest"
        assert _shared_test_runs_the_lib_scenarios()
        lib = ast.parse((ROOT / name / f"{name}Lib/scenarios.py").read_text(encoding="utf-8"))
        assert any(isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "ALL"
                   for node in lib.body), f"{name}Lib/scenarios.py has no ALL"
    # unittest's loader (slicer.testing.runUnitTest: loadTestsFromName) runs every TestCase
    # class in the module's namespace: only <Name>Test may be there
    others = {n for n in classes if n.endswith("Test")} - {f"{name}Test"}
    imported = {alias.asname or alias.name for node in tree.body
                if isinstance(node, ast.ImportFrom) for alias in node.names
                if (alias.asname or alias.name).endswith("Test")}
    assert not others | imported, f"{path.name} also holds TestCase classes {others | imported}"


SCAN_ROLES = {"t1", "t1c", "t2", "flair", "image", "t2w", "dwi_b0", "dwi_b1000"}
NOT_SCANS = ["vtkMRMLLabelMapVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode",
             "vtkMRMLTensorVolumeNode"]


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_scan_selectors_hide_label_maps_and_multi_component_volumes(ui_file):
    """Each of these node classes derives from vtkMRMLScalarVolumeNode (Slicer v5.10.0
    Libs/MRML/Core), so a selector of scalar volumes offers them unless it hides them
    (qMRMLSortFilterProxyModel rejects a node that IsA a hidden type, subclasses included):
    a label map holds segment numbers, a DWI or vector volume several values per voxel."""
    tree = ElementTree.parse(ui_file)
    for widget in tree.iter("widget"):
        properties = {p.get("name"): p for p in widget.findall("property")}
        role = properties.get("SlicerParameterName")
        if widget.get("class") != "qMRMLNodeComboBox" or role is None or \
                role.findtext("string") not in SCAN_ROLES:
            continue
        hidden = properties.get("hideChildNodeTypes")
        assert hidden is not None, f"{widget.get('name')} offers label maps"
        assert [s.text for s in hidden.iter("string")] == NOT_SCANS, widget.get("name")
