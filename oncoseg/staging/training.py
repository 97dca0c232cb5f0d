"""Training the staging network as paper 002 does, and its k-fold cross-validation.

Each case is prepared once (N4, crop, resize) and cached. The minority stage is oversampled
until both stages are equally frequent in an epoch; every volume is augmented (augment.py).
The loss is the focal loss of the volume score, plus the triplet loss with online hard mining
on the volume features (or the center loss), plus the focal loss of the slice-wise scores on
the representative slices (the paper trains its slice-wise extractor on them; they come from
staging.csv or, failing that, the largest tumour sections of the label). SGD, lr 0.01, weight
decay 0.01 (the paper's; its momentum is not stated, OncoSeg's is 0.9). The weights kept are
those of the best validation AUC, and Platt scaling of the volume logit, fitted on the same
validation cases, is stored in the model file (calibration.py: the paper does not calibrate).
Cross-validation splits patients into k stratified folds and trains one model per fold,
reporting AUC, accuracy, the recall of each stage and the calibration error as mean +- SD over
the folds.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset as TorchDataset

from oncoseg.datasets.base import Case, Dataset
from oncoseg.datasets.cache import case_key, empty_grid, load_cached, save_cached
from oncoseg.distributed import unwrap
from oncoseg.errors import InputError
from oncoseg.intensity import INTENSITY_READING
from oncoseg.io.atomic import write_text_atomic
from oncoseg.metrics import roc_auc
from oncoseg.modelfile import (
    NO_STATEMENT,
    ModelMetadata,
    ModelStatement,
    build_network,
    load_network,
    load_tensors,
    provenance,
    read_header,
    save_model,
)
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.spacing import MEDIAN
from oncoseg.staging.augment import TRAINING, AugmentRanges, augment
from oncoseg.staging.calibration import Calibration, expected_calibration_error, fit_platt
from oncoseg.staging.config import StagingConfig
from oncoseg.staging.losses import batch_hard_triplet, focal_loss
from oncoseg.staging.predict import (
    VolumeScores,
    probability,
    stage_probabilities,
    volume_scores,
)
from oncoseg.staging.preprocessing import prepare_volume, representative_slices
from oncoseg.staging.task import TASK
from oncoseg.training import MODEL_FILE, TrainingConfig, train

CACHE_FOLDER = "prepared"
STAGES = ("T2", "T3")


@dataclass
class PreparedStaging:
    case_id: str
    array: np.ndarray  # (D, S, S) float16, z-scored
    stage: int  # 0 = T2, 1 = T3
    slices: list[int]  # representative slices (may be empty)


def _label_slices(case: Case, image: sitk.Image) -> list[int]:
    return representative_slices(case.label_on(image, "t2w") > 0) if case.labels else []


def prepare_case(case: Case, config: StagingConfig, cache: Path | None) -> PreparedStaging:
    if case.info.get("stage") not in STAGES:
        raise InputError(f"case '{case.id}'", "has no T2/T3 stage (the staging layout reads it "
                         "from staging.csv)")
    stage = STAGES.index(case.info["stage"])
    key = case_key(case, INTENSITY_READING, str(config.size), str(config.n4),
                   repr(config.roi_margin_mm),
                   repr(config.auto_roi_mm), repr(config.crop_mm),
                   repr(case.info.get("roi_lps_mm")),
                   repr(case.info.get("slices")))
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, _ = cached
        return PreparedStaging(case.id, arrays["array"], stage, arrays["slices"].tolist())
    image = case.read("t2w")
    prepared = prepare_volume(image, config, roi_box=case.info.get("roi_lps_mm"), automatic=True)
    slices = list(case.info.get("slices") or _label_slices(case, image))
    bad = [k for k in slices if not 0 <= k < len(prepared.array)]
    if bad:
        raise InputError(f"case '{case.id}'", f"names representative slice {bad[0]}, but its "
                         f"t2w has {len(prepared.array)} slices (numbered from 0)")
    result = PreparedStaging(case.id, prepared.array.astype(np.float16), stage, slices)
    save_cached(path, key, empty_grid(image), {"array": result.array,
                                               "slices": np.asarray(slices, np.int64)})
    return result


class VolumeSet(TorchDataset):
    """(volume (1, D, S, S), stage, representative-slice mask (D,)); with ``oversample`` the
    minority stage's cases repeat until both stages count the same in an epoch, and the whole
    order repeats up to ``length`` items."""

    def __init__(self, cases: list[PreparedStaging], ranges: AugmentRanges | None,
                 oversample: bool, length: int = 0):
        self.cases, self.ranges = cases, ranges
        order = list(range(len(cases)))
        if oversample:
            by_stage = [[i for i, c in enumerate(cases) if c.stage == s] for s in (0, 1)]
            larger = max(len(group) for group in by_stage)
            order = []
            for group in by_stage:
                if group:
                    order += [group[k % len(group)] for k in range(larger)]
        # a small data set may repeat within an epoch (each repeat augmented differently)
        self.order = [order[k % len(order)] for k in range(max(length, len(order)))]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, item: int):
        case = self.cases[self.order[item]]
        volume = torch.from_numpy(case.array.astype(np.float32))
        if self.ranges is not None:  # torch's global generator: seeded per epoch by training
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            volume = augment(volume, self.ranges, generator)
        mask = torch.zeros(len(volume), dtype=torch.bool)
        mask[case.slices] = True
        return volume[None], torch.tensor(case.stage), mask


def training_ranges(config: StagingConfig) -> AugmentRanges | None:
    """The training augmentation ``config`` asks for: None, the paper's, or the paper's
    without the elastic distortion."""
    if not config.augment:
        return None
    return TRAINING if config.elastic else replace(TRAINING, elastic_px=0.0)


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volumes of different depth in one batch: the shorter ones repeat their last slice (and
    their padding never counts as a representative slice)."""
    depth = max(volume.shape[1] for volume, _, _ in batch)
    volumes, masks = [], []
    for volume, _, mask in batch:
        missing = depth - volume.shape[1]
        if missing:
            volume = torch.cat([volume, volume[:, -1:].expand(-1, missing, -1, -1)], dim=1)
            mask = torch.cat([mask, torch.zeros(missing, dtype=torch.bool)])
        volumes.append(volume)
        masks.append(mask)
    return torch.stack(volumes), torch.stack([stage for _, stage, _ in batch]), \
        torch.stack(masks)


