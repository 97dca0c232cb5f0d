"""Each module's settings live in its parameter node, saved with the scene and restored.

The wrappers (``@parameterNodeWrapper`` in ``<Name>.py``) need the application's Qt, so they are
checked statically here against what Slicer's parameterNodeWrapper accepts, read at v5.10.0 and
v5.12.x: the serializers (Base/Python/slicer/parameterNodeWrapper/serializers.py:
NumberSerializer int/float, StringSerializer, BoolSerializer, NodeSerializer for vtkMRMLNode
subclasses; a number is stored as ``str(value)``, a bool as "True"/"False", a node as an empty
parameter plus a node reference of the same name) and the widget connectors
(guiConnectors.py: QCheckBox <-> bool, QSpinBox <-> int, QDoubleSpinBox / ctkSliderWidget <->
float, QComboBox <-> str, qMRMLNodeComboBox <-> a node class). The node itself is made without
Qt (OncoSegCommonLib/parameters.py) and tested on slicer-core: found again after Close Scene and
in a saved and reloaded scene, with what the wrapper wrote.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from oncoseg.tasks import get_task
from OncoSegCommonLib.context import MRMLContext
from OncoSegCommonLib.parameters import parameter_node

ROOT = Path(__file__).resolve().parents[2]
MODULES = {  # module -> (its task, its Lib parameters dataclass)
    "RectalSeg": ("rectal", "RectalSegLib.logic:RectalSegParameters"),
    "OARSeg": ("oar-ct", "OARSegLib.logic:OARSegParameters"),
    "StagingCNN": ("staging", "StagingCNNLib.logic:StagingParameters"),
    "BrainTumor2D3D": ("brain", "BrainTumor2D3DLib.logic:BrainParameters"),
}
SERIALIZABLE = {"int", "float", "str", "bool"}  # and vtkMRML...Node
CONNECTORS = {  # widget class -> the field types guiConnectors.py binds it to
    "QCheckBox": {"bool"}, "QSpinBox": {"int"}, "QDoubleSpinBox": {"float", "int"},
    "ctkSliderWidget": {"float", "int"}, "QComboBox": {"str", "int", "float"},
}
FIELDS_WITHOUT_WIDGET = {"model"}  # set by the panel from the model selector's data


def class_fields(cls: ast.ClassDef) -> dict[str, tuple[str, object]]:
    """name -> (base type, default) of a class's annotated fields."""
    found = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            annotation = item.annotation
            if isinstance(annotation, ast.Subscript):  # Annotated[float, WithinRange(...)]
                assert ast.unparse(annotation.value) == "Annotated"
                annotation = annotation.slice.elts[0]
            default = ast.literal_eval(item.value) if item.value is not None else None
            found[item.target.id] = (ast.unparse(annotation), default)
    return found


def classes_of(path: Path) -> list[ast.ClassDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node for node in tree.body if isinstance(node, ast.ClassDef)]


def wrapper_fields(module: str) -> dict[str, tuple[str, object]]:
    """The fields of the module file's @parameterNodeWrapper class, its base's included (the
    wrapper reads them with typing.get_type_hints, which follows the bases)."""
    wrapped = [c for c in classes_of(ROOT / module / f"{module}.py") if any(
        isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in c.decorator_list)]
    assert len(wrapped) == 1, f"{module}.py: one @parameterNodeWrapper class expected"
    cls = wrapped[0]
    assert cls.name == f"{module}ParameterNode"
    assert [ast.unparse(b) for b in cls.bases] == ["panels.PanelSettings"]
    base, = (c for c in classes_of(ROOT / "OncoSegCommon/OncoSegCommonLib/panels.py")
             if c.name == "PanelSettings")
    return {**class_fields(base), **class_fields(cls)}


def bound_widgets(module: str) -> dict[str, str]:
    """parameter name -> widget class, from the .ui's SlicerParameterName properties."""
    tree = ElementTree.parse(ROOT / module / "Resources/UI" / f"{module}.ui")
    bound = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    return bound


@pytest.mark.parametrize("module", MODULES)
def test_every_setting_is_a_type_slicer_saves_and_a_widget_shows(module):
    fields = wrapper_fields(module)
    for name, (kind, _) in fields.items():
        assert kind in SERIALIZABLE or (kind.startswith("vtkMRML") and kind.endswith("Node")), \
            f"{module}ParameterNode.{name}: {kind} has no serializer in Slicer"
    widgets = bound_widgets(module)
    assert set(widgets) == set(fields) - FIELDS_WITHOUT_WIDGET, \
        f"{module}.ui binds {sorted(widgets)}, the wrapper declares {sorted(fields)}"
    for name, widget in widgets.items():
        kind = fields[name][0]
        ok = kind.startswith("vtkMRML") if widget == "qMRMLNodeComboBox" else \
            kind in CONNECTORS.get(widget, ())
        assert ok, f"{module}.ui: no connector binds a {widget} to {name}: {kind}"


@pytest.mark.parametrize("module", MODULES)
def test_saved_defaults_are_the_logics_defaults(module):
    """connectGui writes the parameter node's values into the widgets, so the wrapper's
    defaults are what a new panel shows: they must be what the logic runs by default."""
    path, name = MODULES[module][1].split(":")
    defaults = {f.name: f.default for f in dataclasses.fields(getattr(
        importlib.import_module(path), name))}
    fields = wrapper_fields(module)
    shared = {n for n in fields if n in defaults and defaults[n] is not None}
    assert {"model", "device"} <= shared
    for field in shared:
        assert fields[field][1] == defaults[field], f"{module}: {field}"
    if module == "StagingCNN":  # 0 stands for the model's threshold; tta for the engine's
        engine = get_task("staging").settings()
        assert fields["tta"][1] == engine.tta and fields["threshold"][1] == 0.0


@pytest.mark.parametrize("module", ["RectalSeg", "StagingCNN", "BrainTumor2D3D"])
def test_input_settings_are_named_after_the_task_roles(module):
    """The panel fills empty selectors from the logic's guesses by role name."""
    task = get_task(MODULES[module][0])
    nodes = {n for n, (kind, _) in wrapper_fields(module).items() if kind.startswith("vtkMRML")}
    roles = {role.name for role in task.inputs} | {"roi"}  # staging's box hint
    assert nodes <= roles, nodes - roles


def test_the_parameter_node_is_found_again_and_travels_with_the_scene(tmp_path):
    context = MRMLContext.headless()
    scene = context.scene
    node = parameter_node(scene, "RectalSeg")
    assert parameter_node(scene, "RectalSeg") is node, "a second parameter node was made"
    assert parameter_node(scene, "StagingCNN") is not node
    assert node.GetAttribute("ModuleName") == "RectalSeg"
    t2w = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2w")
    # what the wrapper writes (serializers.py): numbers as str(value), bools as True/False,
    # a node as an empty parameter plus a node reference of the same name
    node.SetParameter("threshold", str(0.65))
    node.SetParameter("registration", "False")
    node.SetParameter("t2w", "")
    node.SetNodeReferenceID("t2w", t2w.GetID())
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    scene.Clear(0)  # File > Close Scene: the singleton stays, its values and attribute go
    assert parameter_node(scene, "RectalSeg").GetAttribute("ModuleName") == "RectalSeg"

    loaded = MRMLContext.headless().scene
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Connect()
    again = parameter_node(loaded, "RectalSeg")
    assert loaded.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 2
    assert float(again.GetParameter("threshold")) == 0.65
    assert again.GetParameter("registration") == "False"
    assert again.GetNodeReference("t2w").GetName() == "T2w"
