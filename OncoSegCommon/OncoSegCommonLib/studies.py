"""Results go where the reader looks for them: in the input's study.

A volume loaded from DICOM sits under its patient and study in the subject hierarchy; nodes a
module adds land at the scene's top level unless placed, so a segmentation made from a study would
sit apart from it in the Data module and be left out when the study is exported or closed. The
API used (``vtkMRMLSubjectHierarchyNode``: ``GetSubjectHierarchyNode``, ``GetItemByDataNode``,
``GetItemParent``, ``SetItemParent``, ``CreateItem``, ``GetInvalidItemID``) was read at v5.10.0
and v5.12.3 in Libs/MRML/Core/vtkMRMLSubjectHierarchyNode.h.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import slicer


def place_beside(scene: Any, nodes: Iterable[Any], reference: Any) -> None:
    """Put each node's subject-hierarchy item under ``reference``'s parent (its study when it
    came from DICOM, the scene otherwise)."""
    if reference is None:
        return
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    invalid = hierarchy.GetInvalidItemID()
    reference_item = hierarchy.GetItemByDataNode(reference)
    if reference_item == invalid:
        return
    parent = hierarchy.GetItemParent(reference_item)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item == invalid:  # the application's subject hierarchy plugins add one; headless
            if not node.GetHideFromEditors():  # scenes (slicer-core) have none
                hierarchy.CreateItem(parent, node)
        elif item != reference_item and hierarchy.GetItemParent(item) != parent:
            hierarchy.SetItemParent(item, parent)
