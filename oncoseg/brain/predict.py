"""Brain tumour segmentation with an ensemble (paper 004): the three 2D models' class scores
(axial, coronal, sagittal slices) become 12 extra channels of every 2D-3D member, whose label
maps are merged by the hierarchical vote. Absent sequences are zeros the networks were
trained to do without; the result says which sequences were used.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from oncoseg.brain.config import ORIENTATIONS, BrainConfig
from oncoseg.brain.network import BrainEnsemble
from oncoseg.brain.preprocessing import (
    BrainVolume,
    back_to_grid,
    from_slices,
    prepare_volume,
    to_slices,
)
from oncoseg.brain.task import TASK
from oncoseg.brain.voting import hierarchical_vote
from oncoseg.device import heap_batch, inference_network, runs_on_cpu, to_channels_last
from oncoseg.inference import SlidingWindow
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.modelfile import DEMO_NOTE, model_summary
from oncoseg.postprocess import most_likely
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report, timed
from oncoseg.spacing import model_spacing
from oncoseg.upsampling import reused_concatenations

SLICE_BATCH = 16  # slices per batch on a GPU
# On the CPU the networks run as network_inference's copy (members 3.3 s -> 1.5 s per stage,
# bench_network_peak): probabilities equal to 1e-5, which moves a few voxels at the vote's
# thresholds (the demo's mean Dice by up to 3e-4 on test seed 4343)
PREPARE = True


def pad_to_multiple(batch: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = batch.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(batch, (0, pw, 0, ph)), (h, w)


def slice_batch(network: torch.nn.Module, size: tuple[int, int], device: str = "cpu") -> int:
    """Slices per batch of a 2D model: on the CPU as many as keep its widest map (the main
    U-Net's last concatenation at full resolution: 3 x the head's input channels, i.e. 6 x the
    width) in one of malloc's reusable heap blocks (:func:`oncoseg.device.heap_batch`; 3 for
    the demo's width 8 on 240 x 240 slices: 40 axial slices in 2.4 s instead of 3.3 s), and
    never more than ``SLICE_BATCH`` (larger batches of small slices were no faster: the brain
    phantom's 2D stage 1.68 s against 1.58-1.61 s); on a GPU ``SLICE_BATCH``."""
    if not runs_on_cpu(device):
        return SLICE_BATCH
    multiple = 2 ** network.levels
    height, width = (n + -n % multiple for n in size)  # as pad_to_multiple pads them
    return min(SLICE_BATCH, heap_batch(3 * network.head.in_channels * height * width * 4))


def scores_2d(network: torch.nn.Module, volume: np.ndarray, present: np.ndarray,
              orientation: str, device: str = "cpu", cancel: CancelToken | None = None
              ) -> np.ndarray:
    """(C, z, y, x) class scores (no softmax) of one 2D model over every slice of its
    orientation."""
    slices = to_slices(volume, orientation)
    multiple = 2 ** network.levels
    step = slice_batch(network, slices.shape[-2:], device)
    mask = torch.as_tensor(present, device=device)
    network = inference_network(network, 2, device, prepare=PREPARE)  # channels-last inputs
    out = []
    with torch.inference_mode():
        for first in range(0, len(slices), step):
            check_cancelled(cancel)
            batch = torch.from_numpy(np.ascontiguousarray(slices[first:first + step]))
            padded, (h, w) = pad_to_multiple(batch.to(device), multiple)
            out.append(network(to_channels_last(padded), mask)[..., :h, :w].float().cpu()
                       .numpy())
    return from_slices(np.concatenate(out), orientation)


def features_2d(nets2d: Mapping[str, torch.nn.Module], image: np.ndarray, present: np.ndarray,
                device: str = "cpu", progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> np.ndarray:
    """(12, z, y, x): the axial, coronal and sagittal models' scores, in that order."""
    parts = []
    for index, orientation in enumerate(ORIENTATIONS):
        report(progress, f"2D models ({orientation})", index, len(ORIENTATIONS))
        parts.append(scores_2d(nets2d[orientation], image, present, orientation, device,
                               cancel))
    return np.concatenate(parts).astype(np.float32)


def member_probabilities(network: torch.nn.Module, image: np.ndarray, features: np.ndarray,
                         config: BrainConfig, device: str = "cpu",
                         cancel: CancelToken | None = None) -> torch.Tensor:
    """(4, z, y, x) softmax of one 2D-3D member, tiled in patches of the configured size; left
    on the GPU when it was summed there, for the vote's argmax and mean."""
    sequences = image.shape[0]
    # channels-last weights: the window converts a Module it is given, not this lambda's
    network = inference_network(network, 3, device, prepare=PREPARE)
    data = torch.from_numpy(np.concatenate([image, features]))
    window = SlidingWindow((config.patch,) * 3, overlap=config.overlap, device=device,
                           batch_size=1, keep_on_device=True)
    with torch.inference_mode():
        return window(data, lambda x: network(x[:, :sequences], x[:, sequences:]),
                      finalize=lambda rows: torch.softmax(rows, 0), cancel=cancel,
                      stage="2D-3D model")


def member_results(ensemble: BrainEnsemble, volume: BrainVolume,
                   features: Mapping[str, np.ndarray], config: BrainConfig, device: str = "cpu",
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None
                   ) -> tuple[list[np.ndarray], torch.Tensor]:
    """Each 2D-3D member's labels (z, y, x) and the sum of their softmax maps (4, z, y, x), on
    the oriented reference grid: read on a working grid, each member's softmax comes back
    onto it (linear) before its labels are chosen, so the vote sees what each member says at
    the reference's voxels. The members share their decoders' concatenation buffers (same
    shapes, one at a time: :func:`oncoseg.upsampling.reused_concatenations`)."""
    members, total = [], None
    with reused_concatenations():
        for index, network in enumerate(ensemble.nets3d):
            report(progress, "2D-3D models", index, len(ensemble.nets3d))
            probabilities = member_probabilities(network, volume.array,
                                                 features[network.features_from], config,
                                                 device, cancel)
            if volume.resampled:
                probabilities = torch.from_numpy(volume.onto_oriented(
                    probabilities.cpu().numpy()))
            members.append(most_likely(probabilities))
            total = probabilities if total is None else total + probabilities
    return members, total


def segment(ensemble: BrainEnsemble, volume: BrainVolume, config: BrainConfig,
            device: str = "cpu", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, timings: dict[str, float] | None = None
            ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(voted labels (z, y, x), mean class probabilities (4, z, y, x), each member's labels),
    on the oriented reference grid; ``timings`` receives the seconds of the 2D and the 2D-3D
    stages. Nothing is labelled outside the skull-stripped brain (where every sequence is
    zero), as BraTS labels are."""
    timings = {} if timings is None else timings
    ensemble.eval()
    with timed(timings, "models_2d"):  # each 2D model kind's features, once
        features = {kind: features_2d(ensemble.models_2d(kind), volume.array, volume.present,
                                      device, progress, cancel)
                    for kind in dict.fromkeys(net.features_from for net in ensemble.nets3d)}
    with timed(timings, "models_2d3d"):
        members, total = member_results(ensemble, volume, features, config, device, progress,
                                        cancel)
        mean = (total / len(ensemble.nets3d)).cpu().numpy()
    with timed(timings, "vote"):
        outside = ~volume.body
        mean[:, outside] = 0.0
        mean[0, outside] = 1.0
        for member in members:
            member[outside] = 0
        labels = hierarchical_vote(members, tuple(config.vote_thresholds))
    return labels, mean, members


def predict(prepared: Prepared, images: Mapping[str, sitk.Image | None], context: RunContext,
            hints: Hints) -> Prediction:
    """Necrotic / non-enhancing core, oedema and enhancing tumour from any of the four
    sequences: the 2D models' scores, every 2D-3D member, the hierarchical vote."""
    settings, metadata, ensemble = prepared.settings, prepared.model.metadata, prepared.network
    progress, cancel = context.progress, context.cancel
    timings: dict[str, float] = {}

    with timed(timings, "preprocess"):
        volume = prepare_volume(images, settings.intensity_constant, settings.dropped,
                                model_spacing(settings.spacing_mm, metadata.provenance))
    check_cancelled(cancel)

    stages: dict[str, float] = {}  # inside inference: in details, not summed twice
    with timed(timings, "inference"):
        labels, probabilities, members = segment(ensemble, volume, settings, context.device,
                                                 progress, cancel, stages)
    report(progress, "Voting", 1, 1)
    maps = {}
    for spec in TASK.segments:
        maps[spec.name] = back_to_grid(probabilities[spec.label].astype(np.float32), volume,
                                       sitk.sitkFloat32)
    messages = list(volume.messages)
    if metadata.demo:
        messages.append(DEMO_NOTE)
    shown = {role: images[role] for role in volume.used}
    return Prediction(
        task=TASK.name, model=model_summary(prepared.model.path, metadata), images=shown,
        display_role=volume.reference_role if "flair" not in shown else "flair",
        segments=TASK.segments, labels=back_to_grid(labels, volume), probabilities=maps,
        timings=timings, messages=messages,
        details={"sequences_used": volume.used, "reference": volume.reference_role,
                 "spacing_mm": [round(v, 4) for v in volume.work.GetSpacing()],
                 "members": [ensemble.member_name(i) for i in range(len(ensemble.nets3d))],
                 "inference_stages_s": {k: round(v, 3) for k, v in stages.items()},
                 "config": settings.as_dict()},
        alternatives={f"member {i + 1} ({ensemble.member_name(i)})": back_to_grid(m, volume)
                      for i, m in enumerate(members)},
    )
