"""Deformable registration with elastix (itk-elastix, in-process).

Presets are elastix parameter maps kept as plain dictionaries, so that the same maps can be
written as elastix parameter files and run by the elastix executable for comparison. The
RectalSeg paper's preset: an affine stage, then a B-spline transform (final grid spacing 4 mm)
optimised by adaptive stochastic gradient descent on Mattes mutual information plus a bending
energy penalty, weighted 1:20.

Facts measured on the development machine shape two choices: the step size is estimated with
``ASGDParameterEstimationMethod "DisplacementDistribution"`` (the default estimation spends
minutes at the finest level), and the thread count is never set (with a multi-metric map that
crashes itk-elastix, upstream ITKElastix issue 160). ``itk`` is imported on first use only: it
takes over ten seconds to load.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError, OncoSegError
from oncoseg.geometry import check_overlap
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report

ParameterMap = dict[str, list[str]]

_COMMON: ParameterMap = {
    "FixedInternalImagePixelType": ["float"],
    "MovingInternalImagePixelType": ["float"],
    "FixedImageDimension": ["3"],
    "MovingImageDimension": ["3"],
    "UseDirectionCosines": ["true"],
    "FixedImagePyramid": ["FixedSmoothingImagePyramid"],
    "MovingImagePyramid": ["MovingSmoothingImagePyramid"],
    "Interpolator": ["BSplineInterpolator"],
    "BSplineInterpolationOrder": ["1"],
    "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "FinalBSplineInterpolationOrder": ["3"],
    "Resampler": ["DefaultResampler"],
    "Optimizer": ["AdaptiveStochasticGradientDescent"],
    "AutomaticParameterEstimation": ["true"],
    "ASGDParameterEstimationMethod": ["DisplacementDistribution"],
    "ImageSampler": ["RandomCoordinate"],
    "NewSamplesEveryIteration": ["true"],
    "NumberOfSpatialSamples": ["2048"],
    "NumberOfHistogramBins": ["32"],
    "CheckNumberOfSamples": ["true"],
    "MaximumNumberOfSamplingAttempts": ["8"],
    "DefaultPixelValue": ["0"],
    "WriteResultImage": ["true"],
    "ResultImageFormat": ["mha"],
    "ResultImagePixelType": ["float"],
    "HowToCombineTransforms": ["Compose"],
}

AFFINE: ParameterMap = {
    **_COMMON,
    "Registration": ["MultiResolutionRegistration"],
    "Transform": ["AffineTransform"],
    "AutomaticTransformInitialization": ["true"],
    "AutomaticTransformInitializationMethod": ["CenterOfGravity"],
    "AutomaticScalesEstimation": ["true"],
    "Metric": ["AdvancedMattesMutualInformation"],
    "NumberOfResolutions": ["3"],
    "MaximumNumberOfIterations": ["250"],
}

RECTAL_BSPLINE: ParameterMap = {
    **_COMMON,
    "Registration": ["MultiMetricMultiResolutionRegistration"],
    "Transform": ["BSplineTransform"],
    "Metric": ["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"],
    "Metric0Weight": ["1"],
    "Metric1Weight": ["20"],
    "FinalGridSpacingInPhysicalUnits": ["4"],
    "NumberOfResolutions": ["4"],
    "MaximumNumberOfIterations": ["500"],
}

PRESETS: dict[str, tuple[ParameterMap, ...]] = {
    "rectal": (AFFINE, RECTAL_BSPLINE),  # Trebeschi et al. 2017 (paper 000)
    "affine": (AFFINE,),
    "rigid": ({**AFFINE, "Transform": ["EulerTransform"]},),
}


class RegistrationFailed(OncoSegError):
    """elastix could not register the images; the message says why, in elastix's words."""


def preset_maps(name: str, overrides: Mapping[str, Any] | None = None,
                stage_overrides: Sequence[Mapping[str, Any]] | None = None) -> list[ParameterMap]:
    """The preset's parameter maps; ``overrides`` apply to every stage, ``stage_overrides``
    to one stage each (values may be scalars or lists)."""
    if name not in PRESETS:
        raise ValueError(f"unknown registration preset {name!r} (presets: "
                         f"{', '.join(sorted(PRESETS))})")
    maps = [dict(m) for m in PRESETS[name]]
    for index, parameters in enumerate(maps):
        changes = dict(overrides or {})
        if stage_overrides and index < len(stage_overrides):
            changes.update(stage_overrides[index])
        for key, value in changes.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            parameters[key] = [_text(v) for v in values]
    return maps


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_parameter_file(parameters: ParameterMap, path: str | Path) -> Path:
    """An elastix parameter file, for the elastix executable or a colleague's script."""
    lines = []
    for key, values in parameters.items():
        rendered = " ".join(v if _is_number(v) else f'"{v}"' for v in values)
        lines.append(f"({key} {rendered})")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- itk bridge


def _itk():
    import itk

    return itk


def to_itk(image: sitk.Image, pixel: str = "F") -> Any:
    """A float32 itk image with the same geometry (copies the voxels)."""
    itk = _itk()
    array = sitk.GetArrayFromImage(image).astype(np.float32 if pixel == "F" else np.uint8)
    out = itk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetOrigin(image.GetOrigin())
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(itk.GetMatrixFromArray(np.asarray(image.GetDirection(), float)
                                            .reshape(3, 3)))
    return out


def to_sitk(image: Any) -> sitk.Image:
    itk = _itk()
    out = sitk.GetImageFromArray(itk.GetArrayFromImage(image))
    out.SetOrigin(tuple(image.GetOrigin()))
    out.SetSpacing(tuple(image.GetSpacing()))
    out.SetDirection(tuple(itk.GetArrayFromMatrix(image.GetDirection()).ravel()))
    return out


