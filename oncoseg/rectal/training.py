"""Training the RectalSeg patch classifier as the paper does.

Cases are split 80/20 by patient; from every case N tumour and N background voxels are drawn
once (RB1 / RB2 / RB3 as :mod:`oncoseg.rectal.sampling` describes) and their in-plane patches
become the training and validation sets. Adadelta (lr 0.001, rho 0.9) minimises cross-entropy
with a small L2 penalty (as weight decay) until the validation cost has not improved by more
than 1e-3 for 5 epochs; the weights of the best epoch are kept. ``network`` picks the paper's
network or the dense-exact variant (:mod:`oncoseg.rectal.network`); the model file names the
architecture it trained.

Two additions the paper lacks, both off for data that does not ask: where a case has its
label's partial volume (``label_fraction`` beside ``label``), each centre's target is the
tumour's share of the voxel instead of its label; ``edge_weighting=voxel-share`` weights the
tumour and RB1 samples to their voxel shares (:func:`oncoseg.rectal.sampling.sample_weights`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from oncoseg.datasets.base import Dataset
from oncoseg.errors import InputError
from oncoseg.intensity import INTENSITY_READING
from oncoseg.modelfile import NO_STATEMENT, ModelMetadata, ModelStatement
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.rectal.cases import PreparedArrays, at_in_plane, prepare_case
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.network import NETWORKS, make_network
from oncoseg.rectal.preprocessing import ROLES
from oncoseg.rectal.sampling import (
    background_regions,
    extract_patches,
    sample_voxels,
    sample_weights,
)
from oncoseg.rectal.spacing import training_in_plane_mm
from oncoseg.rectal.task import TASK
from oncoseg.training import TrainingConfig, TrainingResult, train

CACHE_FOLDER = "prepared"


def case_samples(case: PreparedArrays, config: RectalConfig, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case's patches (n, 3, M, M), centre targets (n,: the label, or its partial volume
    where the case has one) and loss weights (n,: ``edge_weighting``)."""
    if config.label not in case.labels:
        raise InputError(f"case '{case.case_id}'", f"has no '{config.label}' label file "
                         f"(it has: {', '.join(case.labels) or 'none'})")
    tumour = case.labels[config.label]
    if not tumour.any():
        raise InputError(f"case '{case.case_id}'", f"its '{config.label}' file has no tumour "
                         "voxel; the rectal sampling needs one")
    regions = background_regions(tumour, case.channels[ROLES.index("dwi_b1000")],
                                 case.spacing_zyx, config.ring_mm, config.bright_threshold)
    voxels, labels = sample_voxels(regions, config.samples_per_class, rng)
    share = case.fractions.get(config.label)
    targets = labels.astype(np.float32) if share is None else share[tuple(voxels.T)]
    weights = sample_weights(regions, config.samples_per_class, config.edge_weighting)
    return extract_patches(case.channels, voxels, config.patch_size), targets, weights


def sample_set(cases: list[PreparedArrays], config: RectalConfig, seed: int) -> TensorDataset:
    rng = np.random.default_rng(seed)
    parts = [case_samples(case, config, rng) for case in cases]
    return TensorDataset(*(torch.from_numpy(np.concatenate([part[k] for part in parts]))
                           for k in range(3)))


def _step(model: torch.nn.Module, batch, device: str) -> tuple[torch.Tensor, int]:
    """Cross-entropy against the tumour's share at each centre (1 or 0 from a label), each
    sample weighted; with plain labels and 'paper' weights, the paper's cross-entropy."""
    patches, targets, weights = (t.to(device, non_blocking=True) for t in batch)
    logits = model(patches)
    loss = F.cross_entropy(logits, torch.stack([1 - targets, targets], 1), reduction="none")
    return (weights * loss).sum() / weights.sum(), len(targets)


