"""Training the brain ensemble in the paper's stages (sections 2.1, 3.2): per 2D model kind
(2D model 1: reduced U-Net subnetworks, 2D model 2: three-layer ones) three 2D models (axial,
coronal, sagittal slices), then the 2D-3D members (A, B, C, each with the features of each 2D
model: six by default) on 3D patches whose extra channels are the 2D models' scores,
extracted once per case and cached, then the ensemble file.

Cases with a sequence missing (section 3.2, Table 2): each modality-specific subnetwork of a
2D model, with its auxiliary classification layer, is first pretrained on the slices of the
training cases that have its sequence (``pretrain_subnetworks``); the whole 2D model, which
starts from those weights, and the 2D-3D members train on the cases that have all four, as
the paper trains the main part.

Every stage uses the paper's optimiser: the gradient of N batches summed and divided by its
norm, SGD with momentum, the learning rate halved when the loss stalls (optimizer.py). A
loader batch holds the N batches; the step computes each one's batch-weighted loss and sums
them. Sequences are left out of training samples at random (``sequence_dropout``) so that the
ensemble works with any of them missing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset as TorchDataset

from oncoseg.brain.config import ORIENTATIONS, SEQUENCES, BrainConfig
from oncoseg.brain.losses import batch_weighted_cross_entropy
from oncoseg.brain.network import Brain2D, Brain3D, SubnetworkPretraining, brain_3d
from oncoseg.brain.optimizer import LossPlateauHalving, NormalisedSGD
from oncoseg.brain.predict import features_2d
from oncoseg.brain.preprocessing import BrainVolume, prepare_volume, to_slices, working_grid
from oncoseg.brain.task import TASK
from oncoseg.datasets import Case, Dataset
from oncoseg.datasets.cache import case_key, empty_grid, load_cached, save_cached
from oncoseg.distributed import is_main_process, unwrap, wait_for_main
from oncoseg.errors import InputError
from oncoseg.geometry import arrays_onto
from oncoseg.intensity import INTENSITY_READING
from oncoseg.io.atomic import atomic_path
from oncoseg.modelfile import NO_STATEMENT, ModelMetadata, ModelStatement, load_network, save_model
from oncoseg.postprocess import most_likely
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.spacing import MEDIAN, NATIVE, median_spacing, parse_spacing
from oncoseg.training import MODEL_FILE, TrainingConfig, train


@dataclass
class PreparedBrain:
    id: str
    image: np.ndarray  # (K, z, y, x) float32, LPS order
    labels: np.ndarray  # (z, y, x) uint8: 0..3
    grid: sitk.Image  # the arrays' grid (LPS axis order)
    # (12, z, y, x) per 2D model kind, once the 2D models exist
    features: dict[str, np.ndarray] = field(default_factory=dict)
    # (K,) the sequences the case has: an absent one is all zeros, a present one never is
    # (its median is positive)
    present: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.present = self.image.reshape(len(self.image), -1).any(axis=1)


def case_labels(case: Case, volume: BrainVolume) -> np.ndarray:
    """The case's labels on the prepared grid, BraTS's enhancing label (4 before 2023) as 3
    (a Slicer segmentation is read by its segments' names, at the task's values)."""
    mapping = {int(k): int(v) for k, v in case.info.get("label_map", {}).items()}
    if case.annotated_segments(TASK.segments) is not None:
        mapping = {}
    # brain labels are 0-3; BraTS before 2023 writes enhancing tumour as 4, read as 3
    labels = case.label_on(volume.oriented, volume.reference_role,
                           {0, 1, 2, 3, *mapping}, segments=TASK.segments)
    for source, target in mapping.items():
        labels[labels == source] = target
    return labels.astype(np.uint8)


def prepare_case(case: Case, config: BrainConfig, cache: Path | None) -> PreparedBrain:
    """The case on its reference grid (LPS axis order), as :func:`at_spacing` takes it."""
    key = case_key(case, f"brain-v2 constant={config.intensity_constant}", INTENSITY_READING)
    path = cache / f"{case.id}.npz" if cache is not None else None
    cached = load_cached(path, key)
    if cached is not None:
        arrays, grid = cached
        return PreparedBrain(case.id, arrays["image"], arrays["labels"], grid)
    volume = prepare_volume({role: case.read(role) for role in case.images},
                            config.intensity_constant)
    prepared = PreparedBrain(case.id, volume.array, case_labels(case, volume),
                             empty_grid(volume.oriented))
    save_cached(path, key, volume.oriented, {"image": prepared.image, "labels": prepared.labels})
    return prepared


def at_spacing(case: PreparedBrain, spacing_mm: tuple[float, float, float] | str
               ) -> PreparedBrain:
    """The case as the networks read it at ``spacing_mm`` (:data:`NATIVE`: unchanged): the
    sequences resampled linearly, the labels as the class whose one-hot map is largest there,
    as a prediction's members choose theirs."""
    grid = working_grid(case.grid, None if spacing_mm == NATIVE else spacing_mm)
    if grid is case.grid:
        return case
    one_hot = np.stack([case.labels == c for c in range(len(TASK.segments) + 1)])
    labels = most_likely(arrays_onto(one_hot.astype(np.float32), case.grid, grid))
    return PreparedBrain(case.id, arrays_onto(case.image, case.grid, grid), labels, grid)


