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
    child_python: str | None = None  # made in a child process: apply the transform there too

    def apply(self, image: sitk.Image, interpolation: str = "linear",
              cancel: CancelToken | None = None) -> sitk.Image:
        """Another image of the moving image's space, resampled onto the fixed grid."""
        order = {"nearest": "0", "linear": "1", "bspline": "3"}[interpolation]
        maps = [dict(m, FinalBSplineInterpolationOrder=[order]) for m in self.transform]
        if self.child_python is not None:
            return _in_child(self.child_python, "apply", {"image": image}, {"maps": maps},
                             None, cancel)["output"]
        return _transformix(image, maps)

    def displacement_field(self, cancel: CancelToken | None = None) -> np.ndarray:
        """Per fixed-grid voxel, the LPS vector (mm) to the corresponding moving point;
        array (z, y, x, 3)."""
        if self.child_python is not None:
            return _in_child(self.child_python, "field", {"grid": self.fixed_grid},
                             {"maps": self.transform}, None, cancel)["field"]
        return _displacement_field(self.fixed_grid, self.transform)


def _transformix(image: sitk.Image, maps: Sequence[ParameterMap]) -> sitk.Image:
    return to_sitk(_itk().transformix_filter(to_itk(image), _parameter_object(maps),
                                             log_to_console=False))


def _displacement_field(grid: sitk.Image, maps: Sequence[ParameterMap]) -> np.ndarray:
    itk = _itk()
    # transformix writes deformationField.mha into its output directory, by default the
    # user's working directory: give it a scratch folder instead
    with tempfile.TemporaryDirectory(prefix="oncoseg-transformix-") as scratch:
        field = itk.transformix_deformation_field(
            to_itk(grid), _parameter_object(maps), log_to_console=False,
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
    child_python: str | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed``. ``fixed_mask`` (non-zero = use) restricts where the
    metric samples, e.g. to the body rather than noisy air.

    ``child_python``: run elastix in a child process of that interpreter (inside Slicer:
    ``PythonSlicer``), see "In a child process" below; its progress is reported level by level
    and iteration by iteration, and cancelling ends the child's whole process tree at once.
    None (the default, the CLI's): in this process, where cancellation is honoured before and
    after the elastix run only (elastix cannot be interrupted in-process)."""
    check_overlap(moving, fixed, names[1], names[0])
    if fixed_mask is not None:
        check_overlap(fixed_mask, fixed, f"mask of {names[0]}", names[0])
        if not sitk.GetArrayViewFromImage(fixed_mask).any():
            raise InputError(f"mask of {names[0]}", "is empty: registration would have no "
                             "voxel to compare")
    maps = preset_maps(preset, overrides, stage_overrides)
    check_cancelled(cancel)
    stage = f"Registering {names[1]} to {names[0]}"
    where = "in a child process" if child_python is not None else "in this process"
    report(progress, stage, 0, 1, message=f"{preset}: {len(maps)} stage(s), {where}")
    if child_python is None:
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
    itk = _itk()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oncoseg-elastix-") as folder:
        method = itk.ElastixRegistrationMethod[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
        method.SetFixedImage(to_itk(fixed))
        method.SetMovingImage(to_itk(moving))
        if fixed_mask is not None:
            method.SetFixedMask(to_itk(fixed_mask, pixel="UC"))
        method.SetParameterObject(_parameter_object(maps))
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
        warped = to_sitk(method.GetOutput())
        transform_object = method.GetTransformParameterObject()
        transform = [{k: list(v) for k, v in dict(transform_object.GetParameterMap(i)).items()}
                     for i in range(transform_object.GetNumberOfParameterMaps())]
    return RegistrationResult(warped, transform, _final_metric(log),
                              time.perf_counter() - started, fixed)


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
