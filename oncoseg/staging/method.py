"""StagingCNN (paper 002: T2 vs T3 rectal cancer on T2w MR with mixtures of 2D and 3D
convolutions) behind the contract of :mod:`oncoseg.method`."""

from __future__ import annotations

from pathlib import Path

from oncoseg.datasets.base import Dataset
from oncoseg.method import PhantomOptions, RunContext, TrainOptions
from oncoseg.phantoms import staging as staging_phantom
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.staging.config import StagingConfig
from oncoseg.staging.evaluation import evaluate
from oncoseg.staging.predict import predict

__all__ = ["evaluate", "phantom", "predict", "train"]


def phantom(output: Path, options: PhantomOptions, context: RunContext) -> list[Path]:
    """Case folders with t2w (and the tumour label), plus the staging table staging.csv."""
    check_phantom_layout(options.layout, ["native"])
    return generate_dataset(output, options.cases, options.seed, staging_phantom.generate_case,
                            "staging", context.progress, context.cancel,
                            finish=staging_phantom.write_table, orientation=options.orientation,
                            tilt_degrees=options.tilt_degrees)


def train(data: Dataset, output: Path, settings: StagingConfig, context: RunContext,
          options: TrainOptions) -> Path:
    """One model, or with ``folds`` a k-fold cross-validation (cv_summary.json), or with
    ``calibrate_only`` an existing model calibrated on the data set (no training)."""
    from oncoseg.staging.training import calibrate_existing, train_staging

    if settings.calibrate_only:
        return calibrate_existing(data, output, settings.calibrate_only, context.device,
                                  context.progress, context.cancel)

    return train_staging(data, output, settings, context.device, options.resume,
                         options.statement, context.progress, context.cancel)
