"""A tiny registered architecture and task for tests of the model files, registry and CLI."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.modelfile import ModelMetadata, register_architecture
from oncoseg.prediction import Prediction
from oncoseg.tasks import InputRole, SegmentSpec, Task, register_task
from oncoseg.terminology import Code, Terminology


@register_architecture("test-tiny-conv")
def tiny_conv(in_channels: int = 1, classes: int = 2) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv3d(in_channels, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, classes, 1))


def tiny_metadata(**changes) -> ModelMetadata:
    fields = dict(task="test-threshold", architecture="test-tiny-conv",
                  architecture_args={"in_channels": 1, "classes": 2}, inputs=["image"],
                  preprocessing={"normalisation": "zscore"},
                  outputs={"segments": [{"name": "Bright", "label": 1}]}, demo=True,
                  description="test network")
    fields.update(changes)
    return ModelMetadata(**fields)


BRIGHT = SegmentSpec(1, "Bright region", (0.9, 0.7, 0.1),
                     Terminology(Code("SCT", "85756007", "Tissue"), Code("SCT", "85756007",
                                                                         "Tissue")))
TASK = Task(
    name="test-threshold", title="Threshold (test task)", paper="none",
    description="Marks voxels brighter than the image mean; exercises the CLI contract.",
    inputs=(InputRole("image", "any volume"), InputRole("extra", "unused", optional=True)),
    reference_role="image", method_module="tinynet", segments=(BRIGHT,),
    default_config={"offset_sd": 0.0},
)


def predict(prepared, images, context, hints) -> Prediction:
    """The method contract's predict (oncoseg.method.Method): no network, a threshold."""
    image = sitk.Cast(images["image"], sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    offset = float(prepared.settings.get("offset_sd", 0.0))
    z = (array - array.mean()) / (array.std() + 1e-6) - offset
    probability = sitk.GetImageFromArray((1.0 / (1.0 + np.exp(-4 * z))).astype(np.float32))
    probability.CopyInformation(image)
    labels = sitk.GetImageFromArray((z > 0).astype(np.uint8))
    labels.CopyInformation(image)
    return Prediction(task=TASK.name, model={"name": "threshold"}, images={"image": image},
                      display_role="image", segments=TASK.segments, labels=labels,
                      probabilities={BRIGHT.name: probability}, messages=["test task"])


def register() -> Task:
    return register_task(TASK, replace=True)


@register_architecture("test-tiny-classifier")
def tiny_classifier(channels: int = 1, classes: int = 2) -> torch.nn.Module:
    """No batch norm and no dropout: identical on any split of a batch over processes."""
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(16, classes))
