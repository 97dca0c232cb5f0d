"""Deformable registration with elastix (itk-elastix, in this process or in a child one).

Presets are elastix parameter maps kept as plain dictionaries, so that the same maps can be
written as elastix parameter files and run by the elastix executable for comparison. The
RectalSeg paper's preset: an affine stage, then a B-spline transform (final grid spacing 4 mm)
optimised by adaptive stochastic gradient descent on Mattes mutual information plus a bending
energy penalty, weighted 1:20.

Facts measured on the development machine shape two choices: the step size is estimated with
``ASGDParameterEstimationMethod "DisplacementDistribution"`` (the default estimation spends
minutes at the finest level), and the thread count is never set (with a multi-metric map that
crashes itk-elastix, upstream ITKElastix issue 160). ``itk`` is imported on first use only: it
takes over ten seconds to load (in a child process, at every registration).

Inside 3D Slicer elastix runs in a child ``PythonSlicer`` (``register(..., child_python=...)``,
see "In a child process" below); the command line runs it here.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.childprocess import SLICER_ITK_VARIABLES
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
    """All of itk (its lazy loader: 8-16 s and about 1 GB on first use of elastix)."""
    import itk

    return itk


def to_itk(image: sitk.Image, pixel: str = "F") -> Any:
    """A float32 itk image with the same geometry (copies the voxels; loads all of itk)."""
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


# elastix without the rest of itk. itk's lazy loader, asked for ElastixRegistrationMethod,
# first loads the 55 wrapped modules the Elastix module lists as dependencies (smoothing,
# convolution, thresholding, intensity filters, ...): 72 shared libraries of up to 137 MB each,
# 8-16 s on two cores, 10.7 s of it in the dynamic loader (issue 25). Each shared library links
# its own copy of ITK, and elastix's (_ElastixPython) needs only ITKCommon's at load time, plus
# ITKBridgeNumPy's for numpy views: those three load in about 1 s. The classes used here are
# then taken from the per-class SWIG modules they define (itk.itkImagePython, ...), which
# import nothing else heavy. The parameters and the libraries are the same, so the results are
# identical to the lazy loader's (measured: the same transform parameters and warped image,
# bit for bit, on the rectal phantom). Where the installed itk is laid out differently, the
# full lazy loader is used instead.
_NARROW_LIBRARIES = ("_ITKCommonPython", "_ElastixPython", "_ITKBridgeNumPyPython")
_NARROW_MODULES = ("_itkImagePython", "_itkMatrixPython", "_vnl_matrix_fixedPython",
                   "_itkPyBufferPython", "_elxParameterObjectPython",
                   "_itkElastixRegistrationMethodPython", "_itkTransformixFilterPython")


@dataclass(frozen=True)
class _Elastix:
    """The elastix classes registration uses (3D, float pixels), however they were loaded."""

    buffer_f: Any  # itkPyBufferIF3
    buffer_uc: Any  # itkPyBufferIUC3
    buffer_vf: Any  # itkPyBufferIVF33
    vnl_matrix: Any  # vnl_matrix_fixedD_3_3
    matrix: Any  # itkMatrixD33
    parameter_object: Any  # elastixParameterObject
    registration: Any  # itkElastixRegistrationMethodIF3IF3
    transformix: Any  # itkTransformixFilterIF3
    narrow: bool


_ELASTIX: list[_Elastix] = []


def _elastix() -> _Elastix:
    """elastix's classes, loaded narrowly on first use (see above)."""
    if not _ELASTIX:
        try:
            _ELASTIX.append(_load_elastix(narrow=True))
        except (ImportError, AttributeError, OSError):
            _ELASTIX.append(_load_elastix(narrow=False))
    return _ELASTIX[0]


