"""Evaluating the OAR CT model as paper 003 does: per organ Dice, symmetric mean surface
distance and HD95 (mm) on the CT grid, only for the organs each case annotated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Dataset
from oncoseg.io.atomic import atomic_directory
from oncoseg.metrics import dice, hd95, mean_surface_distance, write_case_table
from oncoseg.oar.ct_training import case_labels
from oncoseg.oar.task import CT_SEGMENTS
from oncoseg.plots import plot_distribution
from oncoseg.prediction import file_stem
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report


def evaluate_ct_cases(dataset: Dataset, predict, output: Path, overwrite: bool = False,
                      progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> dict[str, Any]:
    """``predict(ct_image) -> Prediction``; one row per case, organ columns."""
    from oncoseg.io.volumes import read_dicom_series, read_image

    rows = []
    with atomic_directory(output, overwrite) as folder:
        for index, case in enumerate(dataset.cases):
            check_cancelled(cancel)
            report(progress, "Evaluating", index, len(dataset.cases), message=case.id)
            source = case.images["ct"]
            ct = read_dicom_series(source, case.info["series_uid"]) \
                if "series_uid" in case.info else read_image(source)
            truth, annotated = case_labels(case, ct)
            predicted = sitk.GetArrayFromImage(predict(ct).labels)
            spacing = ct.GetSpacing()[::-1]
            row: dict[str, Any] = {"case": case.id}
            for spec in CT_SEGMENTS:
                stem = file_stem(spec.name).lower()
                if spec.name not in annotated:
                    row[f"dice_{stem}"] = None
                    continue
                a, b = predicted == spec.label, np.asarray(truth) == spec.label
                row[f"dice_{stem}"] = dice(a, b)
                row[f"msd_mm_{stem}"] = mean_surface_distance(a, b, spacing)
                row[f"hd95_mm_{stem}"] = hd95(a, b, spacing)
            rows.append(row)
        report(progress, "Evaluating", len(dataset.cases), len(dataset.cases))
        write_case_table(rows, folder)
        plot_distribution(rows, [k for k in rows[0] if k.startswith("dice_")],
                          folder / "distribution.png", title=f"{len(rows)} cases")
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        summary["dataset"] = str(dataset.root)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n",
                                             encoding="utf-8")
    return summary
