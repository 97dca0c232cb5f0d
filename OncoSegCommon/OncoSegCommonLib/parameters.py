"""Each module's parameter node: where its panel's settings live, saved with the scene.

The panels wrap it with their ``@parameterNodeWrapper`` class (``<Name>.py``), which binds it to
the widgets named in the .ui by ``SlicerParameterName``. The node itself is made here without Qt,
the way Slicer's ``ScriptedLoadableModuleLogic.getParameterNode`` makes it (read at v5.10.0 and
v5.12.x, Base/Python/slicer/ScriptedLoadableModule.py): one ``vtkMRMLScriptedModuleNode`` per
scene, singleton-tagged with the module's name and carrying a ``ModuleName`` attribute, so a
scene saved by Slicer's own modules' convention is found again when it is loaded. The module
logics are OncoSeg's task logics, not ``ScriptedLoadableModuleLogic``s, hence this function.
"""

from __future__ import annotations

from typing import Any


def parameter_node(scene: Any, module_name: str) -> Any:
    """The module's parameter node in ``scene``: found again (a loaded scene, after File >
    Close Scene) or made."""
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # owned by the Python variable until the scene takes it
        node.SetSingletonTag(module_name)
        node.SetAttribute("ModuleName", module_name)
        node.SetName(scene.GenerateUniqueName(module_name))
        node = scene.AddNode(node)
    elif node.GetAttribute("ModuleName") != module_name:  # Close Scene resets attributes
        node.SetAttribute("ModuleName", module_name)
    return node