def training_spacing(config: BrainConfig, cases: list[PreparedBrain]
                     ) -> tuple[float, float, float] | str:
    """What a training run reads at: :data:`MEDIAN` resolved over its training cases'
    spacings (LPS axis order), three numbers or :data:`NATIVE` as given."""
    if config.spacing_mm != MEDIAN:
        return config.spacing_mm
    return median_spacing([case.grid.GetSpacing() for case in cases])


def complete(cases: list[PreparedBrain]) -> list[PreparedBrain]:
    """The cases that have every sequence."""
    return [c for c in cases if c.present.all()]


def drop_sequences(present: np.ndarray, probability: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """Leave one random sequence out with ``probability`` (never the last one present)."""
    kept = present.copy()
    if rng.random() < probability and kept.sum() > 1:
        kept[rng.choice(np.flatnonzero(kept))] = False
    return kept


class SliceSet(TorchDataset):
    """Random slices of one orientation; half of them cut through the tumour, so that every
    batch holds the tumour classes the batch weighting assumes. With ``sequence``, slices of
    that sequence alone (a subnetwork's pretraining)."""

    def __init__(self, cases: list[PreparedBrain], orientation: str, length: int,
                 dropout: float, seed: int, sequence: int | None = None):
        self.cases, self.orientation, self.length = cases, orientation, length
        self.dropout, self.seed, self.sequence = dropout, seed, sequence
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
        self.tumour_slices = [np.flatnonzero(np.moveaxis(c.labels, axis, 0).reshape(
            c.labels.shape[axis], -1).any(axis=1)) for c in cases]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int):
        rng = np.random.default_rng([self.seed, item, int(torch.randint(0, 2**31 - 1, ()))])
        index = int(rng.integers(len(self.cases)))
        case = self.cases[index]
        image = to_slices(case.image, self.orientation)
        labels = to_slices(case.labels[None], self.orientation)
        tumour = self.tumour_slices[index]
        k = int(rng.choice(tumour)) if len(tumour) and rng.random() < 0.5 else \
            int(rng.integers(len(image)))
        y = torch.from_numpy(np.ascontiguousarray(labels[k, 0]).astype(np.int64))
        if self.sequence is not None:
            x = image[k, self.sequence:self.sequence + 1]
            return torch.from_numpy(np.ascontiguousarray(x, np.float32)), y
        present = drop_sequences(case.present, self.dropout, rng)
        x = image[k] * present[:, None, None]
        return (torch.from_numpy(np.ascontiguousarray(x, np.float32)),
                y, torch.from_numpy(present))


