"""The rectal method (Trebeschi et al. 2017) behind the contract of :mod:`oncoseg.method`."""

from __future__ import annotations

from pathlib import Path

from oncoseg.datasets.base import Dataset
from oncoseg.method import PhantomOptions, RunContext, TrainOptions
from oncoseg.phantoms.common import check_phantom_layout, generate_dataset
from oncoseg.phantoms.rectal import generate_case
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.evaluation import evaluate
from oncoseg.rectal.predict import predict

__all__ = ["evaluate", "phantom", "predict", "train"]


def phantom(output: Path, options: PhantomOptions, context: RunContext) -> list[Path]:
    """Case folders with t2w, dwi_b0, dwi_b1000, label (on the b0 grid) and case.json."""
    check_phantom_layout(options.layout, ["native"])
    return generate_dataset(output, options.cases, options.seed, generate_case, "rectal",
                            context.progress, context.cancel, orientation=options.orientation,
                            tilt_degrees=options.tilt_degrees)


def train(data: Dataset, output: Path, settings: RectalConfig, context: RunContext,
          options: TrainOptions) -> Path:
    """One model, or with ``repeats`` > 1 the paper's stability analysis (several models)."""
    from oncoseg.rectal.training import train_rectal

    if settings.repeats > 1:
        from oncoseg.rectal.stability import train_repeats

        model, _ = train_repeats(data, output, settings, context.device, options.resume,
                                 options.statement, context.progress,
                                 context.cancel)
        return model
    result = train_rectal(data, output, settings, context.device, options.resume,
                          options.statement, context.progress, context.cancel)
    return result.model_path or output