def make_step(config: StagingConfig):
    def step(model: torch.nn.Module, batch, device: str) -> tuple[torch.Tensor, int]:
        volumes, stages, masks = (t.to(device) for t in batch)
        out = model(volumes)
        loss = focal_loss(out["volume_logit"], stages, config.focal_gamma)
        if config.loss == "focal+triplet":
            loss = loss + batch_hard_triplet(out["volume_features"], stages,
                                             config.triplet_margin)
        elif config.loss == "focal+center":
            loss = loss + config.center_weight * unwrap(model).centre_loss(
                out["volume_features"], stages)
        if masks.any() and config.slice_weight > 0:
            slice_stages = stages[:, None].expand_as(masks)[masks]
            loss = loss + config.slice_weight * focal_loss(out["slice_logits"][masks],
                                                           slice_stages, config.focal_gamma)
        return loss, len(stages)

    return step


def auc_criterion(cases: list[PreparedStaging], config: StagingConfig, device: str):
    """1 - the volume-score AUC on the validation cases (no test-time augmentation). The
    paper chose its architecture, loss and aggregation by cross-validated AUC; choosing the
    epoch by validation AUC is OncoSeg's (the paper does not say how it chose its weights),
    because a 10-patient validation loss swings too much to stop on."""
    stages = np.array([case.stage for case in cases]) == 1
    one_pass = replace(config, tta=1)

    def criterion(model: torch.nn.Module) -> float:
        scores = [stage_probabilities(case.array, model, one_pass, device)[0] for case in cases]
        return 1.0 - roc_auc(np.array(scores), stages)

    return criterion


def metadata_for(config: StagingConfig, dataset: Dataset, train_ids: list[str],
                 validation_ids: list[str], statement: ModelStatement) -> ModelMetadata:
    return ModelMetadata(
        task=TASK.name, architecture="staging-resnet18",
        architecture_args={"variant": config.variant, "aggregation": config.aggregation,
                           "filters": config.filters, "in_channels": 1,
                           "centres": config.loss == "focal+center"},
        inputs=["t2w"],
        preprocessing={"size": config.size, "n4": config.n4,
                       "roi_margin_mm": config.roi_margin_mm, "auto_roi_mm": config.auto_roi_mm,
                       "crop_mm": config.crop_mm},
        # test-time augmentation uses the transforms training used: none if it used none
        outputs={"classes": list(STAGES), "threshold": config.threshold,
                 "tta": config.tta if config.augment else 1},
        provenance={"dataset": dataset.provenance(TASK.reference_role, train=train_ids,
                                                  validation=validation_ids),
                    "staging_config": config.as_dict()},
        **statement.fields())


