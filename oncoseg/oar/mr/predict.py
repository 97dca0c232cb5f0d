"""GI-tract organs on one abdominal MR: slice stacks through the FCN, sigmoid maps back on the
scan's own grid, the model's tuned threshold, and (two-stage models) the slice gate."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.device import inference_network, to_channels_last
from oncoseg.geometry import image_like, resample_to_reference
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.modelfile import DEMO_NOTE, model_summary
from oncoseg.oar.mr.config import OarMrConfig
from oncoseg.oar.mr.preprocessing import check_mr, network_view, scale_scan, stacks, working_volume
from oncoseg.oar.mr.task import GI_SEGMENTS, OAR_MR
from oncoseg.orientation import is_clearly_oblique, share_outside, tilt_degrees
from oncoseg.postprocess import most_likely
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report, timed
from oncoseg.slices import resize_slices

# what a model's preprocessing fixes: a network sees its inputs only as it was trained


@dataclass
class OrganMaps:
    """Per organ (GI_SEGMENTS order) on the scan's grid (z, y, x)."""

    probabilities: np.ndarray  # (3, z, y, x) float32 sigmoid outputs
    present: np.ndarray | None  # (3, z) gate probabilities of two-stage models

    def masks(self, threshold: float, gate_threshold: float = 0.5) -> np.ndarray:
        """(3, z, y, x) bool, multi-label: organs may overlap, as the competition's masks do."""
        masks = self.probabilities >= threshold
        if self.present is not None:
            masks &= (self.present >= gate_threshold)[:, :, None, None]
        return masks


def organ_maps(volume: np.ndarray, network: torch.nn.Module, config: OarMrConfig,
               device: str = "cpu", progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> OrganMaps:
    """Sigmoid maps for every slice of a (z, y, x) scan, resized back to its matrix."""
    working = working_volume(scale_scan(volume), config.size)
    depth, height, width = volume.shape
    probabilities = np.zeros((len(GI_SEGMENTS), depth, height, width), np.float32)
    present = None
    for batch, maps, gate in slice_outputs(working, network, config, device, progress, cancel):
        if gate is not None:
            if present is None:
                present = np.zeros((len(GI_SEGMENTS), depth), np.float32)
            present[:, batch] = gate.numpy().T
        probabilities[:, batch] = resize_slices(maps, (height, width)).numpy().transpose(
            1, 0, 2, 3)
    return OrganMaps(probabilities, present)


def slice_outputs(working: torch.Tensor | np.ndarray, network: torch.nn.Module,
                  config: OarMrConfig, device: str = "cpu",
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None
                  ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """For each batch of slices of a working volume (z, S, S), in order: the slice numbers,
    the sigmoid maps (B, organs, S, S) and, for two-stage models, the gate's organ-presence
    probabilities (B, organs); on the CPU. Prediction and the threshold search share it."""
    depth = working.shape[0]
    network = inference_network(network.eval(), 2, device)  # with channels-last inputs
    for start in range(0, depth, config.inference_batch):
        check_cancelled(cancel)
        report(progress, "Segmenting", start, depth)
        batch = list(range(start, min(start + config.inference_batch, depth)))
        with torch.inference_mode():
            output = network(to_channels_last(stacks(
                working, batch, config.context, config.context_stride, config.mean,
                config.std).to(device)))
            gate = None
            if isinstance(output, tuple):
                output, gate = output
                gate = torch.sigmoid(gate).float().cpu()
            maps = torch.sigmoid(output).float().cpu()
        yield batch, maps, gate
    report(progress, "Segmenting", depth, depth)


def label_map(masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One label per voxel for the segmentation node: where organs overlap, the most probable
    one (the multi-label masks themselves are what evaluation scores)."""
    best = most_likely(np.where(masks, probabilities, -1.0))
    return np.where(masks.any(axis=0), best + 1, 0).astype(np.uint8)


def resliced_note(given: sitk.Image, view: sitk.Image) -> list[str]:
    """What reslicing an oblique scan upright did, where it did: the reader should know that
    the result was computed on other voxels, and which part of the scan it cannot cover."""
    if not is_clearly_oblique(given):
        return []
    outside = share_outside(given, view)
    return [f"the MR is tilted by {tilt_degrees(given):.1f} degrees from the body's axes: it was "
            f"resliced upright (the GI model only saw upright axial slices) keeping its "
            f"{view.GetSize()[0]} x {view.GetSize()[1]} matrix"
            + (f"; {outside:.1%} of its voxels, the tilted slab's corners, lie outside and get "
               "no organ" if outside > 0 else "")]


def predict(prepared: Prepared, images: Mapping[str, sitk.Image], context: RunContext,
            hints: Hints) -> Prediction:
    """Stomach, small and large bowel on an abdominal MR volume or a Kaggle scans folder, with
    the model and settings ``prepared`` holds (its tuned threshold unless overridden)."""
    OAR_MR.check_images(images)
    image = network_view(images["mr"])
    check_mr(image)
    timings: dict[str, float] = {}
    settings, metadata = prepared.settings, prepared.model.metadata

    with timed(timings, "inference"):
        maps = organ_maps(sitk.GetArrayFromImage(image), prepared.network, settings,
                          context.device, context.progress, context.cancel)
    check_cancelled(context.cancel)

    with timed(timings, "postprocess"):
        masks = maps.masks(settings.threshold, settings.gate_threshold)
        labels = image_like(label_map(masks, maps.probabilities), image)
        probabilities = {}
        if settings.probabilities:
            for index, spec in enumerate(GI_SEGMENTS):
                probabilities[spec.name] = image_like(maps.probabilities[index], image)
    messages = resliced_note(images["mr"], image)
    if metadata.demo:
        messages.append(DEMO_NOTE)
    prediction = Prediction(
        task=OAR_MR.name, model=model_summary(prepared.model.path, metadata),
        images={"mr": image}, display_role="mr", segments=GI_SEGMENTS, labels=labels,
        probabilities=probabilities, timings=timings,
        details={"config": settings.as_dict(), "threshold": settings.threshold,
                 "two_stage": maps.present is not None,
                 "overlapping_voxels": int(np.count_nonzero(masks.sum(axis=0) > 1))},
        messages=messages).onto_grid(images["mr"])
    if is_clearly_oblique(images["mr"]):  # resliced: the labels come from the maps there
        prediction = replace(prediction, labels=labels_on_scan(
            maps, image, images["mr"], settings.threshold, settings.gate_threshold))
    return prediction


def labels_on_scan(maps: OrganMaps, view: sitk.Image, scan: sitk.Image, threshold: float,
                   gate_threshold: float = 0.5) -> sitk.Image:
    """The label map on an oblique scan's own grid from the organ maps of its upright
    reslice (``view``) resampled there linearly and thresholded as on the network's grid
    (slices a two-stage model's gate turned off count as no organ), instead of the upright
    label map by nearest neighbour: the labels then agree with the maps written beside them
    and follow them between the resliced voxels (four GI phantoms tilted by 20 degrees,
    against their truth: stomach +0.005 to +0.012 Dice, small bowel +0.007 to +0.010, large
    bowel +0.012 to +0.024; docs/RESULTS.md)."""
    organs = maps.probabilities
    if maps.present is not None:
        organs = organs * (maps.present >= gate_threshold)[:, :, None, None]
    on_scan = np.stack([sitk.GetArrayFromImage(resample_to_reference(
        image_like(organ, view), scan, "linear")) for organ in organs])
    return image_like(label_map(on_scan >= threshold, on_scan), scan)
