"""Training the pelvic OAR network from clinical structure sets (paper 003).

Cases are read once onto the model's working grid and cached (HU as int16, labels, and which
organs each case annotates). Each training sample is a patch drawn at random, centred on an
annotated organ voxel for a share of the samples, rotated about the body axis (+-0.15 rad),
scaled (+-10 %) and shifted in intensity (+-100 HU), then windowed like inference. The loss is
the partial-label NLL: organs a case did not contour merge with its background. NAdam with the
learning rate reduced on plateau; optional hard-negative rounds restart training with a share
of patches centred on the previous round's false positives.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from torch.utils.data import Dataset as TorchDataset

from oncoseg.datasets.base import Case, Dataset
from oncoseg.datasets.cache import case_key, load_cached, save_cached
from oncoseg.errors import InputError
from oncoseg.geometry import image_like, resample_to_reference
from oncoseg.io.atomic import atomic_path
from oncoseg.io.volumes import read_image
from oncoseg.modelfile import ModelMetadata, load_network
from oncoseg.oar.ct.config import OarCtConfig
from oncoseg.oar.ct.network import OarUNet3D
from oncoseg.oar.ct.predict import segment_ct
from oncoseg.oar.ct.preprocessing import AIR_HU, to_working_grid, working_grid
from oncoseg.oar.ct.task import CT_SEGMENTS, OAR_CT
from oncoseg.oar.losses import partial_label_nll
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.training import MODEL_FILE, TrainingConfig, train

CLASSES = 1 + len(CT_SEGMENTS)
CACHE_FOLDER = "prepared"


@dataclass
class PreparedCT:
    case_id: str
    hu: np.ndarray  # (z, y, x) int16 on the working grid
    labels: np.ndarray  # (z, y, x) uint8
    annotated: np.ndarray  # (CLASSES,) bool; background always True
    grid: sitk.Image


def case_labels(case: Case, ct: sitk.Image) -> tuple[np.ndarray, list[str]]:
    """Label map on the CT grid and the organs annotated: from the structure set (rtstruct
    layout) or from a label file (other layouts: every organ counts as annotated)."""
    if "rtstruct" in case.info:
        from oncoseg.datasets.rtstruct_cohort import load_labels

        _, labels, annotated = load_labels(case, {s.name: s.label for s in CT_SEGMENTS})
        return labels, annotated
    return case.label_on(ct, "ct"), [s.name for s in CT_SEGMENTS]


def read_case_ct(case: Case) -> sitk.Image:
    """The case's CT: the series its structure set references, or its image file."""
    from oncoseg.io.volumes import read_dicom_series

    source = case.images["ct"]
    if "series_uid" in case.info:
        return read_dicom_series(source, case.info["series_uid"])
    return read_image(source)


def prepare_case(case: Case, config: OarCtConfig, cache: Path | None) -> PreparedCT:
    key = case_key(case, repr(config.spacing_mm), str(case.info.get("rtstruct", "")))
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, grid = cached
        return PreparedCT(case.id, arrays["hu"], arrays["labels"], arrays["annotated"], grid)
    ct = read_case_ct(case)
    labels, annotated_names = case_labels(case, ct)
    grid = working_grid(ct, config.spacing_mm)
    hu = np.clip(np.round(to_working_grid(ct, grid)), -1024, 3071).astype(np.int16)
    label_image = image_like(labels.astype(np.uint8), ct)
    on_grid = sitk.GetArrayFromImage(resample_to_reference(label_image, grid, "nearest"))
    annotated = np.zeros(CLASSES, bool)
    annotated[0] = True
    for spec in CT_SEGMENTS:
        annotated[spec.label] = spec.name in annotated_names
    prepared = PreparedCT(case.id, hu, on_grid.astype(np.uint8), annotated, grid)
    save_cached(path, key, grid, {"hu": hu, "labels": prepared.labels, "annotated": annotated})
    return prepared


# ---------------------------------------------------------------------------- patches


