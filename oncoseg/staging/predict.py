"""T2 vs T3 on one T2w volume: P(T3) (calibrated when the model holds a calibration) with its
decision threshold, and a score per slice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.device import inference_network, to_channels_last
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.modelfile import DEMO_NOTE, model_summary
from oncoseg.orientation import to_canonical
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, check_cancelled, report, timed
from oncoseg.staging.augment import TEST_TIME, augment
from oncoseg.staging.calibration import Calibration
from oncoseg.staging.config import StagingConfig
from oncoseg.staging.preprocessing import prepare_volume
from oncoseg.staging.task import TASK


@dataclass(frozen=True)
class StagingScores:
    """What a staging run found, typed: the stage at the model's threshold, P(T3) (calibrated
    when the model file holds a calibration, else the network's own sigmoid: ``calibration``
    says which), and each axial slice's score with its centre (LPS mm) for a front end's plot
    and jump. Slice scores are the slice head's sigmoid: never calibrated."""

    stage: str
    p_t3: float
    threshold: float
    slice_p_t3: tuple[float, ...]
    slice_centres_lps_mm: tuple[tuple[float, float, float], ...]
    roi_source: str  # where the crop came from: a box, a mask, or the automatic square
    calibrated: bool = False
    calibration: str = "uncalibrated"  # how P(T3) was calibrated, in words


@dataclass(frozen=True)
class VolumeScores:
    """One volume through the network: the mean sigmoid and the mean logit of the volume
    score over the test-time passes, and the mean slice-wise P(T3)."""

    p_t3: float  # mean over passes of sigmoid(logit): the uncalibrated P(T3)
    logit: float  # mean over passes of the logit: what a calibration maps
    slice_p_t3: np.ndarray


TTA_SEED = 20250  # test-time augmentation is random but the same for every run
UNCALIBRATED_NOTE = ("P(T3) is uncalibrated (the network's own score, not a probability): this "
                     "model file holds no calibration; `oncoseg train staging --dataset DATA "
                     "--output OUT --set calibrate_only=MODEL` fits one on labelled cases")


def volume_scores(array: np.ndarray, network: torch.nn.Module, config: StagingConfig,
                  device: str = "cpu", cancel: CancelToken | None = None) -> VolumeScores:
    """The volume as given and ``tta - 1`` mildly moved and flipped copies (test-time
    augmentation) through the network; their volume and slice scores averaged."""
    volume = torch.from_numpy(np.asarray(array, np.float32))
    generator = torch.Generator().manual_seed(TTA_SEED)
    logits, slice_p = [], []
    network = inference_network(network.eval(), 3, device)  # with channels-last inputs
    with torch.inference_mode():
        for index in range(max(config.tta, 1)):
            check_cancelled(cancel)
            shown = volume if index == 0 else augment(volume, TEST_TIME, generator)
            out = network(to_channels_last(shown[None, None].to(device)))
            logits.append(float(out["volume_logit"][0]))
            slice_p.append(torch.sigmoid(out["slice_logits"])[0].cpu().numpy())
    p_t3 = float(np.mean([float(torch.sigmoid(torch.tensor(z))) for z in logits]))
    return VolumeScores(p_t3, float(np.mean(logits)), np.mean(slice_p, axis=0))


def stage_probabilities(array: np.ndarray, network: torch.nn.Module, config: StagingConfig,
                        device: str = "cpu", cancel: CancelToken | None = None
                        ) -> tuple[float, np.ndarray]:
    """The uncalibrated P(T3) and the slice-wise P(T3), averaged over the volume as given and
    ``tta - 1`` mildly moved and flipped copies (test-time augmentation)."""
    scores = volume_scores(array, network, config, device, cancel)
    return scores.p_t3, scores.slice_p_t3


def probability(scores: VolumeScores, calibration: Calibration | None) -> float:
    """P(T3): the calibration applied to the mean logit, or without one the mean sigmoid (as
    every model before calibration existed)."""
    return float(calibration.probability(scores.logit)) if calibration else scores.p_t3