def _load_elastix(narrow: bool) -> _Elastix:
    import importlib
    import importlib.util
    import sys

    import itk

    if "torch" not in sys.modules:
        # itk's SWIG modules wrap their functions to accept torch tensors, importing torch
        # (1.2-1.6 s) where it is installed; registration passes none. In a process that has
        # not imported torch (Slicer's registration child, a script) itk's functions then take
        # numpy arrays and itk images only, for the rest of the process.
        from itk.support import helpers

        helpers._HAVE_TORCH = False
    if not narrow:
        itk.ElastixRegistrationMethod  # noqa: B018  (the lazy loader loads every dependency)
    elif "itk._ElastixPython" not in sys.modules:
        folder = Path(itk.__file__).parent
        for name in _NARROW_LIBRARIES:
            key = f"itk.{name}"
            if key in sys.modules:
                continue
            found = sorted(folder.glob(f"{name}.*.so")) + sorted(folder.glob(f"{name}.*.pyd"))
            if not found:
                raise ImportError(f"itk has no {name} library")
            spec = importlib.util.spec_from_file_location(key, found[0])
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {found[0]}")
            module = importlib.util.module_from_spec(spec)  # loads the shared library
            spec.loader.exec_module(module)
            sys.modules[key] = module
            itk.__dict__[name] = module  # what the SWIG modules' "from . import" reads
    for name in _NARROW_MODULES:  # the libraries registered these on loading
        itk.__dict__.setdefault(name, sys.modules[f"itk.{name}"])

    def wrapped(name: str) -> Any:
        return importlib.import_module(f"itk.{name}")

    buffers = wrapped("itkPyBufferPython")
    return _Elastix(
        buffers.itkPyBufferIF3, buffers.itkPyBufferIUC3, buffers.itkPyBufferIVF33,
        wrapped("vnl_matrix_fixedPython").vnl_matrix_fixedD_3_3,
        wrapped("itkMatrixPython").itkMatrixD33,
        wrapped("elxParameterObjectPython").elastixParameterObject,
        wrapped("itkElastixRegistrationMethodPython").itkElastixRegistrationMethodIF3IF3,
        wrapped("itkTransformixFilterPython").itkTransformixFilterIF3, narrow)


class _Images:
    """itk images made from SimpleITK ones, viewing numpy arrays this object keeps alive for
    as long as elastix may read them (a view avoids a copy the lazy loader's
    ``GetImageFromArray`` makes through an image duplicator)."""

    def __init__(self, elastix: _Elastix):
        self.elastix = elastix
        self.arrays: list[np.ndarray] = []

    def image(self, image: sitk.Image, pixel: str = "F") -> Any:
        array = np.ascontiguousarray(sitk.GetArrayFromImage(image).astype(
            np.float32 if pixel == "F" else np.uint8))
        self.arrays.append(array)
        buffer = self.elastix.buffer_f if pixel == "F" else self.elastix.buffer_uc
        out = buffer._GetImageViewFromArray(array, array.shape[::-1], 1)
        out.SetOrigin(image.GetOrigin())
        out.SetSpacing(image.GetSpacing())
        direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
        matrix = self.elastix.vnl_matrix()
        for row in range(3):
            for column in range(3):
                matrix.put(row, column, float(direction[row, column]))
        out.__SetDirection_orig__(self.elastix.matrix(matrix))
        return out

    def parameters(self, maps: Sequence[ParameterMap]) -> Any:
        parameters = self.elastix.parameter_object.__New_orig__()
        for parameter_map in maps:
            parameters.AddParameterMap({k: list(v) for k, v in parameter_map.items()})
        return parameters


def _on_grid(elastix: _Elastix, image: Any, grid: sitk.Image) -> sitk.Image:
    """elastix's float output (on ``grid``, the fixed image's) as a SimpleITK image."""
    view = elastix.buffer_f._GetArrayViewFromImage(image)
    array = np.frombuffer(view, np.float32).reshape(grid.GetSize()[::-1]).copy()
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(grid)
    return out


# ---------------------------------------------------------------------------- registration