def model_metadata(config: RectalConfig, dataset: Dataset, train_ids: list[str],
                   validation_ids: list[str], statement: ModelStatement = NO_STATEMENT,
                   in_plane_mm: float | str | None = None,
                   partial_volume_cases: int = 0) -> ModelMetadata:
    return ModelMetadata(
        task=TASK.name, architecture=NETWORKS[config.network],
        architecture_args={"in_channels": len(ROLES), "patch_size": config.patch_size},
        inputs=list(ROLES),
        preprocessing={"reference": "dwi_b0", "registration": config.registration,
                       "in_plane_mm": config.in_plane_mm if in_plane_mm is None else in_plane_mm,
                       "standardisation": "z-score per sequence over its own voxels, "
                                          f"{INTENSITY_READING}"},
        outputs={"segments": [s.name for s in TASK.segments]},
        provenance={"dataset": dataset.provenance(TASK.reference_role, train=train_ids,
                                                  validation=validation_ids),
                    "rectal_config": config.as_dict(),
                    # centre targets: the tumour's share of the voxel where a case has it
                    "partial_volume_targets": f"{partial_volume_cases} of {len(train_ids)} "
                                              "training cases"},
        **statement.fields())


def prepare_cases(dataset: Dataset, ids: list[str], config: RectalConfig, cache: Path,
                  progress: ProgressCallback | None, cancel: CancelToken | None
                  ) -> list[PreparedArrays]:
    prepared = []
    for index, case_id in enumerate(ids):
        check_cancelled(cancel)
        report(progress, "Preparing cases", index, len(ids), message=case_id)
        prepared.append(prepare_case(dataset.case(case_id), config.registration, cache, cancel))
    report(progress, "Preparing cases", len(ids), len(ids))
    return prepared


def split_ids(dataset: Dataset, config: RectalConfig, output: Path
              ) -> tuple[list[str], list[str]]:
    train_cases, validation_cases = dataset.split(config.validation_fraction, config.seed,
                                                  save_to=output / "split.json")
    if not validation_cases:
        raise InputError(str(dataset.root), "has one patient only; training needs at least two "
                         "(one for validation)")
    return [c.id for c in train_cases], [c.id for c in validation_cases]


def train_rectal(dataset: Dataset, output: Path, config: RectalConfig, device: str = "cpu",
                 resume: bool = False, statement: ModelStatement = NO_STATEMENT,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 split: tuple[list[str], list[str]] | None = None,
                 cache: Path | None = None) -> TrainingResult:
    """Split, sample, train; the model file lands in ``output/model.safetensors``.

    ``split`` and ``cache`` let repeated trainings share one split and one set of prepared
    cases (the stability analysis)."""
    if config.network not in NETWORKS:
        raise InputError("network", f"'{config.network}' is not one of {', '.join(NETWORKS)}")
    output = Path(output)
    train_ids, validation_ids = split or split_ids(dataset, config, output)
    cache = cache or output / CACHE_FOLDER
    prepared = prepare_cases(dataset, train_ids + validation_ids, config, cache, progress, cancel)
    # every case read at one in-plane spacing, which the model file fixes for its runs
    in_plane = training_in_plane_mm(config.in_plane_mm,
                                    [case.spacing_zyx for case in prepared[:len(train_ids)]])
    prepared = [at_in_plane(case, in_plane) for case in prepared]
    train_set = sample_set(prepared[:len(train_ids)], config, config.seed)
    validation_set = sample_set(prepared[len(train_ids):], config, config.seed + 1)
    shares = sum(config.label in case.fractions for case in prepared[:len(train_ids)])
    metadata = model_metadata(config, dataset, train_ids, validation_ids, statement, in_plane,
                              shares)
    loop = TrainingConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                          patience=config.patience, min_delta=config.min_delta, seed=config.seed)
    return train(
        make_model=lambda: make_network(config.network, len(ROLES), config.patch_size),
        step=_step,
        make_optimizer=lambda parameters: torch.optim.Adadelta(
            parameters, lr=config.learning_rate, rho=config.rho, weight_decay=config.l2),
        train_data=train_set, val_data=validation_set, config=loop, output=output,
        metadata=metadata, device=device, resume=resume, progress=progress, cancel=cancel)
