"""The ``rectal`` task's verbs: phantom, predict, train, evaluate, demo."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.io.atomic import refuse_nonempty_folder
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.phantoms.rectal import generate_case
from oncoseg.prediction import Prediction
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.rectal.task import TASK, TUMOUR


def phantom(output: str | os.PathLike[str], cases: int = 4, seed: int = 0,
            layout: str = "native", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, orientation: str = "LPS",
            tilt_degrees: float = 0.0) -> list[Path]:
    """Case folders with t2w, dwi_b0, dwi_b1000, label (on the b0 grid) and case.json."""
    check_phantom_layout(layout, ["native"])
    return generate_dataset(output, cases, seed, generate_case, "rectal", progress, cancel,
                            orientation=orientation, tilt_degrees=tilt_degrees)


def _image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def predict(images: Mapping[str, sitk.Image], model: str | os.PathLike[str] = "demo",
            device: str = "cpu", config: Mapping[str, Any] | None = None,
            seed_lps_mm: Sequence[float] | None = None,
            progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> Prediction:
    """Register, standardise, compute every voxel's probability, pick the tumour component."""
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.modelfile import DEMO_NOTE, model_summary
    from oncoseg.orientation import canonical_images
    from oncoseg.rectal.dense import probability_map
    from oncoseg.rectal.preprocessing import REFERENCE, prepare

    timings: dict[str, float] = {}
    started = time.perf_counter()
    loaded = load_task_model(TASK, model, device)
    network, metadata, path = loaded.network, loaded.metadata, loaded.path
    timings["load_model"] = time.perf_counter() - started
    settings = model_settings(TASK, metadata, config)
    from oncoseg.io.diffusion import split_dwi_input
    from oncoseg.rectal.task import model_high_b

    # 'dwi' (every b-value in one series) becomes dwi_b0 + dwi_b1000, with a note saying which
    images, dwi = split_dwi_input(images, model_high_b(metadata))

    started = time.perf_counter()
    given = images
    prepared = prepare(canonical_images(images), settings.registration, progress, cancel)
    timings["preprocess"] = time.perf_counter() - started

    started = time.perf_counter()
    probability = probability_map(network, prepared.channels, device, progress=progress,
                                  cancel=cancel)
    timings["inference"] = time.perf_counter() - started
    check_cancelled(cancel)

    started = time.perf_counter()
    from oncoseg.rectal.candidates import candidates_from_probability

    reference = prepared.reference
    probability_image, candidates = candidates_from_probability(probability, reference,
                                                                settings, seed_lps_mm)
    labels = _image(candidates.mask().astype(np.uint8) * TUMOUR.label, reference)
    timings["postprocess"] = time.perf_counter() - started

    messages = [DEMO_NOTE] if metadata.demo else []
    messages += dwi.messages if dwi else []
    if not candidates.components:
        messages.append(f"no voxel reached p >= {settings.threshold}: the segmentation is empty")
    elif len(candidates.components) > 1:
        rule = settings.keep if seed_lps_mm is None else "seed point"
        messages.append(f"{len(candidates.components)} candidate components; kept "
                        f"{len(candidates.selected)} ({rule}); all are listed in result.json")
    return Prediction(
        task=TASK.name,
        model=model_summary(path, metadata),
        images=prepared.images, display_role="t2w", segments=TASK.segments, labels=labels,
        probabilities={TUMOUR.name: probability_image}, timings=timings,
        details={"config": settings.as_dict(), "registration": prepared.registration,
                 "candidates": candidates.as_dicts(), "seed_lps_mm": list(seed_lps_mm)
                 if seed_lps_mm is not None else None, "dwi": dwi.details if dwi else None},
        messages=messages).onto_grid(given[REFERENCE])


def train(dataset: str | os.PathLike[str], layout: str = "auto",
          output: str | os.PathLike[str] = "rectal-model", config: Mapping[str, Any] | None = None,
          device: str = "cpu", resume: bool = False, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, description: str = "", demo: bool = False) -> Path:
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import training_settings
    from oncoseg.rectal.training import train_rectal

    settings = training_settings(TASK, config)
    data = read_dataset(dataset, layout, roles=[r.name for r in TASK.inputs])
    if settings.repeats > 1:
        from oncoseg.rectal.stability import train_repeats

        model, _ = train_repeats(data, Path(output), settings, device, resume, description, demo,
                                 progress, cancel)
        return model
    result = train_rectal(data, Path(output), settings, device, resume, description, demo,
                          progress, cancel)
    return result.model_path or Path(output)


def evaluate(dataset: str | os.PathLike[str], layout: str = "auto",
             model: str | os.PathLike[str] = "demo", output: str | os.PathLike[str] = "evaluation",
             device: str = "cpu", overwrite: bool = False, config: Mapping[str, Any] | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """DSC against every reader's label and voxelwise AUC, per case, with a summary."""
    from oncoseg.datasets.layouts import read_dataset
    from oncoseg.method import load_task_model, model_settings
    from oncoseg.rectal.evaluation import evaluate_cases

    data = read_dataset(dataset, layout, roles=[r.name for r in TASK.inputs])
    loaded = load_task_model(TASK, model, device)
    network, metadata, path = loaded.network, loaded.metadata, loaded.path
    settings = model_settings(TASK, metadata, config)
    return evaluate_cases(data, network, str(path), settings, Path(output), device, overwrite,
                          progress, cancel)


def demo(output: str | os.PathLike[str] = "oncoseg-demo", device: str = "cpu",
         overwrite: bool = False, progress: ProgressCallback | None = None,
         cancel: CancelToken | None = None) -> Path:
    """A phantom case the demo model never saw, segmented: the README's first command."""
    import tempfile

    from oncoseg.io.volumes import read_image
    from oncoseg.prediction import write_prediction

    output = Path(output)
    refuse_nonempty_folder(output, overwrite, "--output ")
    with tempfile.TemporaryDirectory(prefix="oncoseg-demo-") as tmp:
        report(progress, "Writing a phantom case", 0, 1)
        [case] = phantom(Path(tmp) / "data", cases=1, seed=DEMO_CASE_SEED)
        paths = {role.name: case / f"{role.name}.nii.gz" for role in TASK.inputs}
        images = {role: read_image(path) for role, path in paths.items()}
        started = time.perf_counter()
        prediction = predict(images, "demo", device, progress=progress, cancel=cancel)
        prediction.timings["total"] = time.perf_counter() - started
        prediction.details["phantom"] = {"seed": DEMO_CASE_SEED,
                                         "note": "generated for this demo; not in the model's "
                                                 "training data"}
        check_cancelled(cancel)
        write_prediction(prediction, output, {r: p.name for r, p in paths.items()},
                         overwrite=overwrite)
    return output


# The demo model trains on phantom seeds 0.. (see docs/DEMO_MODELS.md); the demo case uses
# another seed, so what it shows is a case the model did not see.
DEMO_CASE_SEED = 2026