@dataclass
class RegistrationResult:
    """The moving image on the fixed grid, and the transform that put it there."""

    warped: sitk.Image
    transform: list[ParameterMap]  # elastix transform parameter maps (fixed -> moving points)
    final_metric: float | None
    seconds: float
    fixed_grid: sitk.Image
    child_python: str | None = None  # made in a child process: apply the transform there too
    sitk_transform: sitk.Transform | None = None  # made by the SimpleITK engine: applied by it
    engine: str = "elastix"

    def apply(self, image: sitk.Image, interpolation: str = "linear",
              cancel: CancelToken | None = None) -> sitk.Image:
        """Another image of the moving image's space, resampled onto the fixed grid."""
        order = {"nearest": "0", "linear": "1", "bspline": "3"}[interpolation]
        if self.sitk_transform is not None:
            default = float(self.transform[-1]["DefaultPixelValue"][0])
            return sitk.Resample(image, self.fixed_grid, self.sitk_transform,
                                 _SITK_ORDER[order], default, image.GetPixelID())
        maps = [dict(m, FinalBSplineInterpolationOrder=[order]) for m in self.transform]
        if self.child_python is not None:
            return _in_child(self.child_python, "apply", {"image": image}, {"maps": maps},
                             None, cancel)["output"]
        return _transformix(image, maps)

    def displacement_field(self, cancel: CancelToken | None = None) -> np.ndarray:
        """Per fixed-grid voxel, the LPS vector (mm) to the corresponding moving point;
        array (z, y, x, 3)."""
        if self.sitk_transform is not None:
            field = sitk.TransformToDisplacementField(
                self.sitk_transform, sitk.sitkVectorFloat64, self.fixed_grid.GetSize(),
                self.fixed_grid.GetOrigin(), self.fixed_grid.GetSpacing(),
                self.fixed_grid.GetDirection())
            return sitk.GetArrayFromImage(field)
        if self.child_python is not None:
            return _in_child(self.child_python, "field", {"grid": self.fixed_grid},
                             {"maps": self.transform}, None, cancel)["field"]
        return _displacement_field(self.fixed_grid, self.transform)


def _transformix(image: sitk.Image, maps: Sequence[ParameterMap],
                 field: bool = False) -> Any:
    """transformix on ``image``: the image resampled onto the maps' fixed grid, or with
    ``field`` the displacement field (z, y, x, 3) of the fixed grid ``image``."""
    elastix = _elastix()
    images = _Images(elastix)
    transformix = elastix.transformix.__New_orig__()
    transformix.SetMovingImage(images.image(image))
    transformix.SetTransformParameterObject(images.parameters(maps))
    transformix.SetLogToConsole(False)
    # transformix writes deformationField.mha into its output directory, by default the
    # user's working directory: give it a scratch folder instead
    with tempfile.TemporaryDirectory(prefix="oncoseg-transformix-") as scratch:
        if field:
            transformix.SetOutputDirectory(scratch)
            transformix.SetComputeDeformationField(True)
        transformix.UpdateLargestPossibleRegion()
        if not field:
            output = transformix.GetOutput()
            grid = sitk.Image([int(v) for v in output.GetLargestPossibleRegion().GetSize()],
                              sitk.sitkUInt8)
            grid.SetOrigin([float(v) for v in output.GetOrigin()])
            grid.SetSpacing([float(v) for v in output.GetSpacing()])
            direction = output.GetDirection().GetVnlMatrix()
            grid.SetDirection([direction.get(row, column) for row in range(3)
                               for column in range(3)])
            return _on_grid(elastix, output, grid)
        view = elastix.buffer_vf._GetArrayViewFromImage(transformix.GetOutputDeformationField())
        return np.frombuffer(view, np.float32).reshape(
            (*image.GetSize()[::-1], 3)).astype(np.float64)


