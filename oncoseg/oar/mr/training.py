"""Training the GI-tract network as paper 001 does.

Patients flagged bad are dropped whole (one bad day usually means a bad patient), the rest are
split by patient. Each scan is prepared once at the working size and cached: intensities as
float16 in [0, 1] and the three organ masks as bits of one byte per pixel. An epoch is one pass
over every training slice (or every slice with an organ, ``empty_slices=false``) in batches of
32, each slice stack randomly cropped by 0-10 px per border and its masks grown by the paper's
label smoothing; BCE-with-logits, Adam lr 1e-4, early stopping with patience 5. The threshold is
then chosen on the validation slices and written into the model file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset

from oncoseg.datasets.base import Case, Dataset
from oncoseg.datasets.cache import case_key, empty_grid, load_cached, save_cached
from oncoseg.errors import InputError
from oncoseg.intensity import INTENSITY_READING
from oncoseg.metrics import slice_dice
from oncoseg.modelfile import (
    NO_STATEMENT,
    ModelMetadata,
    ModelStatement,
    build_network,
    load_tensors,
    save_model,
)
from oncoseg.oar.mr.config import OarMrConfig
from oncoseg.oar.mr.predict import slice_outputs
from oncoseg.oar.mr.preprocessing import (
    ORGANS,
    network_view,
    random_crop,
    scale_scan,
    smooth_labels,
    stacks,
    working_volume,
)
from oncoseg.oar.mr.task import GI_SEGMENTS, OAR_MR
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.slices import resize_slices
from oncoseg.training import MODEL_FILE, TrainingConfig, train

CACHE_FOLDER = "prepared"
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def case_masks(case: Case, image: sitk.Image) -> np.ndarray:
    """(3, z, y, x) bool in ORGANS order: from the competition's run-lengths, or from a label
    file (1 stomach, 2 small bowel, 3 large bowel) resampled onto the scan."""
    if "rle" in case.info:
        from oncoseg.datasets.kaggle import read_masks

        masks = read_masks(case)
        return np.stack([masks[organ] > 0 for organ in ORGANS])
    labels = case.label_on(image, "mr", {0, *(spec.label for spec in GI_SEGMENTS)},
                           segments=GI_SEGMENTS)
    return np.stack([labels == spec.label for spec in GI_SEGMENTS])


@dataclass
class PreparedScan:
    case_id: str
    image: np.ndarray  # (z, S, S) float16, scaled to [0, 1]
    organs: np.ndarray  # (z, S, S) uint8, bit k = organ k of ORGANS

    def masks(self, slices: np.ndarray | list[int]) -> np.ndarray:
        """(len(slices), 3, S, S) uint8 0/1."""
        bits = self.organs[np.asarray(slices)][:, None]
        return (bits >> np.arange(len(ORGANS), dtype=np.uint8)[None, :, None, None]) & 1


def prepare_scan(case: Case, config: OarMrConfig, cache: Path | None) -> PreparedScan:
    rle = sorted(case.info.get("rle", {}).items())
    key = case_key(case, INTENSITY_READING, str(config.size), repr(rle))
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, _ = cached
        return PreparedScan(case.id, arrays["image"], arrays["organs"])
    image = network_view(case.read("mr"))
    masks = case_masks(case, image)
    working = working_volume(scale_scan(sitk.GetArrayFromImage(image)), config.size)
    on_grid = resize_slices(torch.from_numpy(masks.transpose(1, 0, 2, 3).astype(np.float32)),
                            (config.size, config.size)) >= 0.5
    weights = torch.tensor([1 << k for k in range(len(ORGANS))], dtype=torch.uint8)
    organs = (on_grid.to(torch.uint8) * weights[None, :, None, None]).sum(dim=1, dtype=torch.uint8)
    prepared = PreparedScan(case.id, working.numpy().astype(np.float16), organs.numpy())
    save_cached(path, key, empty_grid(image), {"image": prepared.image, "organs": prepared.organs})
    return prepared


class SliceSet(TorchDataset):
    """One item per slice: (stack (C, S, S), masks (3, S, S) float, organ present (3,) bool).

    Augmentation draws from torch's global generator, which the training loop seeds per epoch:
    the same slice is cropped differently each epoch, and a resumed run repeats the original.
    """

    def __init__(self, scans: list[PreparedScan], config: OarMrConfig, augment: bool,
                 only_with_organs: bool = False):
        self.scans, self.config, self.augment = scans, config, augment
        self.items = [(s, z) for s, scan in enumerate(scans) for z in range(len(scan.image))
                      if not only_with_organs or scan.organs[z].any()]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int):
        s, z = self.items[item]
        scan, config = self.scans[s], self.config
        image = stacks(scan.image, [z], config.context, config.context_stride, config.mean,
                       config.std)[0]
        masks = torch.from_numpy(scan.masks([z])[0].astype(np.float32))
        present = masks.flatten(1).amax(dim=1) > 0
        if self.augment:
            image, masks = random_crop(image, masks, config.crop_max_px)
            masks = smooth_labels(masks, config.smoothing_probability)
        return image, masks, present


def _step(model: torch.nn.Module, batch, device: str) -> tuple[torch.Tensor, int]:
    """BCE-with-logits on the masks; a two-stage model also learns organ presence from every
    slice while its segmentation is trained on the slices that hold an organ (the paper's
    'specialised' network)."""
    image, masks, present = (t.to(device) for t in batch)
    output = model(image)
    if not isinstance(output, tuple):
        return F.binary_cross_entropy_with_logits(output, masks), len(image)
    logits, gate = output
    rows = present.any(dim=1)
    segmentation = F.binary_cross_entropy_with_logits(logits[rows], masks[rows]) \
        if rows.any() else logits.sum() * 0.0
    return segmentation + F.binary_cross_entropy_with_logits(gate, present.float()), len(image)


# ---------------------------------------------------------------------------- data set


def select_cases(dataset: Dataset, config: OarMrConfig) -> tuple[Dataset, list[str]]:
    """The data set without the flagged patients (a flagged scan flags its whole patient)."""
    flagged = config.excluded()
    known = {c.id for c in dataset.cases} | {c.patient for c in dataset.cases}
    unknown = sorted(flagged - known)
    if unknown:
        raise InputError("--set exclude", f"names '{unknown[0]}', which is neither a patient nor "
                         f"a scan of {dataset.root}")
    patients = sorted({c.patient for c in dataset.cases
                       if c.patient in flagged or c.id in flagged})
    kept = [c for c in dataset.cases if c.patient not in patients]
    return Dataset(dataset.root, dataset.layout, kept), patients


# ---------------------------------------------------------------------------- threshold


def threshold_curve(network: torch.nn.Module, scans: list[PreparedScan], config: OarMrConfig,
                    device: str = "cpu", cancel: CancelToken | None = None) -> dict[float, float]:
    """Mean per-slice Dice (the competition's: empty/empty = 1) over every validation slice
    and organ, for each candidate threshold."""
    totals = np.zeros(len(THRESHOLDS))
    count = 0
    for scan in scans:
        for batch, maps, gate in slice_outputs(scan.image, network, config, device,
                                               cancel=cancel):
            probabilities = maps.numpy()
            passed = None if gate is None else (gate.numpy() >= config.gate_threshold)
            truth = scan.masks(batch).astype(bool)
            for index, threshold in enumerate(THRESHOLDS):
                predicted = probabilities >= threshold
                if passed is not None:
                    predicted &= passed[:, :, None, None]
                flat = (-1, *predicted.shape[2:])
                totals[index] += slice_dice(predicted.reshape(flat), truth.reshape(flat)).sum()
            count += len(batch) * len(ORGANS)
    return {float(t): float(v / max(count, 1)) for t, v in zip(THRESHOLDS, totals, strict=True)}


def store_threshold(model_file: Path, scans: list[PreparedScan], config: OarMrConfig,
                    device: str = "cpu", cancel: CancelToken | None = None) -> float:
    """Choose the threshold on the validation slices and write it into the model file."""
    metadata, tensors = load_tensors(model_file, OAR_MR.name)
    network = build_network(metadata, str(model_file))
    network.load_state_dict(tensors)
    curve = threshold_curve(network.to(device), scans, config, device, cancel)
    best = max(curve, key=lambda t: (curve[t], -abs(t - 0.5)))
    metadata.outputs["threshold"] = best
    metadata.provenance["threshold_search"] = {
        "criterion": "mean per-slice Dice on the validation slices", "chosen": best,
        "dice": {f"{t:.2f}": round(v, 5) for t, v in curve.items()}}
    save_model(model_file, tensors, metadata, overwrite=True)
    return best


# ---------------------------------------------------------------------------- training


def _metadata(config: OarMrConfig, dataset: Dataset, train_ids: list[str],
              validation_ids: list[str], excluded: list[str], statement: ModelStatement
              ) -> ModelMetadata:
    return ModelMetadata(
        task=OAR_MR.name, architecture="fcn-resnet50",
        architecture_args={"in_channels": config.channels, "classes": len(ORGANS),
                           "width": config.width, "gate": config.two_stage},
        inputs=["mr"],
        preprocessing={"size": config.size, "context": config.context,
                       "context_stride": config.context_stride, "mean": config.mean,
                       "std": config.std},
        outputs={"segments": [s.name for s in GI_SEGMENTS], "threshold": config.threshold},
        provenance={"dataset": dataset.provenance(OAR_MR.reference_role, train=train_ids,
                                                  validation=validation_ids,
                                                  excluded_patients=excluded),
                    "oar_mr_config": config.as_dict()},
        **statement.fields())


def train_oar_mr(dataset: Dataset, output: Path, config: OarMrConfig, device: str = "cpu",
                 resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Path:
    output = Path(output)
    kept, excluded = select_cases(dataset, config)
    train_cases, validation_cases = kept.split(config.validation_fraction, config.seed,
                                               save_to=output / "split.json")
    if not validation_cases:
        raise InputError(str(dataset.root), "has one patient left after exclusions; training "
                         "needs at least two")
    cache = output / CACHE_FOLDER
    cases = train_cases + validation_cases
    prepared = []
    for index, case in enumerate(cases):
        check_cancelled(cancel)
        report(progress, "Preparing scans", index, len(cases), message=case.id)
        prepared.append(prepare_scan(case, config, cache))
    training, validation = prepared[:len(train_cases)], prepared[len(train_cases):]
    metadata = _metadata(config, kept, [c.id for c in train_cases],
                         [c.id for c in validation_cases], excluded, statement)
    result = train(
        make_model=lambda: build_network(metadata),
        step=_step,
        make_optimizer=lambda parameters: torch.optim.Adam(parameters, lr=config.learning_rate),
        train_data=SliceSet(training, config, augment=True,
                            only_with_organs=not config.empty_slices),
        val_data=SliceSet(validation, config, augment=False),
        config=TrainingConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                              patience=config.patience, min_delta=config.min_delta,
                              seed=config.seed),
        output=output, metadata=metadata, device=device, resume=resume, progress=progress,
        cancel=cancel)
    if result.model_path is not None:  # rank 0 of a torchrun job
        report(progress, "Choosing the threshold", 0, 1)
        store_threshold(result.model_path, validation, config, device, cancel)
    return output / MODEL_FILE
