"""The paper's evaluation: DSC against one or several readers, voxelwise ROC AUC.

Each case is prepared and segmented exactly as ``oncoseg predict`` does; the output folder holds
``cases.csv`` (one row per case), ``summary.json`` and ``distribution.png``, written as a whole
or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oncoseg.datasets.base import Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.geometry import voxel_volume_ml
from oncoseg.method import Prepared, RunContext
from oncoseg.metrics import dice, roc_auc
from oncoseg.progress import CancelToken
from oncoseg.rectal.candidates import candidates_from_probability
from oncoseg.rectal.cases import prepare_case
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.dense import probability_on
from oncoseg.rectal.spacing import model_in_plane_mm


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """Every case prepared and segmented as ``predict`` does, scored against its readers."""
    network, config = prepared.network, prepared.settings
    in_plane = model_in_plane_mm(config.in_plane_mm, prepared.model.metadata.provenance)
    return evaluate_dataset(
        data, lambda case: evaluate_case(case, network, config, context.device, context.cancel,
                                         in_plane),
        output, plotted=("dsc", "auc"), overwrite=overwrite,
        extra={"model": str(prepared.model.path), "config": config.as_dict()},
        progress=context.progress, cancel=context.cancel)


def evaluate_case(case, network: torch.nn.Module, config: RectalConfig, device: str,
                  cancel: CancelToken | None, in_plane_mm: float | None) -> dict[str, Any]:
    """One case's figures on its b0 grid, the network reading at ``in_plane_mm`` as in a
    prediction (:func:`oncoseg.rectal.dense.probability_on`)."""
    prepared = prepare_case(case, config.registration, cache=None, cancel=cancel)
    probability = probability_on(network, prepared.channels, prepared.reference, in_plane_mm,
                                 device, cancel=cancel)
    _, candidates = candidates_from_probability(probability, prepared.reference, config)
    mask = candidates.mask()
    row: dict[str, Any] = {"candidates": len(candidates.components)}
    readers = sorted(prepared.labels)
    for reader in readers:
        column = "dsc" if reader == config.label else f"dsc_{reader}"
        row[column] = dice(mask, prepared.labels[reader])
    if config.label in prepared.labels:
        row["auc"] = roc_auc(probability.ravel(), prepared.labels[config.label].ravel())
    ml = voxel_volume_ml(prepared.reference)
    row["volume_ml"] = float(mask.sum() * ml)
    if config.label in prepared.labels:
        row["reference_volume_ml"] = float(prepared.labels[config.label].sum() * ml)
    return row
