"""The selectors' first fill: volume nodes for a task's input roles, guessed from node names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oncoseg.tasks import Task


def guess_inputs(scene: Any, task: Task,
                 clash: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """{role: node or None}. The roles with the most specific hints choose first ('b1000'
    before 'b0', 't1ce' before 't1'), and a node goes to one role only; ``clash(name, role)``
    vetoes a match a hint alone would make."""
    volumes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    nodes = [volumes.GetItemAsObject(i) for i in range(volumes.GetNumberOfItems())]
    nodes = [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode")]
    found: dict[str, Any] = {}
    hinted = [r for r in task.inputs if r.name_hints]
    for role in sorted(hinted, key=lambda r: -max(len(h) for h in r.name_hints)):
        for node in nodes:
            name = (node.GetName() or "").lower().replace(" ", "").replace("-", "_")
            if node in found.values() or (clash is not None and clash(name, role.name)):
                continue
            if any(hint in name for hint in role.name_hints):
                found[role.name] = node
                break
    return {role.name: found.get(role.name) for role in task.inputs}
