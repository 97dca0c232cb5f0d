"""Training the pelvic OAR network from clinical structure sets (paper 003, section 2.3).

Cases are read once (at the CT's own resolution, or on a working grid when ``spacing_mm`` asks
for one) and cached (HU as int16, labels, and which organs each case annotates). Each training
sample is a patch drawn at random, centred on an annotated organ voxel for a share of the
samples, rotated about the body axis (+-0.15 rad), scaled (+-10 %) and shifted in intensity
(+-100 HU), then windowed like inference. The loss is the partial-label NLL: organs a case did
not contour merge with its background. NAdam with the learning rate reduced on plateau.

The paper's batch of 50 patches of 136 x 136 x 72 does not fit most GPUs at once: a batch is
cut into micro-batches whose gradients are summed before the optimiser's step, which gives the
gradient of the whole batch (the network normalises per patch, so no statistic crosses the
cut). The paper's training runs in cycles ("This cycle was performed fifty times"): after each,
the model segments the whole training group, and the next cycle restarts from it with 10 % of
its patches centred on those false positives and another fifth of the patients held out for
validation, so that every scan trains. ``training_log.txt`` in the run folder says how each
cycle ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from torch.utils.data import Dataset as TorchDataset

from oncoseg.datasets.base import IGNORE_LABEL, Case, Dataset
from oncoseg.datasets.cache import case_key, load_cached, save_cached
from oncoseg.distributed import dealt_out, is_main_process
from oncoseg.errors import InputError
from oncoseg.geometry import image_like, resample_to_reference
from oncoseg.io.atomic import atomic_path
from oncoseg.io.volumes import read_image
from oncoseg.modelfile import NO_STATEMENT, ModelMetadata, ModelStatement, load_network
from oncoseg.oar.ct.config import OarCtConfig
from oncoseg.oar.ct.network import OarUNet3D
from oncoseg.oar.ct.predict import segment_ct
from oncoseg.oar.ct.preprocessing import AIR_HU, check_ct, to_working_grid, working_grid
from oncoseg.oar.ct.task import CT_SEGMENTS, OAR_CT
from oncoseg.oar.losses import partial_label_nll
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.training import CHECKPOINT, MODEL_FILE, StepFunction, TrainingConfig, train

CLASSES = 1 + len(CT_SEGMENTS)
CACHE_FOLDER = "prepared"
LOG_FILE = "training_log.txt"
# the automatic micro-batch leaves this share of a GPU's free memory unused
MEMORY_MARGIN = 0.8


@dataclass
class PreparedCT:
    case_id: str
    hu: np.ndarray  # (z, y, x) int16 on the network's grid (the CT's own, or a working grid)
    labels: np.ndarray  # (z, y, x) uint8; IGNORE_LABEL where the case annotated nothing
    annotated: np.ndarray  # (CLASSES,) bool; background always True
    grid: sitk.Image
    patient: str = ""
    _organ_voxels: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def organ_voxels(self) -> list[np.ndarray]:
        """Per organ present, its voxels (found once: every cycle samples from them)."""
        if self._organ_voxels is None:
            self._organ_voxels = [np.argwhere(self.labels == value)
                                  for value in np.unique(self.labels)
                                  if 0 < value != IGNORE_LABEL]
        return self._organ_voxels


def case_labels(case: Case, ct: sitk.Image) -> tuple[np.ndarray, list[str]]:
    """Label map on the CT grid and the organs annotated: from the structure set (rtstruct
    layout) or from a label file (other layouts). A segmentation annotates the organs it has
    a segment for, as a structure set does, and a data set whose dataset.json names its labels
    the organs it names; in a label map no one names every organ counts as annotated. Where
    the file marks voxels with its nnU-Net data set's ignore label (they become
    :data:`IGNORE_LABEL`), an organ it does not hold may lie under them: unknown rather than
    absent, as in a structure set without that contour."""
    if "rtstruct" in case.info or "seg" in case.info:
        from oncoseg.datasets.rtstruct_cohort import load_labels

        _, labels, annotated = load_labels(case, {s.name: s.label for s in CT_SEGMENTS})
        return labels, annotated
    values = {0, *(s.label for s in CT_SEGMENTS)}
    labels = case.label_on(ct, "ct", values, takes_ignore=True, segments=CT_SEGMENTS)
    named = case.annotated_segments(CT_SEGMENTS)  # a segmentation or dataset.json says which
    present = set(np.unique(labels).tolist())
    return labels, [s.name for s in CT_SEGMENTS if (named is None or s.name in named)
                    and (s.label in present or IGNORE_LABEL not in present)]


def read_case_ct(case: Case) -> sitk.Image:
    """The case's CT: the series its structure set references, or its image file."""
    from oncoseg.io.volumes import read_dicom_series

    source = case.images["ct"]
    if "series_uid" in case.info:
        return read_dicom_series(source, case.info["series_uid"])
    return read_image(source)


