"""Pelvic OAR segmentation of one CT: the network's grid (the CT's own voxels, or the working
grid the model file fixes), sliding window, per-organ clean-up, back to the CT grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.body import ct_body
from oncoseg.errors import InputError
from oncoseg.geometry import image_like, voxel_volume_ml
from oncoseg.inference import SlidingWindow
from oncoseg.memory import format_bytes
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.modelfile import DEMO_NOTE, model_summary
from oncoseg.oar.ct.config import OarCtConfig
from oncoseg.oar.ct.preprocessing import (
    AIR_HU,
    EDGE_CONTINUED_MM,
    check_ct,
    hu_window,
    to_working_grid,
    working_grid,
)
from oncoseg.oar.ct.task import CT_SEGMENTS, OAR_CT
from oncoseg.orientation import is_clearly_oblique, tilt_degrees
from oncoseg.postprocess import fill_label_holes, most_likely, piece_sizes
from oncoseg.prediction import Prediction, ResampledMaps
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report, timed
from oncoseg.tiling import Geometry, most_likely_onto, resample_labels_onto

# Five float32 probability maps on a 512 x 512 x 200 CT take 1 GB; on a 1024^3 CT they would take
# 20 GB. Up to this size they are mapped onto the CT grid (one at a time when written:
# ResampledMaps; a front end that shows them all holds them all); beyond, they stay on the
# working grid (the model's resolution, which is all the information they hold) with a note.
FULL_GRID_PROBABILITY_BYTES = 2 << 30
# A piece that clean-up removes from an organ is named in the result from this volume up:
# smaller ones are the noise the step is for.
NOTED_PIECE_ML = 1.0


def segment_ct(image: sitk.Image, network: torch.nn.Module, config: OarCtConfig,
               patch_size: tuple[int, int, int], device: str = "cpu",
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None
               ) -> tuple[np.ndarray, np.ndarray, sitk.Image, list[str]]:
    """(labels, probabilities (K, z, y, x)) on the network's grid, the grid, and run notes.

    The grid is the CT's own (canonical axis order) when ``config.spacing_mm`` is native,
    else the working grid at that spacing; a model file fixes which.

    Organs are kept inside the body (:func:`oncoseg.body.ct_body`): a CT thinner than the
    window, padded with air, or with air around the patient must not get organs in the air."""
    grid = working_grid(image, config.grid_spacing)
    hu = to_working_grid(image, grid)
    check_cancelled(cancel)
    probabilities, notes = organ_probabilities(hu, network, config, patch_size, device,
                                               progress, cancel)
    outside = ~ct_body(hu)
    probabilities[:, outside] = 0.0
    probabilities[0, outside] = 1.0
    labels = most_likely(probabilities)
    if config.keep_largest:
        labels, removed = clean_organs(labels, config.largest_component_organs,
                                       voxel_volume_ml(grid), config.smallest_piece_ml)
        notes = [*removed, *notes]
    return labels, probabilities, grid, notes


def organ_probabilities(hu: np.ndarray, network: torch.nn.Module, config: OarCtConfig,
                        patch_size: tuple[int, int, int], device: str = "cpu",
                        progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> tuple[np.ndarray, list[str]]:
    """The network stage alone: softmax (K, z, y, x) of the HU volume on the network's grid,
    and the window's notes (what bench_network_peak times).

    A volume smaller than the window is padded up to it: in-plane with air (what surrounds a
    patient), along the body's long axis by repeating the end slices (:func:`extend_along_body`).
    On the CPU the network runs as network_inference's copy (oneDNN for every convolution,
    instance norm in channels-last): probabilities equal to 1e-5, not bit for bit."""
    hu, kept = extend_along_body(hu, patch_size[0])
    window = SlidingWindow(window=tuple(patch_size), overlap=config.overlap,
                           batch_size=config.inference_batch, device=device, pad_value=AIR_HU,
                           prepare_network=True)
    probabilities = window(hu[None], network, hu_window(config.hu_low, config.hu_high),
                           finalize=lambda rows: torch.softmax(rows, dim=0),
                           progress=progress, cancel=cancel, stage="Segmenting").numpy()
    if kept != slice(None):
        probabilities = np.ascontiguousarray(probabilities[:, kept])
    return probabilities, window.notes


def extend_along_body(hu: np.ndarray, window: int) -> tuple[np.ndarray, slice]:
    """A CT with fewer slices than the window, its first and last slices repeated up to it, and
    where the CT lies in the result.

    A scan ends where the patient does not: filling the window with air above and below it
    makes a window the model never saw in training (patches are drawn inside the scans), and
    the demo model then finds no organ in a 20-slice CT. Repeated end slices continue the
    anatomy the way the body does along its long axis (axis 0 of the canonical grid). In-plane,
    air is what surrounds a patient, so the sliding window pads there with air."""
    missing = window - hu.shape[0]
    if missing <= 0:
        return hu, slice(None)
    before = missing // 2
    extended = np.pad(hu, ((before, missing - before), (0, 0), (0, 0)), mode="edge")
    return extended, slice(before, before + hu.shape[0])


def labels_on_ct_grid(labels: np.ndarray, probabilities: np.ndarray, grid: sitk.Image,
                      image: sitk.Image, native: bool = False) -> sitk.Image:
    """The network grid's labels brought onto the CT's grid as nnU-Net brings its own back:
    the class maps resampled linearly (with clean-up's decisions written into them:
    :func:`with_decisions`) and the most likely class taken, slab by slab
    (:func:`oncoseg.tiling.most_likely_onto`). The organs' edges then follow the maps between
    the working grid's 3 mm voxels instead of their staircase, and the labels agree with the
    probability maps written beside them (10 unseen phantoms, against nearest neighbour:
    Dice femoral heads +0.003 / +0.009, bladder +0.005, bowel bag +0.003, and their mean
    surface distances 0.04-0.13 mm shorter: docs/RESULTS.md). A network grid of the CT's own voxels
    (``native`` spacing) gives its labels as they are."""
    target = Geometry.of(image)
    if native:  # the CT's voxels in the canonical order: a permutation, nothing between
        return resample_labels_onto(image_like(labels, grid), target)
    chosen = most_likely_onto(with_decisions(probabilities, labels), Geometry.of(grid),
                              target)
    return image_like(chosen, image)


def with_decisions(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The class maps (K, z, y, x) changed where clean-up changed a voxel's label, so that
    the most likely class of every voxel is its label: there the entries of the class the
    maps preferred and of the label are swapped, the label's a step above the other's (so
    no tie lets another class win). The maps themselves are left as the network gave them."""
    preferred = most_likely(probabilities)
    changed = np.nonzero(preferred != labels)
    if not changed[0].size:
        return probabilities
    decided = probabilities.copy()
    was, now = (preferred[changed], *changed), (labels[changed], *changed)
    highest = probabilities[was]
    decided[was] = probabilities[now]
    decided[now] = np.nextafter(highest, np.float32(2.0))
    return decided