def _displacement_field(grid: sitk.Image, maps: Sequence[ParameterMap]) -> np.ndarray:
    return _transformix(grid, maps, field=True)


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
    child_python: str | None = None,
    engine: str = "elastix",
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed``. ``fixed_mask`` (non-zero = use) restricts where the
    metric samples, e.g. to the body rather than noisy air.

    ``child_python``: run elastix in a child process of that interpreter (inside Slicer:
    ``PythonSlicer``), see "In a child process" below; its progress is reported level by level
    and iteration by iteration, and cancelling ends the child's whole process tree at once.
    None (the default, the CLI's): in this process, where cancellation is honoured before and
    after the elastix run only (elastix cannot be interrupted in-process).

    ``engine``: "elastix" (the default) or "simpleitk" for one rigid or affine stage (in this
    process whatever ``child_python`` says: it is Slicer's own SimpleITK, and it reports
    progress and honours cancellation at every iteration); see the SimpleITK engine's section
    for why elastix stays the default."""
    check_overlap(moving, fixed, names[1], names[0])
    if fixed_mask is not None:
        check_overlap(fixed_mask, fixed, f"mask of {names[0]}", names[0])
        if not sitk.GetArrayViewFromImage(fixed_mask).any():
            raise InputError(f"mask of {names[0]}", "is empty: registration would have no "
                             "voxel to compare")
    maps = preset_maps(preset, overrides, stage_overrides)
    engine = _engine(maps, engine)
    check_cancelled(cancel)
    stage = f"Registering {names[1]} to {names[0]}"
    where = ("in a child process" if child_python is not None and engine == "elastix"
             else "in this process")
    report(progress, stage, 0, 1, message=f"{preset}: {len(maps)} stage(s), {where}"
           + (", SimpleITK" if engine == "simpleitk" else ""))
    if engine == "simpleitk":
        result = _run_simpleitk(fixed, moving, maps[0], names, fixed_mask, stage, progress,
                                cancel)
    elif child_python is None:
        result = _run_elastix(fixed, moving, maps, names, fixed_mask)
    else:
        images = {"fixed": fixed, "moving": moving}
        if fixed_mask is not None:
            images["mask"] = fixed_mask
        done = _in_child(child_python, "register", images, {"maps": maps, "names": names},
                         _ElastixProgress(maps, stage, progress), cancel)
        result = RegistrationResult(done["warped"], done["transform"], done["final_metric"],
                                    done["seconds"], fixed, child_python)
    check_cancelled(cancel)
    report(progress, stage, 1, 1)
    return result


def _run_elastix(fixed: sitk.Image, moving: sitk.Image, maps: Sequence[ParameterMap],
                 names: Sequence[str], fixed_mask: sitk.Image | None = None,
                 console: bool = False) -> RegistrationResult:
    """elastix in this process; ``console``: its log on stdout too (a child's progress)."""
    started = time.perf_counter()
    elastix = _elastix()
    images = _Images(elastix)
    with tempfile.TemporaryDirectory(prefix="oncoseg-elastix-") as folder:
        method = elastix.registration.__New_orig__()
        method.SetFixedImage(images.image(fixed))
        method.SetMovingImage(images.image(moving))
        if fixed_mask is not None:
            method.SetFixedMask(images.image(fixed_mask, pixel="UC"))
        method.SetParameterObject(images.parameters(maps))
        method.SetLogToConsole(console)
        method.SetLogToFile(True)
        method.SetOutputDirectory(folder)
        method.SetLogFileName("elastix.log")
        try:
            method.Update()
        except RuntimeError as error:
            raise RegistrationFailed(_failure_message(error, Path(folder) / "elastix.log",
                                                      (names[0], names[1]))) from None
        log = _read_log(Path(folder) / "elastix.log")
        warped = _on_grid(elastix, method.GetOutput(), fixed)
        transform_object = method.GetTransformParameterObject()
        transform = [{k: list(v) for k, v in dict(transform_object.GetParameterMap(i)).items()}
                     for i in range(transform_object.GetNumberOfParameterMaps())]
    return RegistrationResult(warped, transform, _final_metric(log),
                              time.perf_counter() - started, fixed)


# ---------------------------------------------------------------------------- SimpleITK engine
#
# Rigid and affine presets can run with SimpleITK's ImageRegistrationMethod (``engine=
# "simpleitk"``): SimpleITK is loaded already (every image passes through it), while itk-elastix
# costs 8-16 s of loading itk's wrappers on two cores (issue 25), more than the registration
# itself. It is not the default, by measurement (rigid, T2w onto b0 of rectal phantom seeds 5-8,
# error against the known displacement): elastix 2.6 / 2.4 / 2.8 / 3.3 mm, this engine 2.7 / 2.9
# / 4.0 / 6.4-7.2 mm, identity 2.6 / 2.6 / 3.1 / 3.2 mm. Its optimisers (regular-step,
# learning-rate-estimating and line-search gradient descent, with several scales, samplings and
# pyramids) stop at poorer mutual information than elastix's stochastic one reaches, by
# SimpleITK's own metric. The translation keeps the preset's choices: Mattes mutual information
# with the same bins, a centre-of-gravity
# start, a smoothing pyramid of the same levels (elastix's default schedule: 2^(levels-1-level)
# voxels, half that as Gaussian sigma, no down-sampling), the same iteration budget per level,
# random samples (drawn once per level, so more of them than elastix's new 2048 per iteration),
# the same final B-spline interpolation and default value. Parameter maps with anything else
# (another metric, a pyramid schedule, a B-spline stage) run in elastix.

ENGINES = ("elastix", "simpleitk")
_SITK_TRANSFORMS = ("EulerTransform", "AffineTransform")
# keys the SimpleITK engine follows; every other key must hold the affine preset's value
_SITK_KEYS = {"Transform", "NumberOfResolutions", "MaximumNumberOfIterations",
              "NumberOfHistogramBins", "NumberOfSpatialSamples", "DefaultPixelValue",
              "FinalBSplineInterpolationOrder", "AutomaticTransformInitialization",
              "WriteResultImage"}
_SITK_SAMPLING_FRACTION = 0.1  # of the fixed image's voxels (masked ones) per level
_SITK_SEED = 1  # the same samples on every run: results are reproducible
_SITK_ORDER = {"0": sitk.sitkNearestNeighbor, "1": sitk.sitkLinear, "3": sitk.sitkBSpline}


def simpleitk_runs(maps: Sequence[ParameterMap]) -> bool:
    """Whether the SimpleITK engine follows these maps exactly as far as they say: one rigid
    (Euler) or affine stage of Mattes mutual information, changed from the affine preset only
    in the keys it translates."""
    if len(maps) != 1:
        return False
    parameters = maps[0]
    if parameters.get("Transform", [""])[0] not in _SITK_TRANSFORMS:
        return False
    if parameters.get("FinalBSplineInterpolationOrder", ["3"])[0] not in _SITK_ORDER:
        return False
    if len(set(parameters.get("MaximumNumberOfIterations", ["0"]))) != 1:
        return False  # one budget for every level: SimpleITK's optimiser holds one
    return all(key in _SITK_KEYS or AFFINE.get(key) == list(value)
               for key, value in parameters.items()) and set(AFFINE) <= set(parameters)


def _engine(maps: Sequence[ParameterMap], engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown registration engine {engine!r} (engines: "
                         f"{', '.join(ENGINES)})")
    if engine == "simpleitk" and not simpleitk_runs(maps):
        raise ValueError("the SimpleITK engine runs one rigid or affine stage of the affine "
                         "preset's kind only; these maps need elastix")
    return engine


def _per_level(values: Sequence[str], levels: int) -> list[int]:
    return [int(float(values[min(level, len(values) - 1)])) for level in range(levels)]


def _run_simpleitk(fixed: sitk.Image, moving: sitk.Image, parameters: ParameterMap,
                   names: Sequence[str], fixed_mask: sitk.Image | None,
                   stage: str, progress: ProgressCallback | None,
                   cancel: CancelToken | None) -> RegistrationResult:
    """One rigid or affine stage with SimpleITK (see the section's comment)."""
    started = time.perf_counter()
    levels = int(parameters["NumberOfResolutions"][0])
    iterations = _per_level(parameters["MaximumNumberOfIterations"], levels)
    samples = _per_level(parameters["NumberOfSpatialSamples"], levels)
    default = float(parameters["DefaultPixelValue"][0])
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    rigid = parameters["Transform"][0] == "EulerTransform"
    transform: sitk.Transform = sitk.Euler3DTransform() if rigid else sitk.AffineTransform(3)
    try:
        if parameters["AutomaticTransformInitialization"][0] == "true":
            transform = sitk.CenteredTransformInitializer(
                fixed_f, moving_f, transform,
                sitk.CenteredTransformInitializerFilter.MOMENTS)
        else:
            centre = fixed_f.TransformContinuousIndexToPhysicalPoint(
                [(n - 1) / 2 for n in fixed_f.GetSize()])
            transform.SetCenter(centre)
        transform = sitk.Euler3DTransform(transform) if rigid else sitk.AffineTransform(transform)
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(int(parameters["NumberOfHistogramBins"][0]))
        counted = (int(np.count_nonzero(sitk.GetArrayViewFromImage(fixed_mask)))
                   if fixed_mask is not None else int(np.prod(fixed_f.GetSize())))
        fractions = [min(1.0, max(_SITK_SAMPLING_FRACTION, 4 * n / max(counted, 1)))
                     for n in samples]
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentagePerLevel(fractions, _SITK_SEED)
        if fixed_mask is not None:
            method.SetMetricFixedMask(sitk.Cast(fixed_mask != 0, sitk.sitkUInt8))
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-3, numberOfIterations=iterations[0],
            relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel([1] * levels)
        method.SetSmoothingSigmasPerLevel([0.5 * 2 ** (levels - 1 - level)
                                           for level in range(levels)])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        method.SetInitialTransform(transform, inPlace=True)
        watcher = _SitkProgress(method, levels, iterations, stage, progress, cancel)
        method.AddCommand(sitk.sitkIterationEvent, watcher.iteration)
        method.AddCommand(sitk.sitkMultiResolutionIterationEvent, watcher.level)
        method.Execute(fixed_f, moving_f)
    except RuntimeError as error:
        check_cancelled(cancel)  # an abort on cancel ends Execute with an error
        raise RegistrationFailed(_failure_message(error, None, (names[0], names[1]))) from None
    check_cancelled(cancel)
    order = parameters.get("FinalBSplineInterpolationOrder", ["3"])[0]
    warped = sitk.Resample(moving_f, fixed_f, transform, _SITK_ORDER[order], default,
                           sitk.sitkFloat32)
    return RegistrationResult(warped, [_elastix_transform_map(transform, fixed_f, parameters)],
                              float(method.GetMetricValue()), time.perf_counter() - started,
                              fixed, sitk_transform=transform, engine="simpleitk")


class _SitkProgress:
    """SimpleITK's iteration events -> progress (one unit per level) and cancellation."""

    def __init__(self, method: sitk.ImageRegistrationMethod, levels: int,
                 iterations: Sequence[int], stage: str, progress: ProgressCallback | None,
                 cancel: CancelToken | None):
        self.method, self.levels, self.iterations = method, levels, iterations
        self.stage, self.progress, self.cancel = stage, progress, cancel
        self.current = -1
        self.shown = -1.0

    def level(self) -> None:
        self.current = min(self.current + 1, self.levels - 1)
        self._show(0)

    def iteration(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            self.method.Abort()
            return
        self._show(self.method.GetOptimizerIteration())

    def _show(self, iteration: int) -> None:
        if self.current < 0:
            return
        done = self.current + min(1.0, iteration / max(self.iterations[self.current], 1))
        if done - self.shown < 0.01 * self.levels and iteration:
            return
        self.shown = done
        report(self.progress, self.stage, done, self.levels,
               message=f"stage 1 of 1, level {self.current + 1} of {self.levels}")


def _elastix_transform_map(transform: sitk.Transform, grid: sitk.Image,
                           parameters: ParameterMap) -> ParameterMap:
    """The transform as an elastix transform parameter map (what transformix reads): elastix's
    EulerTransform and AffineTransform hold the same parameters as ITK's Euler3DTransform and
    AffineTransform, about the same centre."""
    values = [f"{v:.10g}" for v in transform.GetParameters()]
    centre = [f"{v:.10g}" for v in transform.GetFixedParameters()[:3]]
    return {
        "Transform": [parameters["Transform"][0]],
        "NumberOfParameters": [str(len(values))],
        "TransformParameters": values,
        "InitialTransformParametersFileName": ["NoInitialTransform"],
        "HowToCombineTransforms": ["Compose"],
        "FixedImageDimension": ["3"], "MovingImageDimension": ["3"],
        "FixedInternalImagePixelType": ["float"], "MovingInternalImagePixelType": ["float"],
        "Size": [str(n) for n in grid.GetSize()], "Index": ["0", "0", "0"],
        "Spacing": [f"{v:.10g}" for v in grid.GetSpacing()],
        "Origin": [f"{v:.10g}" for v in grid.GetOrigin()],
        "Direction": [f"{v:.10g}" for v in grid.GetDirection()],
        "UseDirectionCosines": ["true"],
        "CenterOfRotationPoint": centre,
        **({"ComputeZYX": ["false"]} if parameters["Transform"][0] == "EulerTransform" else {}),
        "ResampleInterpolator": ["FinalBSplineInterpolator"],
        "FinalBSplineInterpolationOrder": list(parameters.get("FinalBSplineInterpolationOrder",
                                                              ["3"])),
        "Resampler": ["DefaultResampler"],
        "DefaultPixelValue": list(parameters["DefaultPixelValue"]),
        "ResultImageFormat": ["mha"], "ResultImagePixelType": ["float"],
        "CompressResultImage": ["false"],
    }


# ---------------------------------------------------------------------------- in a child process
#
# Inside Slicer, pip's ITK must not run in the application's process: its IO plugins and
# Slicer's clash (Slicer issues #5907, #8947). So the Slicer logic passes ``PythonSlicer`` as
# ``child_python`` and elastix runs there, the images passed through MetaImage files in a
# temporary folder, the result written back as JSON and files, elastix's console log streamed
# as lines and turned into progress (``_ElastixProgress``). ``ITK_AUTOLOAD_PATH`` points ITK at
# Slicer's own IO plugins (Slicer's launcher sets it, CMake/SlicerBlockCTKAppLauncherSettings.cmake
# at v5.10.0; Slicer's CLI logic blanks it for its CLIs, Base/Logic/vtkSlicerCLIModuleLogic.cxx):
# it is removed from the child's environment, and again in the child before anything imports
# ITK, because PythonSlicer is itself a launcher that sets it from SlicerLauncherSettings.ini
# (SuperBuild/python_configure_python_launcher.cmake: ADDITIONAL_SETTINGS_FILEPATH) before it
# starts the real interpreter. ``import SimpleITK`` alone loads those plugins.

_CHILD_MAIN = (
    "import sys\n"
    "from oncoseg.childprocess import forget_slicer_itk\n"
    "forget_slicer_itk()\n"
    "from oncoseg.registration import child_main\n"
    "sys.exit(child_main(sys.argv[1]))\n")
_OUTPUT_LINES_KEPT = 40  # what a failed child printed last, for the message


def _in_child(python: str, kind: str, images: Mapping[str, sitk.Image],
              request: Mapping[str, Any], on_line: Callable[[str], bool] | None,
              cancel: CancelToken | None
              ) -> dict[str, Any]:
    """Run ``kind`` (register / apply / field) in a child ``python``; what it wrote back."""
    from oncoseg.childprocess import ChildProcess, engine_environment

    with tempfile.TemporaryDirectory(prefix="oncoseg-elastix-child-") as scratch:
        folder = Path(scratch)
        for name, image in images.items():
            write_child_input(image, folder / f"{name}.mha")
        (folder / "request.json").write_text(json.dumps({"kind": kind, **request}),
                                             encoding="utf-8")
        child = ChildProcess([python, "-c", _CHILD_MAIN, str(folder)],
                             engine_environment(remove=SLICER_ITK_VARIABLES))
        output: list[str] = []
        for line in child.lines(cancel):
            if on_line is None or not on_line(line):
                output = [*output[-(_OUTPUT_LINES_KEPT - 1):], line]
        answer = folder / "result.json"
        result = json.loads(answer.read_text(encoding="utf-8")) if answer.is_file() else {}
        if "failed" in result:
            raise RegistrationFailed(result["failed"])
        if child.returncode != 0 or not result:
            raise OncoSegError(f"elastix's child process ({python}) ended with exit code "
                               f"{child.returncode}: " + "\n".join(output[-10:]))
        for name in ("warped", "output"):
            if (folder / f"{name}.mha").is_file():
                result[name] = sitk.ReadImage(str(folder / f"{name}.mha"))
        if (folder / "field.npy").is_file():
            result["field"] = np.load(folder / "field.npy")
        return result


def write_child_input(image: sitk.Image, path: Path) -> None:
    """``image`` as an uncompressed MetaImage, without the metadata a file reader attached
    (NIfTI's qto_xyz, descrip, ...): MetaImage cannot hold them and ITK warns about each one,
    which inside Slicer fills the error log."""
    if image.GetMetaDataKeys():
        image = sitk.Image(image)
        for key in image.GetMetaDataKeys():
            image.EraseMetaData(key)
    sitk.WriteImage(image, str(path), False)


def child_main(folder: str) -> int:
    """The child's side (``python -c _CHILD_MAIN folder``): read ``request.json`` and the
    images, run, write ``result.json`` (and images); 0 when done, 1 when elastix failed."""
    root = Path(folder)
    # elastix's and transformix's own scratch folders go inside the parent's, which the parent
    # removes whatever becomes of this process: a cancel kills it before its ``with`` blocks
    # can clean up (each cancelled registration left an elastix log folder in /tmp)
    tempfile.tempdir = str(root)
    request = json.loads((root / "request.json").read_text(encoding="utf-8"))

    def image(name: str) -> sitk.Image | None:
        path = root / f"{name}.mha"
        return sitk.ReadImage(str(path)) if path.is_file() else None

    result: dict[str, Any] = {}
    try:
        if request["kind"] == "register":
            done = _run_elastix(image("fixed"), image("moving"), request["maps"],
                                request["names"], image("mask"), console=True)
            sitk.WriteImage(done.warped, str(root / "warped.mha"), False)
            result = {"transform": done.transform, "final_metric": done.final_metric,
                      "seconds": done.seconds}
        elif request["kind"] == "apply":
            sitk.WriteImage(_transformix(image("image"), request["maps"]),
                            str(root / "output.mha"), False)
        elif request["kind"] == "field":
            np.save(root / "field.npy", _displacement_field(image("grid"), request["maps"]))
        else:
            raise ValueError(f"unknown request {request['kind']!r}")
    except RegistrationFailed as error:
        result = {"failed": str(error)}
    (root / "result.json").write_text(json.dumps({"kind": request["kind"], **result}),
                                      encoding="utf-8")
    return 1 if "failed" in result else 0


_RESOLUTION = re.compile(r"^Resolution:\s*(\d+)")
_ITERATION = re.compile(r"^(\d+)\t")


class _ElastixProgress:
    """elastix's console log -> progress: one unit per level of each stage, split by its
    iterations (a level that converges early jumps to the next)."""

    def __init__(self, maps: Sequence[ParameterMap], stage: str,
                 progress: ProgressCallback | None):
        self.levels: list[tuple[int, int, int]] = []  # (stage, level, iterations)
        for index, parameters in enumerate(maps):
            count = int(parameters.get("NumberOfResolutions", ["1"])[0])
            iterations = parameters.get("MaximumNumberOfIterations", ["500"])
            for level in range(count):
                self.levels.append((index, level, int(iterations[min(level,
                                                                       len(iterations) - 1)])))
        self.stages = len(maps)
        self.stage = stage
        self.progress = progress
        self.level = -1
        self.shown = -1.0

    def __call__(self, line: str) -> bool:
        """Take one line; False when it is not part of elastix's progress log."""
        if _RESOLUTION.match(line):
            self.level = min(self.level + 1, len(self.levels) - 1)
            self._show(0)
            return True
        found = _ITERATION.match(line)
        if found and self.level >= 0:
            self._show(int(found.group(1)))
            return True
        return False

    def _show(self, iteration: int) -> None:
        stage, level, iterations = self.levels[self.level]
        done = self.level + min(1.0, iteration / max(iterations, 1))
        if done - self.shown < 0.01 * len(self.levels) and iteration:
            return  # about one event per percent
        self.shown = done
        counts = sum(1 for s, _, _ in self.levels if s == stage)
        report(self.progress, self.stage, done, len(self.levels),
               message=f"stage {stage + 1} of {self.stages}, level {level + 1} of {counts}")


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
    ("samples map outside moving image buffer",  # ITK's v4 metrics (the SimpleITK engine)
     "too little of the {moving} overlaps the {fixed} during optimisation (all samples map "
     "outside the moving image). Check that both show the same region, or that the images "
     "are not grossly misaligned."),
    ("Total Mass of the image was zero",
     "the {moving} or the {fixed} holds (almost) no signal where they overlap, so elastix "
     "cannot centre one on the other. Check that the right series was chosen."),
    ("Could not find enough image samples",
     "elastix found too few usable voxels (are the images empty or constant?)."),
)


def _failure_message(error: Exception, log_path: Path | None, names: tuple[str, str]) -> str:
    text = f"{error}\n{_read_log(log_path) if log_path is not None else ''}"
    for needle, explanation in _KNOWN_FAILURES:
        if needle in text:
            return (f"registration of {names[1]} to {names[0]} failed: "
                    + explanation.format(fixed=names[0], moving=names[1]))
    lines = [line.strip() for line in text.splitlines() if "ERROR" in line or "rror" in line]
    detail = lines[-1] if lines else str(error).strip().splitlines()[-1]
    return f"registration of {names[1]} to {names[0]} failed: {detail}"