def sample_patch(case: PreparedCT, centre: np.ndarray, size: tuple[int, int, int],
                 rotation: float, scale: float, shift_hu: float, config: OarCtConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) patch around ``centre`` (voxel indices), rotated in-plane by ``rotation``
    radians and scaled by ``scale``: windowed CT (float32) and labels (int64)."""
    offsets = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2.0 for s in size],
                                   indexing="ij"), axis=0).reshape(3, -1)
    cos, sin = np.cos(rotation), np.sin(rotation)
    # rotate about the body (z) axis, in millimetres so anisotropic voxels stay right
    spacing = np.asarray(case.grid.GetSpacing()[::-1])  # z, y, x
    mm = offsets * spacing[:, None] * scale
    rotated = np.stack([mm[0], cos * mm[1] - sin * mm[2], sin * mm[1] + cos * mm[2]])
    coordinates = rotated / spacing[:, None] + centre[:, None]
    hu = ndimage.map_coordinates(case.hu, coordinates, order=1, cval=AIR_HU,
                                 prefilter=False).reshape(size)
    labels = ndimage.map_coordinates(case.labels, coordinates, order=0, cval=0,
                                     prefilter=False).reshape(size)
    scaled = np.clip(hu + shift_hu, config.hu_low, config.hu_high) / max(
        abs(config.hu_low), abs(config.hu_high))
    return scaled.astype(np.float32), labels.astype(np.int64)


class PatchSampler(TorchDataset):
    """Random augmented patches; item ``i`` is a pure function of (seed, i), so runs repeat."""

    def __init__(self, cases: list[PreparedCT], config: OarCtConfig, seed: int, length: int,
                 hard_negatives: dict[int, np.ndarray] | None = None, augment: bool = True):
        self.cases, self.config, self.seed, self.length = cases, config, seed, length
        self.hard_negatives = hard_negatives or {}
        self.augment = augment
        # per case, per organ present: its voxels (organs are drawn first, then a voxel, so
        # small organs such as the femoral heads are centred as often as the bowel bag)
        self.organ_voxels = [[np.argwhere(c.labels == value) for value in np.unique(c.labels)
                              if value > 0] for c in cases]

    def __len__(self) -> int:
        return self.length

    def centre(self, rng: np.random.Generator, index: int) -> np.ndarray:
        case = self.cases[index]
        draw = rng.random()
        negatives = self.hard_negatives.get(index)
        if negatives is not None and len(negatives) and draw < self.config.hard_negative_fraction:
            return negatives[rng.integers(len(negatives))].astype(float)
        organs = self.organ_voxels[index]
        if organs and rng.random() < self.config.foreground_fraction:
            voxels = organs[rng.integers(len(organs))]
            return voxels[rng.integers(len(voxels))].astype(float)
        return np.array([rng.integers(s) for s in case.labels.shape], float)

    def __getitem__(self, item: int):
        rng = np.random.default_rng([self.seed, item])
        index = int(rng.integers(len(self.cases)))
        case, config = self.cases[index], self.config
        centre = self.centre(rng, index)
        if self.augment:
            rotation = rng.uniform(-config.rotation_rad, config.rotation_rad)
            scale = 1.0 + rng.uniform(-config.scale, config.scale)
            shift = rng.uniform(-config.shift_hu, config.shift_hu)
        else:
            rotation, scale, shift = 0.0, 1.0, 0.0
        image, labels = sample_patch(case, centre, config.patch_size, rotation, scale, shift,
                                     config)
        return (torch.from_numpy(image[None]), torch.from_numpy(labels),
                torch.from_numpy(case.annotated.copy()))


def _step(model: torch.nn.Module, batch, device: str) -> tuple[torch.Tensor, int]:
    image, labels, annotated = batch
    logits = model(image.to(device))
    return partial_label_nll(logits, labels.to(device), annotated.to(device)), len(labels)


# ---------------------------------------------------------------------------- training


def _metadata(config: OarCtConfig, dataset: Dataset, train_ids: list[str],
              validation_ids: list[str], description: str, demo: bool) -> ModelMetadata:
    return ModelMetadata(
        task=OAR_CT.name, architecture="oar-ct-unet3d",
        architecture_args={"in_channels": 1, "classes": CLASSES, "filters": list(config.filters)},
        inputs=["ct"],
        preprocessing={"spacing_mm": list(config.spacing_mm), "hu_low": config.hu_low,
                       "hu_high": config.hu_high, "patch_size": list(config.patch_size)},
        outputs={"segments": [s.name for s in CT_SEGMENTS]},
        provenance={"dataset": {"root": str(dataset.root), "layout": dataset.layout,
                                "fingerprint": dataset.fingerprint(), "train": train_ids,
                                "validation": validation_ids},
                    "oar_ct_config": config.as_dict()},
        description=description, demo=demo)


def false_positive_voxels(network: torch.nn.Module, case: PreparedCT, config: OarCtConfig,
                          device: str) -> np.ndarray:
    """Voxels the model calls an organ the case annotated, where the case says background."""
    image = image_like(case.hu, case.grid)
    labels, _, _, _ = segment_ct(image, network, config, config.patch_size, device)
    annotated_organ = case.annotated[labels] & (labels > 0)
    return np.argwhere(annotated_organ & (case.labels == 0))


def train_oar_ct(dataset: Dataset, output: Path, config: OarCtConfig, device: str = "cpu",
                 resume: bool = False, description: str = "", demo: bool = False,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Path:
    output = Path(output)
    train_cases, validation_cases = dataset.split(config.validation_fraction, config.seed,
                                                  save_to=output / "split.json")
    if not validation_cases:
        raise InputError(str(dataset.root), "has one patient only; training needs at least two")
    cache = output / CACHE_FOLDER
    prepared = []
    cases = train_cases + validation_cases
    for index, case in enumerate(cases):
        check_cancelled(cancel)
        report(progress, "Preparing cases", index, len(cases), message=case.id)
        prepared.append(prepare_case(case, config, cache))
    training, validation = prepared[:len(train_cases)], prepared[len(train_cases):]
    length = config.steps_per_epoch * config.batch_size * config.max_epochs
    val_set = PatchSampler(validation, config, config.seed + 10_000,
                           config.validation_patches_per_case * len(validation), augment=False)
    metadata = _metadata(config, dataset, [c.id for c in train_cases],
                         [c.id for c in validation_cases], description, demo)
    loop = TrainingConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                          patience=config.patience, min_delta=config.min_delta, seed=config.seed,
                          max_steps_per_epoch=config.steps_per_epoch)
    previous: Path | None = None
    negatives: dict[int, np.ndarray] = {}
    for round_index in range(config.hard_negative_rounds + 1):
        folder = output if round_index == 0 else output / f"round_{round_index}"
        if previous is not None:
            network, _ = load_network(previous, expected_task=OAR_CT.name, device=device)
            negatives = {i: false_positive_voxels(network, case, config, device)
                         for i, case in enumerate(training)}
        train_set = PatchSampler(training, config, config.seed + round_index, length,
                                 negatives)
        start_from = previous
        result = train(
            make_model=lambda start=start_from: _network(config, start),
            step=_step,
            make_optimizer=lambda parameters: torch.optim.NAdam(parameters,
                                                                lr=config.learning_rate),
            make_scheduler=lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.plateau_factor, patience=config.plateau_patience),
            train_data=train_set, val_data=val_set, config=loop, output=folder,
            metadata=metadata, device=device, resume=resume, progress=progress, cancel=cancel)
        previous = result.model_path
    if previous is not None and previous != output / MODEL_FILE:
        with atomic_path(output / MODEL_FILE, overwrite=True) as tmp:
            shutil.copyfile(previous, tmp)
    return output / MODEL_FILE


def _network(config: OarCtConfig, weights: Path | None) -> OarUNet3D:
    network = OarUNet3D(1, CLASSES, config.filters)
    if weights is not None:
        loaded, _ = load_network(weights, expected_task=OAR_CT.name)
        network.load_state_dict(loaded.state_dict())
    return network