def prepare_all(cases: list[Case], config: StagingConfig, cache: Path,
                progress: ProgressCallback | None, cancel: CancelToken | None
                ) -> list[PreparedStaging]:
    prepared = []
    for index, case in enumerate(cases):
        check_cancelled(cancel)
        report(progress, "Preparing volumes (N4, crop, resize)", index, len(cases),
               message=case.id)
        prepared.append(prepare_case(case, config, cache))
    return prepared


def train_one(dataset: Dataset, cases: list[Case], output: Path, config: StagingConfig,
              cache: Path, device: str, resume: bool, statement: ModelStatement,
              progress: ProgressCallback | None, cancel: CancelToken | None) -> Path:
    """One model from ``cases``, early-stopped on a stratified share of their patients."""
    subset = Dataset(dataset.root, dataset.layout, cases)
    train_cases, validation_cases = subset.split(config.validation_fraction, config.seed,
                                                 save_to=output / "split.json")
    if not validation_cases:
        raise InputError(str(dataset.root), "has one patient only; training needs at least two")
    prepared = prepare_all(train_cases + validation_cases, config, cache, progress, cancel)
    training, validation = prepared[:len(train_cases)], prepared[len(train_cases):]
    metadata = metadata_for(config, dataset, [c.id for c in train_cases],
                            [c.id for c in validation_cases], statement)
    result = train(
        make_model=lambda: build_network(metadata),
        step=make_step(config),
        make_optimizer=lambda parameters: torch.optim.SGD(
            parameters, lr=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay),
        train_data=VolumeSet(training, training_ranges(config), config.oversample,
                             config.samples_per_epoch),
        val_data=VolumeSet(validation, None, False),
        config=TrainingConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                              patience=config.patience, min_delta=config.min_delta,
                              seed=config.seed),
        output=output, metadata=metadata, device=device, resume=resume, collate=collate,
        progress=progress, cancel=cancel,
        criterion=auc_criterion(validation, config, device) if config.select_by == "auc" else None)
    if result.model_path is None:  # another process of a torchrun job: rank 0 writes the file
        return output / MODEL_FILE
    report(progress, "Calibrating P(T3) on the validation cases", 0, 1)
    calibrate_file(result.model_path, result.model_path, validation, "validation fold",
                   {"cases": [c.id for c in validation_cases]}, device, cancel)
    report(progress, "Calibrating P(T3) on the validation cases", 1, 1)
    return result.model_path


# ---------------------------------------------------------------------------- calibration


def calibrate_file(source: Path, target: Path, cases: list[PreparedStaging], fitted_on: str,
                   record: dict[str, Any], device: str = "cpu",
                   cancel: CancelToken | None = None, overwrite: bool = True
                   ) -> dict[str, Any]:
    """Fit Platt scaling of ``source``'s volume logit on ``cases`` (prepared with the model's
    own pre-processing, scored with its test-time passes) and write ``target``: the same
    tensors, unchanged, with ``outputs.calibration`` added (``provenance.calibration`` says on
    what, with the calibration error before and after on those cases). Cases of one stage
    only cannot be fitted: the file is then left uncalibrated and the record says why.
    Returns the record."""
    from oncoseg.method import model_settings

    network, metadata = load_network(source, expected_task=TASK.name, device=device)
    settings = model_settings(TASK, metadata)
    scores = []
    for case in cases:
        check_cancelled(cancel)
        scores.append(volume_scores(case.array, network, settings, device, cancel))
    calibration, record = fit_calibration(scores, [c.stage for c in cases],
                                          max(settings.tta, 1), fitted_on, record)
    write_calibration(source, target, calibration, record, overwrite)
    return record


def fit_calibration(scores: list[VolumeScores], stages: list[int], tta: int, fitted_on: str,
                    record: dict[str, Any]) -> tuple[Calibration | None, dict[str, Any]]:
    """Platt scaling of the cases' mean logits (``tta`` passes each) against their stages
    (1 = T3), and the record of the fit: when, on how many of each stage, the calibration
    error of P(T3) before and after on those cases (or why it could not be fitted)."""
    is_t3 = np.asarray(stages) == 1
    record = {**record, "fitted_on": fitted_on, "date": provenance()["date"],
              "t3": int(is_t3.sum()), "t2": int((~is_t3).sum())}
    try:
        slope, intercept = fit_platt(np.array([v.logit for v in scores]), is_t3)
    except InputError as error:
        return None, {**record, "not_fitted": error.problem}
    calibration = Calibration(slope, intercept, len(scores), tta, fitted_on)
    before = np.array([v.p_t3 for v in scores])
    after = np.array([probability(v, calibration) for v in scores])
    record.update(ece_before=expected_calibration_error(before, is_t3),
                  ece_after=expected_calibration_error(after, is_t3), auc=roc_auc(after, is_t3))
    return calibration, record


