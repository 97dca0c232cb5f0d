"""The MRML scene and the module logics OncoSeg uses, in the app or headless.

In the Slicer application everything exists already (:meth:`MRMLContext.from_application`).
On the ``slicer-core`` wheel there is no application: :meth:`MRMLContext.headless` builds a scene,
an application logic and the logics, in the order Slicer requires (each logic gets the
application logic before the scene).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import slicer

_HEADLESS_LOGICS = (
    ("Colors", "vtkSlicerColorLogic"),
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
)


@dataclass
class MRMLContext:
    scene: Any  # vtkMRMLScene
    application_logic: Any  # vtkSlicerApplicationLogic
    logics: dict[str, Any] = field(default_factory=dict)
    database: Any = None  # ctkDICOMDatabase: where a volume loaded from DICOM finds its files

    @classmethod
    def from_application(cls) -> MRMLContext:
        app_logic = slicer.app.applicationLogic()
        logics = {name: app_logic.GetModuleLogic(name) for name, _ in _HEADLESS_LOGICS}
        return cls(slicer.mrmlScene, app_logic, logics, getattr(slicer, "dicomDatabase", None))

    @classmethod
    def headless(cls) -> MRMLContext:
        scene = slicer.vtkMRMLScene()
        app_logic = slicer.vtkSlicerApplicationLogic()
        app_logic.SetMRMLScene(scene)
        logics = {}
        for name, class_name in _HEADLESS_LOGICS:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
            app_logic.SetModuleLogic(name, logic)
            logics[name] = logic
        return cls(scene, app_logic, logics)

    def node_names(self) -> list[tuple[str, str]]:
        """(class, name) of every node: what tests compare to prove a scene is unchanged."""
        nodes = []
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            nodes.append((node.GetClassName(), node.GetName() or ""))
        return nodes
