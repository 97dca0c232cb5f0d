"""Comparing a segmentation with a reference segmentation in the scene: the compare panel.

Both are exported on the same reference volume's grid through Slicer's own segmentation
logic, so the figures are those of what the reader sees; a probability map, if given, adds the
voxelwise ROC AUC.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import resample_to_reference
from oncoseg.metrics import dice, roc_auc, surface_figures
from OncoSegCommonLib.segmentations import segment_mask
from OncoSegCommonLib.volumes import image_from_volume_node


def _mask(node: Any, reference_volume: Any, segment_id: str | None) -> np.ndarray:
    """The segment alone (until 2026-12-07 read from a label map of every segment, where a
    later segment overlapping it, a reader's 'whole tumour' over the core, took its voxels:
    the core compared at Dice 0)."""
    segmentation = node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        raise InputError(f"segmentation '{node.GetName()}'", "has no segment to compare")
    if segment_id is not None and segmentation.GetSegment(segment_id) is None:
        raise InputError(f"segmentation '{node.GetName()}'", f"has no segment {segment_id}")
    return segment_mask(node, reference_volume, segment_id)


def compare_segmentations(node: Any, reference: Any, reference_volume: Any,
                          probability_node: Any | None = None, segment_id: str | None = None,
                          reference_segment_id: str | None = None) -> dict[str, float]:
    """DSC, HD95 and both mean surface distances (mm) of ``node`` against ``reference``: the
    mean of the two directed means (``msd_paper_mm``, as paper 003 defines it) and the mean
    over both surfaces' points pooled (``msd_pooled_mm``); AUC of the probability map against
    the reference when one is given. Without segment IDs, all segments of a node together are
    compared."""
    predicted = _mask(node, reference_volume, segment_id)
    truth = _mask(reference, reference_volume, reference_segment_id)
    x, y, z = reference_volume.GetSpacing()
    spacing = (z, y, x)
    figures = {"dsc": dice(predicted, truth), **surface_figures(predicted, truth, spacing)}
    if probability_node is not None:
        grid = image_from_volume_node(reference_volume)
        probability = resample_to_reference(image_from_volume_node(probability_node), grid,
                                            names=(probability_node.GetName(),
                                                   reference_volume.GetName()))
        figures["auc"] = roc_auc(sitk.GetArrayViewFromImage(probability).ravel(), truth.ravel())
    return figures