def _parameter_object(maps: Sequence[ParameterMap]) -> Any:
    itk = _itk()
    parameters = itk.ParameterObject.New()
    for parameter_map in maps:
        parameters.AddParameterMap({k: list(v) for k, v in parameter_map.items()})
    return parameters


# ---------------------------------------------------------------------------- registration


@dataclass
class RegistrationResult:
    """The moving image on the fixed grid, and the transform that put it there."""

    warped: sitk.Image
    transform: list[ParameterMap]  # elastix transform parameter maps (fixed -> moving points)
    final_metric: float | None
    seconds: float
    fixed_grid: sitk.Image

    def apply(self, image: sitk.Image, interpolation: str = "linear") -> sitk.Image:
        """Another image of the moving image's space, resampled onto the fixed grid."""
        order = {"nearest": "0", "linear": "1", "bspline": "3"}[interpolation]
        maps = [dict(m, FinalBSplineInterpolationOrder=[order]) for m in self.transform]
        return to_sitk(_itk().transformix_filter(to_itk(image), _parameter_object(maps),
                                                 log_to_console=False))

    def displacement_field(self) -> np.ndarray:
        """Per fixed-grid voxel, the LPS vector (mm) to the corresponding moving point;
        array (z, y, x, 3)."""
        itk = _itk()
        moving_like = to_itk(self.fixed_grid)
        # transformix writes deformationField.mha into its output directory, by default the
        # user's working directory: give it a scratch folder instead
        with tempfile.TemporaryDirectory(prefix="oncoseg-transformix-") as scratch:
            field = itk.transformix_deformation_field(
                moving_like, _parameter_object(self.transform), log_to_console=False,
                output_directory=scratch)
            return np.asarray(itk.GetArrayFromImage(field), np.float64)


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    preset: str = "rectal",
    overrides: Mapping[str, Any] | None = None,
    stage_overrides: Sequence[Mapping[str, Any]] | None = None,
    names: tuple[str, str] = ("fixed", "moving"),
    fixed_mask: sitk.Image | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed``. ``fixed_mask`` (non-zero = use) restricts where the
    metric samples, e.g. to the body rather than noisy air. Cancellation is honoured before and
    after the elastix run (elastix itself cannot be interrupted in-process)."""
    check_overlap(moving, fixed, names[1], names[0])
    if fixed_mask is not None:
        check_overlap(fixed_mask, fixed, f"mask of {names[0]}", names[0])
        if not sitk.GetArrayViewFromImage(fixed_mask).any():
            raise InputError(f"mask of {names[0]}", "is empty: registration would have no "
                             "voxel to compare")
    maps = preset_maps(preset, overrides, stage_overrides)
    check_cancelled(cancel)
    report(progress, f"Registering {names[1]} to {names[0]}", 0, 1,
           message=f"{preset}: {len(maps)} stage(s)")
    itk = _itk()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oncoseg-elastix-") as folder:
        method = itk.ElastixRegistrationMethod[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
        method.SetFixedImage(to_itk(fixed))
        method.SetMovingImage(to_itk(moving))
        if fixed_mask is not None:
            method.SetFixedMask(to_itk(fixed_mask, pixel="UC"))
        method.SetParameterObject(_parameter_object(maps))
        method.SetLogToConsole(False)
        method.SetLogToFile(True)
        method.SetOutputDirectory(folder)
        method.SetLogFileName("elastix.log")
        try:
            method.Update()
        except RuntimeError as error:
            raise RegistrationFailed(_failure_message(error, Path(folder) / "elastix.log",
                                                      names)) from None
        log = _read_log(Path(folder) / "elastix.log")
        warped = to_sitk(method.GetOutput())
        transform_object = method.GetTransformParameterObject()
        transform = [{k: list(v) for k, v in dict(transform_object.GetParameterMap(i)).items()}
                     for i in range(transform_object.GetNumberOfParameterMaps())]
    seconds = time.perf_counter() - started
    check_cancelled(cancel)
    report(progress, f"Registering {names[1]} to {names[0]}", 1, 1)
    return RegistrationResult(warped, transform, _final_metric(log), seconds, fixed)


def _read_log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


_FINAL_METRIC = re.compile(r"Final metric value\s*=\s*(-?[\d.eE+-]+)")


def _final_metric(log: str) -> float | None:
    values = _FINAL_METRIC.findall(log)
    return float(values[-1]) if values else None


_KNOWN_FAILURES = (
    ("Too many samples map outside moving image buffer",
     "too little of the {moving} overlaps the {fixed} during optimisation (elastix: too many "
     "samples map outside the moving image). Check that both show the same region, or that "
     "the images are not grossly misaligned."),
    ("Total Mass of the image was zero",
     "the {moving} or the {fixed} holds (almost) no signal where they overlap, so elastix "
     "cannot centre one on the other. Check that the right series was chosen."),
    ("Could not find enough image samples",
     "elastix found too few usable voxels (are the images empty or constant?)."),
)


def _failure_message(error: Exception, log_path: Path, names: tuple[str, str]) -> str:
    text = f"{error}\n{_read_log(log_path)}"
    for needle, explanation in _KNOWN_FAILURES:
        if needle in text:
            return (f"registration of {names[1]} to {names[0]} failed: "
                    + explanation.format(fixed=names[0], moving=names[1]))
    lines = [line.strip() for line in text.splitlines() if "ERROR" in line or "rror" in line]
    detail = lines[-1] if lines else str(error).strip().splitlines()[-1]
    return f"registration of {names[1]} to {names[0]} failed: {detail}"
