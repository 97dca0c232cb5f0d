"""The Qt layer without Qt: every .ui file parses, and every widget name a module's code uses
(``self.ui.<name>``) exists in its .ui file, with the class the code expects of a few."""

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