def pad_batch(x: torch.Tensor, y: torch.Tensor, multiple: int):
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return (torch.nn.functional.pad(x, (0, pw, 0, ph)),
            torch.nn.functional.pad(y, (0, pw, 0, ph)))


def step_2d(config: BrainConfig):
    sequences = len(SEQUENCES)
    sub_weight = (1 - config.main_weight) / (sequences + 1)

    def step(network: Brain2D, batch, device: str):
        x, y, present = (t.to(device) for t in batch)
        x, y = pad_batch(x, y, 2 ** unwrap(network).levels)
        total = 0.0
        for chunk in torch.tensor_split(torch.arange(len(x)), config.batches_per_iteration_2d):
            if len(chunk) == 0:
                continue
            scores, auxiliary = network(x[chunk], present[chunk], auxiliary=True)
            loss = config.main_weight * batch_weighted_cross_entropy(
                scores, y[chunk], config.class_targets_2d)
            for k, aux in enumerate(auxiliary):
                keep = present[chunk, k] if k < sequences else \
                    torch.ones(len(chunk), dtype=torch.bool, device=device)
                if keep.any():
                    loss = loss + sub_weight * batch_weighted_cross_entropy(
                        aux[keep], y[chunk][keep], config.class_targets_2d)
            total = total + loss
        return total, len(x)

    return step


def step_pretrain(config: BrainConfig):
    """A subnetwork's pretraining loss: its auxiliary layer's batch-weighted cross-entropy
    (eq. 2, the 2D class targets), N batches summed per iteration."""
    def step(network: SubnetworkPretraining, batch, device: str):
        x, y = (t.to(device) for t in batch)
        x, y = pad_batch(x, y, 2 ** unwrap(network).levels)
        total = 0.0
        for chunk in torch.tensor_split(torch.arange(len(x)), config.batches_per_iteration_2d):
            if len(chunk):
                total = total + batch_weighted_cross_entropy(network(x[chunk]), y[chunk],
                                                             config.class_targets_2d)
        return total, len(x)

    return step


class PatchSet(TorchDataset):
    """Random 3D patches (image and one 2D model kind's features), half of them centred in
    the tumour."""

    def __init__(self, cases: list[PreparedBrain], patch: int, length: int, dropout: float,
                 seed: int, kind: str):
        self.cases, self.patch, self.length = cases, patch, length
        self.dropout, self.seed, self.kind = dropout, seed, kind
        self.tumour = [np.argwhere(c.labels > 0) for c in cases]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int):
        rng = np.random.default_rng([self.seed, item, int(torch.randint(0, 2**31 - 1, ()))])
        index = int(rng.integers(len(self.cases)))
        case, tumour = self.cases[index], self.tumour[index]
        shape = np.array(case.labels.shape)
        centre = tumour[rng.integers(len(tumour))] if len(tumour) and rng.random() < 0.5 \
            else np.array([rng.integers(s) for s in shape])
        size = np.minimum(self.patch, shape)
        start = np.clip(centre - size // 2, 0, shape - size)
        box = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size, strict=True))
        present = drop_sequences(case.present, self.dropout, rng)
        image = case.image[(slice(None), *box)] * present[:, None, None, None]
        features = case.features[self.kind][(slice(None), *box)]
        return (torch.from_numpy(np.ascontiguousarray(image, np.float32)),
                torch.from_numpy(np.ascontiguousarray(features, np.float32)),
                torch.from_numpy(case.labels[box].astype(np.int64)))


def step_3d(config: BrainConfig):
    def step(network: Brain3D, batch, device: str):
        image, features, y = (t.to(device) for t in batch)
        total = 0.0
        for chunk in torch.tensor_split(torch.arange(len(image)),
                                        config.batches_per_iteration_3d):
            if len(chunk):
                total = total + batch_weighted_cross_entropy(
                    network(image[chunk], features[chunk]), y[chunk], config.class_targets_3d)
        return total, len(image)

    return step