def prepare_case(case: Case, config: OarCtConfig, cache: Path | None) -> PreparedCT:
    """The case on the network's grid: the CT's own voxels (in the canonical axis order) by
    default, a working grid when the settings give ``spacing_mm``."""
    key = case_key(case, repr(config.spacing_mm),
                   str(case.info.get("rtstruct", case.info.get("seg", ""))))
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, grid = cached
        return PreparedCT(case.id, arrays["hu"], arrays["labels"], arrays["annotated"], grid,
                          case.patient)
    ct = read_case_ct(case)
    check_ct(ct, f"case {case.id}: ct", config.grid_spacing)  # a usable CT its grid can hold
    labels, annotated_names = case_labels(case, ct)
    grid = working_grid(ct, config.grid_spacing)
    hu = np.clip(np.round(to_working_grid(ct, grid)), -1024, 3071).astype(np.int16)
    label_image = image_like(labels.astype(np.uint8), ct)
    on_grid = sitk.GetArrayFromImage(resample_to_reference(label_image, grid, "nearest"))
    annotated = np.zeros(CLASSES, bool)
    annotated[0] = True
    for spec in CT_SEGMENTS:
        annotated[spec.label] = spec.name in annotated_names
    prepared = PreparedCT(case.id, hu, on_grid.astype(np.uint8), annotated, grid, case.patient)
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
    """Random augmented patches; item ``i`` is a pure function of (seed, i), so runs repeat.

    ``hard_negatives`` maps a case's index to voxels the previous cycle's model called an
    organ where the case says background: ``hard_negative_fraction`` of the samples (paper:
    10 %) are centred on one of them, in a case drawn among those that have any."""

    def __init__(self, cases: list[PreparedCT], config: OarCtConfig, seed: int, length: int,
                 hard_negatives: dict[int, np.ndarray] | None = None, augment: bool = True):
        self.cases, self.config, self.seed, self.length = cases, config, seed, length
        self.hard_negatives = {i: v for i, v in (hard_negatives or {}).items() if len(v)}
        self.negative_cases = sorted(self.hard_negatives)
        self.augment = augment
        # per case, per organ present: its voxels (organs are drawn first, then a voxel, so
        # small organs such as the femoral heads are centred as often as the bowel bag)
        self.organ_voxels = [c.organ_voxels for c in cases]

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray, str]:
        """(case index, patch centre (voxel indices), what it is centred on: 'false
        positive', 'organ' or 'random'). Without hard negatives the draws are those of a
        run without cycles, so a first cycle repeats it."""
        index = int(rng.integers(len(self.cases)))
        case = self.cases[index]
        draw = rng.random()
        if self.negative_cases and draw < self.config.hard_negative_fraction:
            index = self.negative_cases[int(rng.integers(len(self.negative_cases)))]
            negatives = self.hard_negatives[index]
            return index, negatives[rng.integers(len(negatives))].astype(float), \
                "false positive"
        organs = self.organ_voxels[index]
        if organs and rng.random() < self.config.foreground_fraction:
            voxels = organs[rng.integers(len(organs))]
            return index, voxels[rng.integers(len(voxels))].astype(float), "organ"
        return index, np.array([rng.integers(s) for s in case.labels.shape], float), "random"

    def __getitem__(self, item: int):
        rng = np.random.default_rng([self.seed, item])
        index, centre, _ = self.draw(rng)
        case, config = self.cases[index], self.config
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


