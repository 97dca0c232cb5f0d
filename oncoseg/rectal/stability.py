"""The paper's stability analysis: repeat the whole sampling and training k times and measure
how far the resulting models agree.

Every repeat uses the same training/validation split and the same prepared cases, and its own
seed for sampling, initialisation and batch order. Each model segments the validation cases;
the agreement is the ICC(2,1) of the per-case DSC over the repeats (1: every repeat gives each
case the same score).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from oncoseg.datasets.base import Dataset
from oncoseg.io.atomic import write_text_atomic
from oncoseg.method import model_settings
from oncoseg.metrics import dice, icc_agreement, summarise
from oncoseg.modelfile import NO_STATEMENT, ModelStatement, load_network
from oncoseg.progress import CancelToken, ProgressCallback, report
from oncoseg.rectal.candidates import candidates_from_probability
from oncoseg.rectal.cases import PreparedArrays, prepare_case
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.dense import probability_on
from oncoseg.rectal.spacing import model_in_plane_mm
from oncoseg.rectal.task import TASK
from oncoseg.rectal.training import CACHE_FOLDER, split_ids, train_rectal


def train_repeats(dataset: Dataset, output: Path, config: RectalConfig, device: str = "cpu",
                  resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> tuple[Path, dict[str, Any]]:
    """``config.repeats`` models in ``output/repeat_<i>``, and ``stability.json`` / ``.csv``;
    returns the first repeat's model and the agreement figures."""
    output = Path(output)
    split = split_ids(dataset, config, output)
    cache = output / CACHE_FOLDER
    models = []
    for repeat in range(config.repeats):
        report(progress, "Repeated training", repeat, config.repeats)
        run = train_rectal(dataset, output / f"repeat_{repeat}", replace(
            config, seed=config.seed + repeat), device, resume, statement, progress,
            cancel, split=split, cache=cache)
        models.append(run.model_path)
    report(progress, "Repeated training", config.repeats, config.repeats)
    validation = [prepare_case(dataset.case(case_id), config.registration, cache, cancel)
                  for case_id in split[1]]
    scores = np.array([_validation_dice(model, validation, config, device, cancel)
                       for model in models]).T  # (cases, repeats)
    figures = {"repeats": config.repeats, "validation_cases": split[1],
               "icc_2_1": icc_agreement(scores) if len(split[1]) > 1 else None,
               "per_repeat_mean_dsc": [float(v) for v in scores.mean(axis=0)],
               "per_case_sd": summarise(scores.std(axis=1, ddof=1).tolist())}
    write_text_atomic(output / "stability.json", json.dumps(figures, indent=2) + "\n",
                      overwrite=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", *[f"dsc_repeat_{i}" for i in range(config.repeats)]])
    for case_id, row in zip(split[1], scores, strict=True):
        writer.writerow([case_id, *[f"{v:.6g}" for v in row]])
    write_text_atomic(output / "stability.csv", buffer.getvalue(), overwrite=True)
    return models[0], figures


def _validation_dice(model: Path, cases: list[PreparedArrays], config: RectalConfig,
                     device: str, cancel: CancelToken | None) -> list[float]:
    """One model's DSC on each prepared validation case (the model is loaded once)."""
    network, metadata = load_network(model, expected_task="rectal", device=device)
    in_plane = model_in_plane_mm(model_settings(TASK, metadata).in_plane_mm,
                                 metadata.provenance)
    scores = []
    for case in cases:
        probability = probability_on(network, case.channels, case.reference, in_plane, device,
                                     cancel=cancel)
        _, candidates = candidates_from_probability(probability, case.reference, config)
        scores.append(dice(candidates.mask(), case.labels[config.label]))
    return scores