def optimiser(config: BrainConfig):
    return (lambda parameters: NormalisedSGD(parameters, config.learning_rate,
                                             config.momentum),
            lambda optimizer: LossPlateauHalving(optimizer, config.learning_rate_min,
                                                 config.halving_period, config.d_loss))


def _metadata(config: BrainConfig, architecture: str, args: dict, dataset: Dataset,
              split: dict[str, list[str]], statement: ModelStatement, stage: str
              ) -> ModelMetadata:
    return ModelMetadata(
        task=TASK.name, architecture=architecture, architecture_args=args,
        inputs=list(SEQUENCES),
        preprocessing={"intensity_constant": config.intensity_constant, "orientation": "LPS",
                       "spacing_mm": config.spacing_mm if isinstance(config.spacing_mm, str)
                       else list(config.spacing_mm)},
        outputs={"segments": [s.name for s in TASK.segments], "stage": stage,
                 "vote_thresholds": list(config.vote_thresholds)},
        provenance={"dataset": dataset.provenance(TASK.reference_role, **split),
                    "brain_config": config.as_dict()},
        **statement.fields())


def _run(stage: str, make_model, step, data, val_data, iterations: int, batch: int,
         config: BrainConfig, output: Path, metadata: ModelMetadata, device: str, resume: bool,
         progress, cancel) -> Path:
    make_optimizer, make_scheduler = optimiser(config)
    train(
        make_model=make_model, step=step, make_optimizer=make_optimizer, train_data=data,
        val_data=val_data,
        config=TrainingConfig(max_epochs=max(1, iterations // config.iterations_per_epoch),
                              batch_size=batch, patience=10**6, seed=config.seed),
        output=output / stage, metadata=metadata, device=device, resume=resume,
        make_scheduler=make_scheduler, progress=progress, cancel=cancel)
    # every rank gets the file rank 0 wrote (the loop waits for it): the next stage reads it
    return output / stage / MODEL_FILE


def split_cases(dataset: Dataset, config: BrainConfig) -> tuple[list[Case], list[Case]]:
    rng = np.random.default_rng(config.seed)
    patients = sorted({c.patient for c in dataset.cases})
    rng.shuffle(patients)
    n_val = max(1, round(config.validation_fraction * len(patients))) if len(patients) > 1 \
        else 0
    held = set(patients[:n_val])
    return ([c for c in dataset.cases if c.patient not in held],
            [c for c in dataset.cases if c.patient in held])


def train_brain(data: Dataset, output: Path, config: BrainConfig | None = None,
                device: str = "cpu", resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> Path:
    """Run ``config.stage`` (or all stages) on a data set already read; returns the last file
    written (the ensemble for 'all' and '2d3d')."""
    config = config or BrainConfig()
    stage = config.stage
    output = Path(output)
    train_cases, val_cases = split_cases(data, config)
    split = {"train": [c.id for c in train_cases], "validation": [c.id for c in val_cases]}
    cache = output / "prepared"
    prepared = []
    for index, case in enumerate(train_cases + val_cases):
        check_cancelled(cancel)
        report(progress, "Preparing volumes", index, len(data.cases), message=case.id)
        prepared.append(prepare_case(case, config, cache))
    # every case read at one spacing, which the model files fix for their runs
    config = replace(config, spacing_mm=training_spacing(config, prepared[:len(train_cases)]))
    prepared = [at_spacing(case, config.spacing_mm) for case in prepared]
    training, validation = prepared[:len(train_cases)], prepared[len(train_cases):]
    if not complete(training):
        raise InputError("--dataset", "no training case has all four sequences: the 2D "
                         "models' main part and the 2D-3D members train on complete cases "
                         "(paper 004, section 3.2); cases with one missing only pretrain the "
                         "subnetworks")
    incomplete = [c.id for c in training if not c.present.all()]
    pretrain = config.pretrain_subnetworks == "on" or \
        (config.pretrain_subnetworks == "auto" and bool(incomplete))
    output.mkdir(parents=True, exist_ok=True)
    (output / "split.json").write_text(json.dumps(
        {**split, "incomplete": incomplete, "pretrained_subnetworks": pretrain}, indent=2)
        + "\n", encoding="utf-8")
    last = None
    per_iteration_2d = config.batches_per_iteration_2d * config.batch_size_2d
    for orientation in ORIENTATIONS:
        if stage not in (f"2d-{orientation}", "all"):
            continue
        for kind in config.kinds_2d:
            name = f"2d-{orientation}-{kind}"
            pretrained = pretrain_subnetworks(
                data, training, validation, split, config, orientation, kind, output, device,
                resume, statement, progress, cancel) if pretrain else {}
            args = {"sequences": len(SEQUENCES), "width": config.width_2d,
                    "subnetwork_kind": kind, "levels": config.levels_2d}
            last = _run(
                name, lambda args=args, pretrained=pretrained: model_2d(args, pretrained),
                step_2d(config),
                SliceSet(complete(training), orientation,
                         config.iterations_per_epoch * per_iteration_2d,
                         config.sequence_dropout, config.seed),
                SliceSet(complete(validation), orientation, per_iteration_2d, 0.0,
                         config.seed + 1) if complete(validation) else None,
                config.iterations_2d, per_iteration_2d, config, output,
                _metadata(config, "brain-2d", args, data, split, statement, name),
                device, resume, progress, cancel)
    if stage in ("2d3d", "all"):
        last = train_members(data, complete(training), complete(validation), split, config,
                             output, device, resume, statement, progress, cancel)
    return last


def model_2d(args: dict, pretrained: dict[int, Path]) -> Brain2D:
    """A 2D model whose sequences' subnetworks start from their pretrained weights."""
    network = Brain2D(**args)
    for index, path in pretrained.items():
        subnet, _ = load_network(path, TASK.name)
        network.load_subnetwork(index, subnet)
    return network


def pretrain_subnetworks(data: Dataset, training: list[PreparedBrain],
                         validation: list[PreparedBrain], split: dict, config: BrainConfig,
                         orientation: str, kind: str, output: Path, device: str, resume: bool,
                         statement: ModelStatement, progress, cancel) -> dict[int, Path]:
    """Each sequence's subnetwork (and auxiliary layer) of one 2D model, trained alone on the
    slices of the cases that have that sequence (Table 2's "pretrained subnetworks"); returns
    the model file of each, by sequence index. The joint subnetwork reads every sequence and
    is not pretrained."""
    per_iteration = config.batches_per_iteration_2d * config.batch_size_2d
    files = {}
    for index, sequence in enumerate(SEQUENCES):
        having = [c for c in training if c.present[index]]
        if not having:
            continue
        held = [c for c in validation if c.present[index]]
        name = f"2d-{orientation}-{kind}-pretrain-{sequence}"
        args = {"width": config.width_2d, "subnetwork_kind": kind}
        files[index] = _run(
            name, lambda args=args: SubnetworkPretraining(**args), step_pretrain(config),
            SliceSet(having, orientation, config.iterations_per_epoch * per_iteration, 0.0,
                     config.seed, sequence=index),
            SliceSet(held, orientation, per_iteration, 0.0, config.seed + 1, sequence=index)
            if held else None,
            config.iterations_pretrain, per_iteration, config, output,
            _metadata(config, "brain-2d-subnetwork", args, data, split, statement,
                      name), device, resume, progress, cancel)
    return files


def attach_features(cases: list[PreparedBrain], kind: str, nets2d: dict, models: list[Path],
                    cache: Path, device: str, cancel: CancelToken | None) -> None:
    """The 2D models' scores of every case, computed once and kept next to the cases (named
    after the model files, so retrained 2D models are not served stale features)."""
    digest = hashlib.sha256("".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                    for p in models).encode()).hexdigest()[:12]
    for case in cases:
        path = cache / f"{case.id}.features-{digest}.npy"  # float16: half the disk, enough
        if not path.exists():
            features = features_2d(nets2d, case.image, case.present, device, cancel=cancel)
            with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as stream:
                np.save(stream, features.astype(np.float16))
        case.features[kind] = np.load(path)


def check_spacing(path: Path, metadata: ModelMetadata, config: BrainConfig) -> None:
    """A 2D model read at another spacing than this run's would give the members features of
    another scale: refused, naming both (a 2D stage trained with other cases or settings)."""
    recorded = parse_spacing(metadata.preprocessing.get("spacing_mm", NATIVE), median=True)
    if recorded != config.spacing_mm:
        raise InputError(str(path), f"was trained at spacing_mm {recorded}, this run reads "
                         f"at {config.spacing_mm}: train the 2D stages again with the same "
                         "cases and spacing_mm")


def train_members(data: Dataset, training: list[PreparedBrain], validation: list[PreparedBrain],
                  split: dict, config: BrainConfig, output: Path, device: str, resume: bool,
                  statement: ModelStatement, progress, cancel) -> Path:
    nets2d: dict[str, dict] = {}
    for kind_index, kind in enumerate(config.kinds_2d):
        nets2d[kind], paths = {}, []
        for orientation in ORIENTATIONS:
            path = output / f"2d-{orientation}-{kind}" / MODEL_FILE
            if not path.is_file():
                raise InputError(str(path), "is missing: train the 2D stages first")
            nets2d[kind][orientation], metadata = load_network(path, TASK.name, device)
            check_spacing(path, metadata, config)
            paths.append(path)
        report(progress, "Extracting 2D features", kind_index, len(config.kinds_2d),
               message=kind)
        attach_features(training + validation, kind, nets2d[kind], paths, output / "prepared",
                        device, cancel)
    per_iteration = config.batches_per_iteration_3d * config.batch_size_3d
    members = []
    for import_at, kind in config.member_specs:
        args = {"sequences": len(SEQUENCES), "width": config.width_3d,
                "levels": config.levels_3d, "import_at": import_at, "norm": config.norm_3d}
        name = f"3d-{import_at}-{kind}"
        path = _run(
            name, lambda args=args: brain_3d(**args), step_3d(config),
            PatchSet(training, config.patch, config.iterations_per_epoch * per_iteration,
                     config.sequence_dropout, config.seed, kind),
            PatchSet(validation, config.patch, per_iteration, 0.0, config.seed + 1, kind)
            if validation else None,
            config.iterations_3d, per_iteration, config, output,
            _metadata(config, "brain-3d", args, data, split, statement, name),
            device, resume, progress, cancel)
        members.append(({**args, "features_from": kind}, path))
    ensemble = output / MODEL_FILE
    if is_main_process():
        assemble(nets2d, members, config, data, split, ensemble, statement)
    wait_for_main()
    return ensemble


def assemble(nets2d: dict, members: list, config: BrainConfig, data: Dataset, split: dict,
             path: Path, statement: ModelStatement) -> Path:
    """One ensemble file from the stage files: the 2D models under their kind
    (``nets2d.unet.axial``), each member with the kind whose features it reads."""
    tensors = {}
    for kind, orientations in nets2d.items():
        for orientation, net in orientations.items():
            tensors.update({f"nets2d.{kind}.{orientation}.{k}": v
                            for k, v in net.state_dict().items()})
    member_args = []
    for index, (args, member_path) in enumerate(members):
        net, _ = load_network(member_path, TASK.name)
        tensors.update({f"nets3d.{index}.{k}": v for k, v in net.state_dict().items()})
        member_args.append({k: v for k, v in args.items() if k != "sequences"})
    args = {"sequences": len(SEQUENCES), "width_2d": config.width_2d,
            "subnetwork_kinds": list(nets2d), "levels_2d": config.levels_2d,
            "members": member_args}
    metadata = _metadata(config, "brain-ensemble", args, data, split, statement,
                         "ensemble")
    return save_model(path, tensors, metadata, overwrite=True)