def accumulating_step(micro_batch: int) -> StepFunction:
    """The training step on a batch cut into micro-batches of at most ``micro_batch`` patches.

    While training, each micro-batch but the last is back-propagated here with its share of
    the batch's mean loss (its size over the batch's), which sums the gradients the shared
    loop's one ``backward`` would have produced for the whole batch; the loss returned is the
    batch's mean, whose own backward adds the last micro-batch's share. Under ``no_grad``
    (validation) the micro-batches are only evaluated. Under DDP the gradients are averaged
    over the processes once, at the last backward."""

    def step(model: torch.nn.Module, batch, device: str) -> tuple[torch.Tensor, int]:
        image, labels, annotated = batch
        total = len(labels)
        if micro_batch <= 0 or micro_batch >= total:
            return _step(model, batch, device)
        backward = torch.is_grad_enabled()
        starts = list(range(0, total, micro_batch))
        earlier = 0.0
        for start in starts[:-1]:
            part = slice(start, start + micro_batch)
            no_sync = getattr(model, "no_sync", None) if backward else None
            with no_sync() if no_sync is not None else nullcontext():
                loss, n = _step(model, (image[part], labels[part], annotated[part]), device)
                share = loss * (n / total)
                if backward:
                    share.backward()
            earlier += float(share.detach())
        last = slice(starts[-1], total)
        loss, n = _step(model, (image[last], labels[last], annotated[last]), device)
        return loss * (n / total) + earlier, total

    return step


