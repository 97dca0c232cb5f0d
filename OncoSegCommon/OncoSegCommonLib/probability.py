"""Probability maps as coloured, semi-transparent overlays in the slice views.

The colour table is made here rather than taken from Slicer's colour files, so the overlay looks
the same in the application and headless. Voxels below a small threshold are transparent: the
reader sees the anatomy except where the model sees something.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from OncoSegCommonLib.volumes import update_volume_node, volume_node_from_image

COLOR_TABLE_NAME = "OncoSeg probability"
# A perceptually ordered dark-purple -> orange -> yellow ramp (after matplotlib's 'inferno').
_RAMP = np.array([
    [0.00, 0.001, 0.000, 0.014], [0.15, 0.122, 0.047, 0.283], [0.30, 0.341, 0.062, 0.429],
    [0.45, 0.550, 0.161, 0.405], [0.60, 0.736, 0.216, 0.330], [0.75, 0.906, 0.365, 0.186],
    [0.90, 0.985, 0.621, 0.033], [1.00, 0.988, 0.998, 0.645],
])


def probability_color_table(scene: Any) -> Any:
    """The scene's 256-entry probability colour table (made once, then reused).

    Each entry is named and marked defined by ``SetColor(index, name, r, g, b, a)`` itself
    (vtkMRMLColorTableNode::SetColor -> vtkMRMLColorNode::SetColorName, Libs/MRML/Core at
    v5.10.0 and v5.12.3). ``SetNamesInitialised`` is not called: since Slicer 5.10 it does
    nothing but log an error (vtkMRMLColorNode.h: "deprecated and has no effect. Use
    SetColorName() and SetColorDefined() methods instead").
    """
    existing = scene.GetFirstNodeByName(COLOR_TABLE_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    positions = np.linspace(0.0, 1.0, 256)
    rgb = [np.interp(positions, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)]
    for index in range(256):
        table.SetColor(index, f"p{index / 255:.2f}", rgb[0][index], rgb[1][index],
                       rgb[2][index], 1.0)
    return table


def show_probability_map(
    scene: Any, probability: sitk.Image, name: str, background_volume_node: Any | None = None,
    opacity: float = 0.5, hide_below: float = 0.05, node: Any | None = None,
) -> Any:
    """A scalar volume node shown as foreground of every slice view; returns the node.

    ``node`` lets a module refresh the overlay it created before instead of adding another.
    """
    image = sitk.Cast(probability, sitk.sitkFloat32)
    if node is None:
        node = volume_node_from_image(scene, image, name)
    else:
        update_volume_node(node, image)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(probability_color_table(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1.0, 0.5)
    display.AutoThresholdOff()
    display.SetThreshold(hide_below, 1.0)
    display.ApplyThresholdOn()
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if background_volume_node is not None:
            composite.SetBackgroundVolumeID(background_volume_node.GetID())
        composite.SetForegroundVolumeID(node.GetID())
        composite.SetForegroundOpacity(opacity)
    return node


def set_overlay_opacity(scene: Any, opacity: float) -> None:
    """The opacity slider: every slice view's foreground layer."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composites.GetItemAsObject(index).SetForegroundOpacity(float(np.clip(opacity, 0.0, 1.0)))