def clean_organs(labels: np.ndarray, single_organs: Sequence[str], voxel_ml: float,
                 smallest_piece_ml: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Paper 003's clean-up, safe for a target in two parts, and a note for every piece of
    :data:`NOTED_PIECE_ML` or more that it removed.

    The paper keeps each label's largest 26-connected component "to remove noisy pixels". An
    organ in ``single_organs`` (one piece in every patient) does so. The nodal CTV follows
    the iliac vessels down both sides of the pelvis, joined only above the common iliac
    bifurcation and in front of the sacrum; a scan or a prediction without that bridge holds
    it in two pieces, and the paper's step dropped one side of a radiotherapy target without a
    word (the demo on every unseen phantom: Dice 0.60). Any other organ therefore loses only
    its pieces under ``smallest_piece_ml``, the noise the step is for. Then each organ's holes
    are filled, with background voxels only, so one organ never overwrites another."""
    known = {s.name for s in CT_SEGMENTS}
    unknown = [o for o in single_organs if o not in known]
    if unknown:
        raise InputError("largest_component_organs", f"'{unknown[0]}' is not an organ of the "
                         f"oar-ct task ({', '.join(sorted(known))})")
    cleaned = np.zeros_like(labels)
    notes = []
    for spec in CT_SEGMENTS:
        pieces, sizes = piece_sizes(labels == spec.label, connectivity=26)
        if not sizes.size:
            continue
        volumes = sizes * voxel_ml
        keep = (np.arange(sizes.size) == 0 if spec.name in single_organs
                else volumes >= smallest_piece_ml)
        cleaned[np.concatenate([[False], keep])[pieces]] = spec.label
        removed = volumes[~keep & (volumes >= NOTED_PIECE_ML)]
        if removed.size:
            notes.append(
                f"{spec.name}: {removed.size} separate piece{'s' * (removed.size > 1)} of "
                f"{' / '.join(f'{v:.1f}' for v in removed)} mL removed beside its largest "
                f"({volumes[0]:.1f} mL; paper 003 keeps one piece per organ, "
                "`largest_component_organs`): check that none of it was the organ")
    fill_label_holes(cleaned, [spec.label for spec in CT_SEGMENTS])
    return cleaned, notes


def predict(prepared: Prepared, images: Mapping[str, sitk.Image], context: RunContext,
            hints: Hints) -> Prediction:
    """Femoral heads, bladder, bowel bag and nodal CTV on one CT, with the model and settings
    ``prepared`` holds (read once by the caller, so an evaluation reuses them per case)."""
    OAR_CT.check_images(images)
    image = images["ct"]
    settings, metadata = prepared.settings, prepared.model.metadata
    check_ct(image, spacing_mm=settings.grid_spacing)
    messages: list[str] = []
    timings: dict[str, float] = {}
    progress, cancel = context.progress, context.cancel

    with timed(timings, "inference"):
        patch = tuple(metadata.preprocessing.get("patch_size", settings.patch_size))
        labels, probabilities, grid, notes = segment_ct(image, prepared.network, settings,
                                                        patch, context.device, progress, cancel)
    check_cancelled(cancel)

    with timed(timings, "postprocess"):
        report(progress, "Writing results", 0, 1)
        labels_on_ct = labels_on_ct_grid(labels, probabilities, grid, image,
                                         native=settings.grid_spacing is None)
        maps: Mapping[str, sitk.Image] = {}
        full_grid = probabilities_on_ct_grid(image)
        if settings.probabilities:
            organs = {spec.name: image_like(probabilities[spec.label], grid)
                      for spec in CT_SEGMENTS}
            # on the CT grid, each map is resampled when it is read (written, shown), so the
            # writer holds one full-size float map, not five (790 MB at 512 x 512 x 150)
            maps = ResampledMaps(organs, image, "ct") if full_grid else organs
            if not full_grid:
                messages.append(
                    f"the probability maps are on the model's working grid ("
                    f"{' x '.join(f'{s:g}' for s in grid.GetSpacing())} mm, "
                    f"{' x '.join(map(str, grid.GetSize()))} voxels), not on the CT's "
                    f"{' x '.join(map(str, image.GetSize()))} voxels: there they would take "
                    f"{format_bytes(full_grid_probability_bytes(image))}; viewers place them "
                    "by their own geometry")
    messages.extend(oblique_note(image, grid))
    messages.extend(smaller_than_window(grid, patch))
    if not labels.any():
        messages.append("no organ was found in this CT")
    if metadata.demo:
        messages.append(DEMO_NOTE)
    messages.extend(notes)
    return Prediction(
        task=OAR_CT.name,
        model=model_summary(prepared.model.path, metadata),
        images={"ct": image}, display_role="ct", segments=CT_SEGMENTS,
        labels=labels_on_ct, probabilities=maps, timings=timings,
        details={"config": settings.as_dict(),
                 "working_grid": {"spacing_mm": list(grid.GetSpacing()),
                                  "size": list(grid.GetSize())},
                 "probability_grid": "ct" if full_grid else "working grid"},
        messages=messages)


def oblique_note(image: sitk.Image, grid: sitk.Image) -> list[str]:
    """Where an oblique CT was read on an axis-aligned working grid: the reader should know
    what the network saw beyond the tilted slab's edges."""
    if not (is_clearly_oblique(image) and np.allclose(grid.GetDirection(), np.eye(3).ravel())):
        return []  # upright, or read on its own tilted voxels (a model without a working grid)
    return [f"the CT is tilted by {tilt_degrees(image):.1f} degrees from the body's axes: the "
            f"network read it on an axis-aligned "
            f"{' x '.join(f'{s:g}' for s in grid.GetSpacing())} mm grid covering it, where the "
            f"CT's edge was continued for {EDGE_CONTINUED_MM:g} mm beyond the slab, then air; "
            "only the CT's own voxels get organs"]


def smaller_than_window(grid: sitk.Image, patch: Sequence[int]) -> list[str]:
    """A note where the CT on the network's grid is shorter than the window along some axis:
    the window then holds what training patches (drawn inside the scans) never did, repeated
    end slices or air (:func:`organ_probabilities`), so an organ near the scan's ends can be cut
    or lost without any other sign."""
    size_zyx = grid.GetSize()[::-1]
    short = [f"{n} of the window's {p} voxels along {axis}"
             for axis, n, p in zip("zyx", size_zyx, patch, strict=True) if n < p]
    if not short:
        return []
    filled = []
    if size_zyx[0] < patch[0]:
        filled.append("its first and last slices repeated along z")
    if any(n < p for n, p in zip(size_zyx[1:], patch[1:], strict=True)):
        filled.append(f"air ({AIR_HU:g} HU) in-plane")
    return [f"the CT is smaller than the model's window on its "
            f"{' x '.join(f'{s:g}' for s in grid.GetSpacing())} mm grid ({', '.join(short)}): "
            f"the rest of each window was filled with {' and '.join(filled)}, which the model "
            "never saw in training; organs may be missing or cut: check each one"]


def full_grid_probability_bytes(image: sitk.Image) -> int:
    """What one float32 probability map per organ would take on the CT's own grid."""
    return 4 * len(CT_SEGMENTS) * int(np.prod(image.GetSize(), dtype=np.float64))


def probabilities_on_ct_grid(image: sitk.Image) -> bool:
    """Probability maps are mapped back onto the CT grid while that costs at most
    :data:`FULL_GRID_PROBABILITY_BYTES`; a larger CT keeps them on the working grid."""
    return full_grid_probability_bytes(image) <= FULL_GRID_PROBABILITY_BYTES