def write_calibration(source: Path, target: Path, calibration: Calibration | None,
                      record: dict[str, Any], overwrite: bool = True) -> Path:
    """``source``'s tensors, byte for byte, with ``outputs.calibration`` set (removed for
    None) and ``provenance.calibration`` = ``record``, written to ``target``."""
    header = read_header(source)
    _, tensors = load_tensors(source)
    metadata = header.metadata
    outputs = {k: v for k, v in metadata.outputs.items() if k != "calibration"}
    if calibration is not None:
        outputs["calibration"] = calibration.as_dict()
    metadata.outputs = outputs
    metadata.provenance = {**metadata.provenance, "calibration": record}
    return save_model(target, tensors, metadata, overwrite=overwrite)


def calibrate_existing(dataset: Dataset, output: Path, model: str, device: str = "cpu",
                       progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None) -> Path:
    """``--set calibrate_only=MODEL``: no training; ``MODEL`` (a file, or ``demo``) calibrated
    on every case of ``dataset`` (which it must not have been trained on), written to
    ``output/model.safetensors`` with ``output/calibration.json`` (the fit's record)."""
    from oncoseg.method import demo_model_file, model_settings
    from oncoseg.modelfile import resolve_model_file

    source = resolve_model_file(model, demo_model_file(TASK))
    metadata = read_header(source).metadata
    if metadata.task != TASK.name:
        raise InputError(f"--set calibrate_only={model}", f"is a '{metadata.task}' model, "
                         "not a staging one")
    trained_on = set(metadata.provenance.get("dataset", {}).get("train", []))
    overlap = sorted(trained_on & {c.id for c in dataset.cases})
    if overlap and metadata.provenance.get("dataset", {}).get("fingerprint") == \
            dataset.fingerprint():
        raise InputError(str(dataset.root), f"is the data set the model was trained on (case "
                         f"'{overlap[0]}'...): calibrate on its validation cases or unseen ones")
    settings = model_settings(TASK, metadata)
    config = StagingConfig.from_overrides({k: getattr(settings, k) for k in
                                           ("size", "n4", "roi_margin_mm", "auto_roi_mm",
                                            "crop_mm")})
    output = Path(output)
    prepared = []  # float32 as predict and evaluate prepare them (the cache keeps float16)
    for index, case in enumerate(dataset.cases):
        check_cancelled(cancel)
        report(progress, "Preparing volumes (N4, crop, resize)", index, len(dataset.cases),
               message=case.id)
        if case.info.get("stage") not in STAGES:
            raise InputError(f"case '{case.id}'", "has no T2/T3 stage (the staging layout "
                             "reads it from staging.csv); calibration needs every case's stage")
        volume = prepare_volume(case.read("t2w"), config, roi_box=case.info.get("roi_lps_mm"),
                                automatic=True)
        prepared.append(PreparedStaging(case.id, volume.array,
                                        STAGES.index(case.info["stage"]), []))
    report(progress, "Calibrating P(T3)", 0, 1)
    target = output / MODEL_FILE
    record = calibrate_file(source, target, prepared, f"{len(prepared)} cases of "
                            f"{dataset.root.name}", {"dataset": {
                                "root": str(dataset.root), "layout": dataset.layout,
                                "fingerprint": dataset.fingerprint(),
                                "cases": [c.id for c in dataset.cases]},
                                "model": str(source)}, device, cancel, overwrite=False)
    report(progress, "Calibrating P(T3)", 1, 1)
    write_text_atomic(output / "calibration.json", json.dumps(record, indent=2) + "\n",
                      overwrite=True)
    if "not_fitted" in record:
        raise InputError(str(dataset.root), f"calibration was not fitted: {record['not_fitted']}")
    return target


# ---------------------------------------------------------------------------- cross-validation