def slice_centres(image: sitk.Image) -> list[list[float]]:
    """The centre (LPS, mm) of each axial slice the network read, in its order: slice scores
    point at places, not at indices of a storage order."""
    x, y = (image.GetSize()[0] - 1) / 2, (image.GetSize()[1] - 1) / 2
    return [[round(v, 3) for v in image.TransformContinuousIndexToPhysicalPoint((x, y, k))]
            for k in range(image.GetSize()[2])]


def crop_corners(image: sitk.Image, crop: tuple[int, int, int, int]) -> list[list[float]]:
    """Two opposite corners (LPS, mm; voxel edges, on the first slice) of the x-y crop the
    network read: ``crop_voxels`` count voxels of the canonical grid, these place the box on
    any grid (the overview draws it on a coarser copy of a large T2w)."""
    x0, x1, y0, y1 = crop
    return [[round(v, 3) for v in image.TransformContinuousIndexToPhysicalPoint((x, y, 0.0))]
            for x, y in ((x0 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5))]


def predict(prepared: Prepared, images: Mapping[str, sitk.Image], context: RunContext,
            hints: Hints) -> Prediction:
    """P(T3), the stage at the model's threshold, and slice-wise scores; the crop is the box
    ``hints.roi_lps_mm``, the ``roi`` mask, or (neither given) a centred square, said so."""
    TASK.check_images(images)
    image = to_canonical(images["t2w"])
    settings, metadata = prepared.settings, prepared.model.metadata
    progress, cancel = context.progress, context.cancel
    timings: dict[str, float] = {}

    with timed(timings, "preprocess"):
        report(progress, "Preparing (N4, crop, resize)", 0, 2)
        volume = prepare_volume(image, settings, roi_box=hints.roi_lps_mm,
                                roi_mask=images.get("roi"))
    check_cancelled(cancel)

    with timed(timings, "inference"):
        report(progress, "Staging", 1, 2)
        calibration = Calibration.from_outputs(metadata.outputs, str(prepared.model.path))
        scores = volume_scores(volume.array, prepared.network, settings, context.device, cancel)
        p_t3 = probability(scores, calibration)
    report(progress, "Staging", 2, 2)
    stage = "T3" if p_t3 >= settings.threshold else "T2"
    messages = list(volume.messages)
    if calibration is None:
        messages.append(UNCALIBRATED_NOTE)
    elif calibration.tta != max(settings.tta, 1):
        messages.append(f"the calibration was fitted with {calibration.tta} test-time passes "
                        f"and this run made {max(settings.tta, 1)}: P(T3) may be less well "
                        "calibrated")
    if metadata.demo:
        messages.append(DEMO_NOTE)
    x0, x1, y0, y1 = volume.crop
    extra = StagingScores(stage, p_t3, settings.threshold,
                          tuple(round(float(v), 5) for v in scores.slice_p_t3),
                          tuple(tuple(c) for c in slice_centres(image)), volume.roi_source,
                          calibration is not None,
                          calibration.describe() if calibration else "uncalibrated")
    return Prediction(
        task=TASK.name, model=model_summary(prepared.model.path, metadata),
        images={"t2w": image}, display_role="t2w",
        class_probabilities={"T2": 1.0 - p_t3, "T3": p_t3}, timings=timings, extra=extra,
        details={"stage": stage, "p_t3": p_t3, "threshold": settings.threshold,
                 "calibrated": calibration is not None,
                 "calibration": calibration.as_dict() if calibration else "uncalibrated",
                 "p_t3_uncalibrated": scores.p_t3, "volume_logit": scores.logit,
                 "slice_p_t3": list(extra.slice_p_t3),
                 "slice_centres_lps_mm": [list(c) for c in extra.slice_centres_lps_mm],
                 "roi": {"source": volume.roi_source,
                         "crop_voxels": {"x": [x0, x1], "y": [y0, y1]},
                         "corners_lps_mm": crop_corners(image, volume.crop)},
                 "tta_passes": max(settings.tta, 1), "config": settings.as_dict()},
        messages=messages).onto_grid(images["t2w"])