def choose_micro_batch(config: OarCtConfig, local_batch: int, device: str) -> tuple[int, str]:
    """The micro-batch a run uses and why: the setting when given; automatically, on a GPU,
    as many patches as one patch's measured training peak fits into
    :data:`MEMORY_MARGIN` of the free memory, and on a CPU one patch at a time."""
    if config.micro_batch:
        return min(config.micro_batch, local_batch), "micro_batch setting"
    if not device.startswith("cuda"):
        return 1, "automatic: one patch at a time on a CPU"
    if device == "cuda":  # this process's GPU under torchrun (train() selects it later)
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    network = _network(config, None).to(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    image = torch.zeros((1, 1, *config.patch_size), device=device)
    loss = network(image).float().logsumexp(dim=1).mean()
    loss.backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    del network, image, loss
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(MEMORY_MARGIN * free // max(peak, 1))
    micro = max(1, min(local_batch, fits))
    return micro, (f"automatic: one patch's training peak {peak / 2**30:.2f} GiB, "
                   f"{free / 2**30:.1f} GiB free on {device}")


# ---------------------------------------------------------------------------- cycles


def validation_folds(training: Sequence[PreparedCT], validation: Sequence[PreparedCT],
                     fraction: float, seed: int) -> list[list[str]]:
    """Patient folds for the cycles' validation sets: the split's validation patients first,
    then the training patients shuffled (``seed``) and cut into ``round(1 / fraction) - 1``
    folds (at most one per patient), so that rotating through them holds every patient out
    once and lets every scan train in the other cycles."""
    first = list(dict.fromkeys(c.patient for c in validation))
    rest = list(dict.fromkeys(c.patient for c in training if c.patient not in first))
    rng = np.random.default_rng([seed, 1])
    rest = [rest[i] for i in rng.permutation(len(rest))]
    count = max(2, round(1 / fraction)) if fraction > 0 else 2
    count = min(count, 1 + len(rest))
    if count < 2:
        return [first]
    return [first] + [list(chunk) for chunk in np.array_split(np.array(rest, dtype=object),
                                                              count - 1) if len(chunk)]


def cycle_cases(cases: Sequence[PreparedCT], folds: list[list[str]], cycle: int,
                rotate: bool) -> tuple[list[PreparedCT], list[PreparedCT]]:
    """Training and validation cases of cycle ``cycle`` (0-based): the validation fold turns
    with the cycle when ``rotate``, else the first fold stays out in every cycle."""
    held_out = set(folds[cycle % len(folds)] if rotate else folds[0])
    return ([c for c in cases if c.patient not in held_out],
            [c for c in cases if c.patient in held_out])


class RunLog:
    """``training_log.txt`` in the run folder (written by the first process only) and the
    same lines as progress messages: how the batch was reached, each cycle's split and hard
    negatives."""

    def __init__(self, output: Path, progress: ProgressCallback | None, resume: bool):
        self.path, self.progress = output / LOG_FILE, progress
        self.main = is_main_process()
        self.lines: list[str] = []
        if self.main:
            output.mkdir(parents=True, exist_ok=True)
            if not resume and self.path.exists():
                self.path.unlink()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.main:
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(line + "\n")
        report(self.progress, "Training plan", 0, None, message=line)


# ---------------------------------------------------------------------------- training


def _metadata(config: OarCtConfig, dataset: Dataset, train_ids: list[str],
              validation_ids: list[str], statement: ModelStatement,
              plan: dict[str, Any] | None = None) -> ModelMetadata:
    spacing = config.grid_spacing
    return ModelMetadata(
        task=OAR_CT.name, architecture="oar-ct-unet3d",
        architecture_args={"in_channels": 1, "classes": CLASSES, "filters": list(config.filters)},
        inputs=["ct"],
        # spacing_mm None: the network reads the CT at its own resolution
        preprocessing={"spacing_mm": list(spacing) if spacing is not None else None,
                       "hu_low": config.hu_low, "hu_high": config.hu_high,
                       "patch_size": list(config.patch_size)},
        outputs={"segments": [s.name for s in CT_SEGMENTS]},
        provenance={"dataset": dataset.provenance(OAR_CT.reference_role, train=train_ids,
                                                  validation=validation_ids),
                    "oar_ct_config": config.as_dict(),
                    **({"oar_ct_cycles": plan} if plan is not None else {})},
        **statement.fields())


def false_positive_voxels(network: torch.nn.Module, case: PreparedCT, config: OarCtConfig,
                          device: str) -> np.ndarray:
    """Voxels the model calls an organ the case annotated, where the case says background."""
    image = image_like(case.hu, case.grid)
    labels, _, _, _ = segment_ct(image, network, config, config.patch_size, device)
    annotated_organ = case.annotated[labels] & (labels > 0)
    return np.argwhere(annotated_organ & (case.labels == 0))


def hard_negatives(network: torch.nn.Module, cases: Sequence[PreparedCT], config: OarCtConfig,
                   device: str, title: str, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> dict[str, np.ndarray]:
    """:func:`false_positive_voxels` of every case (the whole training group, as the paper
    mines them), by case id; under torchrun each process segments its share of the cases."""
    def mine(index: int, case: PreparedCT) -> np.ndarray:
        check_cancelled(cancel)
        report(progress, title, index, len(cases), message=case.case_id)
        return false_positive_voxels(network, case, config, device)

    return {case.case_id: found
            for case, found in zip(cases, dealt_out(mine, cases), strict=True)}


def train_oar_ct(dataset: Dataset, output: Path, config: OarCtConfig, device: str = "cpu",
                 resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Path:
    """Train in ``config.cycles`` cycles (paper: 50) and return the last cycle's model, which
    is also ``output/model.safetensors``. The first cycle trains in ``output`` on the split
    ``dataset.split`` gives; cycle k (k >= 2) in ``output/round_{k-1}``, restarting from the
    previous cycle's model with its false positives over every case as hard negatives."""
    output = Path(output)
    train_cases, validation_cases = dataset.split(config.validation_fraction, config.seed,
                                                  save_to=output / "split.json")
    if not validation_cases:
        raise InputError(str(dataset.root), "has one patient only; training needs at least two")
    log = RunLog(output, progress, resume)
    cache = output / CACHE_FOLDER
    prepared = []
    cases = train_cases + validation_cases
    for index, case in enumerate(cases):
        check_cancelled(cancel)
        report(progress, "Preparing cases", index, len(cases), message=case.id)
        prepared.append(prepare_case(case, config, cache))
    folds = validation_folds(prepared[:len(train_cases)], prepared[len(train_cases):],
                             config.validation_fraction, config.seed)
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    local_batch = max(1, config.batch_size // world)
    micro, why = choose_micro_batch(config, local_batch, device)
    accumulation = -(-local_batch // micro)
    grid = "the CT's own resolution" if config.grid_spacing is None else \
        f"a {' x '.join(f'{s:g}' for s in config.grid_spacing)} mm working grid"
    log(f"grid: {grid}; patches {' x '.join(map(str, config.patch_size))} (z y x)")
    log(f"batch: {config.batch_size} patches per step"
        + (f" over {world} processes" if world > 1 else "")
        + (f", {local_batch} per process" if world > 1 else "")
        + (f", as {accumulation} micro-batches of up to {micro} with gradient accumulation"
           if accumulation > 1 else ", in one pass") + f" ({why}); patches drawn by "
        + (f"{config.data_workers} worker processes" if config.data_workers
           else "the training process"))
    log(f"cycles: {config.cycles} of up to {config.max_epochs} epochs x "
        f"{config.steps_per_epoch} steps; validation "
        + (f"rotating over {len(folds)} patient folds" if config.rotate_validation
           and config.cycles > 1 else "fixed (the split's)"))
    step = accumulating_step(micro)
    loop = TrainingConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                          patience=config.patience, min_delta=config.min_delta, seed=config.seed,
                          num_workers=config.data_workers,
                          max_steps_per_epoch=config.steps_per_epoch)
    length = config.steps_per_epoch * config.batch_size * config.max_epochs
    plan: dict[str, Any] = {"micro_batch": micro, "accumulation_steps": accumulation,
                            "folds": folds, "cycles": []}
    previous: Path | None = None
    negatives: dict[str, np.ndarray] = {}
    for cycle in range(config.cycles):
        folder = output if cycle == 0 else output / f"round_{cycle}"
        training, validation = cycle_cases(prepared, folds, cycle, config.rotate_validation)
        if previous is not None:
            network, _ = load_network(previous, expected_task=OAR_CT.name, device=device)
            network.eval()
            negatives = hard_negatives(network, prepared, config, device,
                                       f"Cycle {cycle + 1}: false positives", progress, cancel)
        hard = {i: negatives[c.case_id] for i, c in enumerate(training) if c.case_id in negatives}
        with_negatives = sum(1 for v in hard.values() if len(v))
        log(f"cycle {cycle + 1}/{config.cycles}: {len(training)} training, {len(validation)} "
            f"validation cases ({', '.join(c.case_id for c in validation)})"
            + (f"; {sum(len(v) for v in hard.values())} false-positive voxels in "
               f"{with_negatives} training cases, {config.hard_negative_fraction:.0%} of the "
               "patches centred on them" if previous is not None else ""))
        plan["cycles"].append({"cycle": cycle + 1, "validation": [c.case_id for c in validation],
                               "false_positive_cases": with_negatives})
        train_set = PatchSampler(training, config, config.seed + cycle, length, hard)
        val_set = PatchSampler(validation, config, config.seed + 10_000,
                               config.validation_patches_per_case * len(validation),
                               augment=False)
        metadata = _metadata(config, dataset, [c.case_id for c in training],
                             [c.case_id for c in validation], statement,
                             plan if config.cycles > 1 or accumulation > 1 else None)
        start_from = previous
        train(
            make_model=lambda start=start_from: _network(config, start),
            step=step,
            make_optimizer=lambda parameters: torch.optim.NAdam(parameters,
                                                                lr=config.learning_rate),
            make_scheduler=lambda optimizer: torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.plateau_factor, patience=config.plateau_patience),
            train_data=train_set, val_data=val_set, config=loop, output=folder,
            metadata=metadata, device=device,
            resume=resume and (folder / CHECKPOINT).is_file(), progress=progress, cancel=cancel)
        # every process reads the model the first one wrote (train() ends on a barrier)
        previous = folder / MODEL_FILE
    if previous is not None and previous != output / MODEL_FILE and is_main_process():
        with atomic_path(output / MODEL_FILE, overwrite=True) as tmp:
                shutil.copyfile(previous, tmp)
    return output / MODEL_FILE


def _network(config: OarCtConfig, weights: Path | None) -> OarUNet3D:
    network = OarUNet3D(1, CLASSES, config.filters)
    if weights is not None:
        loaded, _ = load_network(weights, expected_task=OAR_CT.name)
        network.load_state_dict(loaded.state_dict())
    return network
