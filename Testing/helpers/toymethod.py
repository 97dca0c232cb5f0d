"""A sixth method that exists only in the tests: the proof that the method contract is enough.

Bright-spot segmentation: a voxel is foreground when its z-score is above a learned offset.
Everything the contract asks for is here, in one module: the task declaration, a network (one
learnable number), ``phantom`` / ``predict`` / ``train`` / ``evaluate``. Registering the task is
the only other line (``register()``); the CLI, the review app and the Slicer logic then run it
with no edit anywhere else (Testing/engine/test_method_contract.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.evaluation import evaluate_dataset
from oncoseg.geometry import image_like
from oncoseg.metrics import dice
from oncoseg.modelfile import ModelMetadata, model_summary, register_architecture, save_model
from oncoseg.phantoms.common import case_rng, generate_dataset
from oncoseg.prediction import Prediction
from oncoseg.progress import check_cancelled
from oncoseg.tasks import InputRole, SegmentSpec, Task, register_task

SPOT = SegmentSpec(1, "Spot", (0.95, 0.6, 0.1))
TASK = Task(
    name="toy-spot", title="Bright spot (toy method of the tests)", paper="none",
    description="Voxels whose z-score is above a learned offset.",
    inputs=(InputRole("image", "any volume", name_hints=("image",)),),
    reference_role="image", method_module=__name__, network_modules=(__name__,),
    segments=(SPOT,), default_config={"offsets": 21},
)


@register_architecture("toy-offset")
class Offset(torch.nn.Module):
    """The whole model: the z-score above which a voxel belongs to the spot."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(()))


def register() -> Task:
    return register_task(TASK, replace=True)


def _zscore(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return (array - array.mean()) / (array.std() + 1e-6)


def _case(folder: Path, seed: int, case: int, storage=None) -> dict:
    rng = case_rng(seed, case)
    z, y, x = np.mgrid[:12, :24, :24]
    centre = rng.uniform(6, 18, 3)
    spot = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - 6) ** 2) < rng.uniform(9, 25)
    array = (rng.normal(0, 1, spot.shape) + 4 * spot).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "image.nii.gz"))
    sitk.WriteImage(image_like(spot.astype(np.uint8), image), str(folder / "label.nii.gz"))
    info = {"task": TASK.name, "case": folder.name, "synthetic": True}
    (folder / "case.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
    return info


def phantom(output, options, context) -> list[Path]:
    return generate_dataset(output, options.cases, options.seed, _case, "toy", context.progress,
                            context.cancel)


def predict(prepared, images, context, hints) -> Prediction:
    image = images["image"]
    offset = float(prepared.network.offset.detach())
    labels = image_like((_zscore(image) > offset).astype(np.uint8), image)
    probability = image_like((1 / (1 + np.exp(-4 * (_zscore(image) - offset)))
                              ).astype(np.float32), image)
    return Prediction(task=TASK.name, model=model_summary(prepared.model.path,
                                                          prepared.model.metadata),
                      images={"image": image}, display_role="image", segments=TASK.segments,
                      labels=labels, probabilities={SPOT.name: probability},
                      details={"offset": offset})


def train(data, output, settings, context, options) -> Path:
    """The offset with the best mean Dice over the training cases."""
    cases = [(_zscore(c.read("image")), c.label_on(c.read("image"), "image") > 0)
             for c in data.cases]
    offsets = np.linspace(0.0, 4.0, int(settings["offsets"]))
    scores = []
    for offset in offsets:
        check_cancelled(context.cancel)
        scores.append(np.mean([dice(z > offset, truth) for z, truth in cases]))
    best = float(offsets[int(np.argmax(scores))])
    metadata = ModelMetadata(task=TASK.name, architecture="toy-offset", architecture_args={},
                             inputs=["image"], preprocessing={},
                             outputs={"segments": [{"name": SPOT.name, "label": 1}]},
                             provenance={"dataset": data.provenance("image")},
                             **options.statement.fields())
    return save_model(Path(output) / "model.safetensors", {"offset": torch.tensor(best)},
                      metadata, overwrite=options.resume)


def evaluate(data, prepared, output, context, overwrite) -> dict:
    def row(case) -> dict:
        image = case.read("image")
        labels = predict(prepared, {"image": image}, context, None).labels
        return {"dsc": dice(sitk.GetArrayFromImage(labels) > 0,
                            case.label_on(image, "image") > 0)}

    return evaluate_dataset(data, row, output, plotted=("dsc",), overwrite=overwrite,
                            progress=context.progress, cancel=context.cancel)
