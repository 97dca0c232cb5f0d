"""One rectal case: register, standardise, every voxel's tumour probability, the candidates."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from oncoseg.geometry import image_like
from oncoseg.io.diffusion import split_dwi_input
from oncoseg.method import Hints, Prepared, RunContext
from oncoseg.modelfile import DEMO_NOTE, model_summary
from oncoseg.orientation import canonical_images
from oncoseg.prediction import Prediction
from oncoseg.progress import check_cancelled, timed
from oncoseg.rectal.candidates import candidates_from_probability
from oncoseg.rectal.dense import probability_on
from oncoseg.rectal.preprocessing import REFERENCE, prepare
from oncoseg.rectal.spacing import in_plane_grid, model_in_plane_mm
from oncoseg.rectal.spacing import note as spacing_note
from oncoseg.rectal.task import TASK, TUMOUR, model_high_b


def predict(prepared: Prepared, images: Mapping[str, sitk.Image], context: RunContext,
            hints: Hints) -> Prediction:
    """Register, standardise, compute every voxel's probability, pick the tumour component
    (the largest, every one, or the one at ``hints.seed_lps_mm``)."""
    settings, metadata = prepared.settings, prepared.model.metadata
    seed = hints.seed_lps_mm
    timings: dict[str, float] = {}
    # 'dwi' (every b-value in one series) becomes dwi_b0 + dwi_b1000, with a note saying which
    images, dwi = split_dwi_input(images, model_high_b(metadata))

    with timed(timings, "preprocess"):
        ready = prepare(canonical_images(images), settings.registration, context.progress,
                        context.cancel, context.child_python)

    in_plane = model_in_plane_mm(settings.in_plane_mm, metadata.provenance)
    with timed(timings, "inference"):
        probability = probability_on(prepared.network, ready.channels, ready.reference,
                                     in_plane, context.device, context.progress,
                                     context.cancel)
    check_cancelled(context.cancel)

    with timed(timings, "postprocess"):
        reference = ready.reference
        probability_image, candidates = candidates_from_probability(probability, reference,
                                                                    settings, seed)
        labels = image_like(candidates.mask().astype(np.uint8) * TUMOUR.label, reference)

    messages = [DEMO_NOTE] if metadata.demo else []
    messages += dwi.messages if dwi else []
    messages += ready.messages
    if in_plane_grid(ready.reference, in_plane) is not None:
        messages.append(spacing_note(ready.reference, in_plane))
    if not candidates.components:
        messages.append(f"no voxel reached p >= {settings.threshold}: the segmentation is empty")
    elif len(candidates.components) > 1:
        rule = settings.keep if seed is None else "seed point"
        messages.append(f"{len(candidates.components)} candidate components; kept "
                        f"{len(candidates.selected)} ({rule}); all are listed in result.json")
    return Prediction(
        task=TASK.name,
        model=model_summary(prepared.model.path, metadata),
        images=ready.images, display_role="t2w", segments=TASK.segments, labels=labels,
        probabilities={TUMOUR.name: probability_image}, timings=timings, extra=candidates,
        details={"config": settings.as_dict(), "registration": ready.registration,
                 "candidates": candidates.as_dicts(), "in_plane_mm": in_plane,
                 "seed_lps_mm": list(seed) if seed is not None else None,
                 "dwi": dwi.details if dwi else None},
        messages=messages).onto_grid(images[REFERENCE])
