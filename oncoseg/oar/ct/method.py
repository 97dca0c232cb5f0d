"""The pelvic organs-at-risk method on CT (Sartor et al. 2020, paper 003) behind the contract
of :mod:`oncoseg.method`: femoral heads, bladder, bowel bag and nodal CTV, trained on clinical
RT structure sets with partial annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, Dataset
from oncoseg.method import PhantomOptions, RunContext, TrainOptions
from oncoseg.oar.ct.config import OarCtConfig
from oncoseg.oar.ct.evaluation import evaluate
from oncoseg.oar.ct.predict import predict
from oncoseg.phantoms import pelvis_ct
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset

__all__ = ["evaluate", "phantom", "predict", "reference_labels", "train"]


def phantom(output: Path, options: PhantomOptions, context: RunContext) -> list[Path]:
    """Patient folders with a CT series (DICOM) and an RT structure set each."""
    check_phantom_layout(options.layout, ["native"])
    return generate_dataset(output, options.cases, options.seed, pelvis_ct.generate_case,
                            "oarct", context.progress, context.cancel,
                            orientation=options.orientation, axial_only=True,
                            tilt_degrees=options.tilt_degrees)


def train(data: Dataset, output: Path, settings: OarCtConfig, context: RunContext,
          options: TrainOptions) -> Path:
    """One model, trained in the paper's restart cycles (50 by default; each after the first
    with hard negatives and another validation fold); the last cycle's model is returned."""
    from oncoseg.oar.ct.training import train_oar_ct

    return train_oar_ct(data, output, settings, context.device, options.resume,
                        options.statement, context.progress, context.cancel)


def reference_labels(case: Case, ct: sitk.Image) -> tuple[np.ndarray, list[str]]:
    """The case's label map on its CT (from its RT structure set, or its label file) and the
    organs it annotated (a structure set may lack some), for writing the case in another
    layout (nnU-Net raw)."""
    from oncoseg.oar.ct.training import case_labels

    return case_labels(case, ct)
