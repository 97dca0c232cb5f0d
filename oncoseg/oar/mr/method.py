"""The GI-tract method on abdominal MR (UW-Madison GI tract segmentation, paper 001) behind the
contract of :mod:`oncoseg.method`: stomach, small and large bowel from single axial slices (or
2.5D slice stacks, ``context`` > 0), with the threshold tuned on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.datasets.base import Case, Dataset
from oncoseg.errors import InputError
from oncoseg.method import PhantomOptions, RunContext, TrainOptions
from oncoseg.oar.mr.config import OarMrConfig
from oncoseg.oar.mr.evaluation import evaluate
from oncoseg.oar.mr.predict import predict
from oncoseg.phantoms import gi
from oncoseg.phantoms.common import check_phantom_layout

__all__ = ["evaluate", "phantom", "predict", "reference_labels", "train"]


def phantom(output: Path, options: PhantomOptions, context: RunContext) -> list[Path]:
    """Patients in the UW-Madison Kaggle layout (train.csv, train/caseN/caseN_dayN/scans)."""
    check_phantom_layout(options.layout, ["native"])
    if options.orientation.upper() != "LPS" or options.tilt_degrees:
        raise InputError("--orientation", "the GI tract phantoms are written in the Kaggle "
                         "layout, whose PNG slices carry no orientation (read as LPS axial "
                         "slices); only upright LPS is possible")
    return gi.generate(output, options.cases, options.seed, context.progress, context.cancel)


def train(data: Dataset, output: Path, settings: OarMrConfig, context: RunContext,
          options: TrainOptions) -> Path:
    """One model (two-stage with its slice gate when the settings ask), its threshold tuned on
    the validation patients and stored in the model file."""
    from oncoseg.oar.mr.training import train_oar_mr

    return train_oar_mr(data, output, settings, context.device, options.resume,
                        options.statement, context.progress, context.cancel)


def reference_labels(case: Case, scan: sitk.Image) -> tuple[np.ndarray, list[str]]:
    """The case's label map on its scan (from the competition's run-lengths, or its label
    file) and the organs it annotated (all: a slice the run-lengths leave out holds none), for
    writing the case in another layout (nnU-Net raw). The competition's organ masks may
    overlap; where they do, the later organ of GI_SEGMENTS takes the voxel."""
    from oncoseg.oar.mr.task import GI_SEGMENTS
    from oncoseg.oar.mr.training import case_masks

    masks = case_masks(case, scan)
    labels = np.zeros(masks.shape[1:], np.uint8)
    for mask, spec in zip(masks, GI_SEGMENTS, strict=True):
        labels[mask] = spec.label
    return labels, [spec.name for spec in GI_SEGMENTS]