def stratified_folds(cases: list[Case], folds: int, seed: int) -> list[list[Case]]:
    """Patients dealt round-robin into ``folds`` after a seeded shuffle within each stage, so
    every fold holds both stages in the data set's proportion."""
    patients: dict[str, str] = {}
    for case in cases:
        patients.setdefault(case.patient, case.info["stage"])
    if folds < 2 or folds > len(patients):
        raise InputError("--folds", f"must lie between 2 and the number of patients "
                         f"({len(patients)}), got {folds}")
    rng = np.random.default_rng(seed)
    assignment: dict[str, int] = {}
    position = 0
    for stage in STAGES:
        group = sorted(p for p, s in patients.items() if s == stage)
        for index in rng.permutation(len(group)):
            assignment[group[index]] = position % folds
            position += 1
    return [[c for c in cases if assignment[c.patient] == k] for k in range(folds)]


def classification_figures(stages: np.ndarray, p_t3: np.ndarray, threshold: float
                           ) -> dict[str, float]:
    """AUC, accuracy and the recall of each stage at the decision threshold."""
    stages, p_t3 = np.asarray(stages, int), np.asarray(p_t3, float)
    called = (p_t3 >= threshold).astype(int)
    recall = {name: float(np.mean(called[stages == k] == k)) if np.any(stages == k) else
              float("nan") for k, name in enumerate(STAGES)}
    return {"auc": roc_auc(p_t3, stages == 1), "accuracy": float(np.mean(called == stages)),
            "recall_t2": recall["T2"], "recall_t3": recall["T3"]}


def cross_validate(dataset: Dataset, output: Path, config: StagingConfig, device: str,
                   resume: bool, statement: ModelStatement,
                   progress: ProgressCallback | None, cancel: CancelToken | None) -> Path:
    """One model per fold, each scored on its held-out patients; folds.csv and
    cv_summary.json hold the per-fold figures and their mean +- SD."""
    folds = stratified_folds(dataset.cases, config.folds, config.seed)
    cache = output / CACHE_FOLDER
    rows: list[dict[str, Any]] = []
    for k, held_out in enumerate(folds):
        check_cancelled(cancel)
        report(progress, "Cross-validation", k, len(folds), message=f"fold {k + 1}")
        training_cases = [c for c in dataset.cases if c not in held_out]
        folder = output / f"fold_{k + 1}"
        model = train_one(dataset, training_cases, folder, config, cache, device, resume,
                          statement, progress, cancel)
        network, metadata = load_network(model, expected_task=TASK.name, device=device)
        calibration = Calibration.from_outputs(metadata.outputs, str(model))
        tested = prepare_all(held_out, config, cache, progress, cancel)
        p_t3 = np.array([probability(volume_scores(case.array, network, config, device),
                                     calibration) for case in tested])
        stages = np.array([c.stage for c in tested])
        figures = classification_figures(stages, p_t3, config.threshold)
        rows.append({"fold": k + 1, "cases": len(tested), **figures,
                     "ece": expected_calibration_error(p_t3, stages == 1)})
    report(progress, "Cross-validation", len(folds), len(folds))
    summary = {"folds": config.folds, "threshold": config.threshold,
               **{name: {"mean": float(np.nanmean([r[name] for r in rows])),
                         "sd": float(np.nanstd([r[name] for r in rows], ddof=1))}
                  for name in ("auc", "accuracy", "recall_t2", "recall_t3", "ece")}}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(output / "folds.csv", buffer.getvalue(), overwrite=True)
    return write_text_atomic(output / "cv_summary.json", json.dumps(summary, indent=2) + "\n",
                             overwrite=True)


def training_crop_mm(config: StagingConfig, cases: list[Case]) -> float | str:
    """What a training run crops at: ``median`` resolved to the median in-plane side (the
    longer one) of its cases' ROI boxes, or to ``auto_roi_mm`` where none has a box (each
    then cropped automatically at that side); :data:`BOX` or a number as given."""
    if config.crop_mm != MEDIAN:
        return config.crop_mm
    sides = [max(abs(box[3] - box[0]), abs(box[4] - box[1]))
             for box in (case.info.get("roi_lps_mm") for case in cases) if box]
    return round(float(np.median(sides)), 2) if sides else float(config.auto_roi_mm)


def train_staging(dataset: Dataset, output: Path, config: StagingConfig, device: str = "cpu",
                  resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> Path:
    output = Path(output)
    # every case read at one crop scale, which the model files fix for their runs
    config = replace(config, crop_mm=training_crop_mm(config, dataset.cases))
    if config.folds:
        return cross_validate(dataset, output, config, device, resume, statement,
                              progress, cancel)
    return train_one(dataset, dataset.cases, output, config, output / CACHE_FOLDER, device,
                     resume, statement, progress, cancel)
