"""The paper's evaluation of the brain ensemble: Dice and HD95 of whole tumour, tumour core and
enhancing tumour per case (the BraTS regions; the reference read as BraTS writes it).

Each case is prepared and segmented as ``oncoseg predict`` does, with the ensemble read once for
every case; ``drop_sequences`` evaluates it as if those sequences were missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import SimpleITK as sitk

from oncoseg.brain.predict import segment
from oncoseg.brain.preprocessing import back_to_grid, prepare_volume
from oncoseg.brain.training import case_labels
from oncoseg.datasets.base import Dataset
from oncoseg.evaluation import evaluate_dataset
from oncoseg.method import Prepared, RunContext
from oncoseg.metrics import brats_regions, dice, hd95
from oncoseg.spacing import model_spacing

REGION_KEYS = {"whole tumour": "wt", "tumour core": "tc", "enhancing tumour": "et"}


def evaluate(data: Dataset, prepared: Prepared, output: Path, context: RunContext,
             overwrite: bool = False) -> dict[str, Any]:
    """Dice and HD95 of the three BraTS regions per case, with a summary."""
    ensemble, settings = prepared.network, prepared.settings
    read_at = model_spacing(settings.spacing_mm, prepared.model.metadata.provenance)

    def case_row(case) -> dict[str, Any]:
        volume = prepare_volume({role: case.read(role) for role in case.images},
                                settings.intensity_constant, settings.dropped, read_at)
        labels, _, _ = segment(ensemble, volume, settings, context.device,
                               cancel=context.cancel)
        predicted = sitk.GetArrayFromImage(back_to_grid(labels, volume))
        reference = sitk.GetArrayFromImage(back_to_grid(case_labels(case, volume), volume))
        spacing = volume.grid.GetSpacing()[::-1]
        row: dict[str, Any] = {}
        truths = brats_regions(reference)
        for region, mask in brats_regions(predicted).items():
            short, truth = REGION_KEYS[region], truths[region]
            row[f"dice_{short}"] = dice(mask, truth)
            row[f"hd95_{short}_mm"] = hd95(mask, truth, spacing) if mask.any() and truth.any() \
                else float("nan")
        return row

    return evaluate_dataset(data, case_row, output, plotted=("dice_",), overwrite=overwrite,
                            extra={"model": str(prepared.model.path),
                                   "sequences_dropped": settings.dropped},
                            progress=context.progress, cancel=context.cancel)
