"""Registration recovers a known deformation, and fails with a message a user can act on.

The images are a textured synthetic pelvis and the same anatomy pulled back through a known
smooth deformation (helpers/deformations.py); the error is measured at landmarks against the
exact inverse mapping.
"""

import sys

import numpy as np
import pytest
import SimpleITK as sitk
from deformations import grid, landmarks, render, true_mapping

from oncoseg.registration import (
    RegistrationFailed,
    preset_maps,
    register,
    write_parameter_file,
)

WARP_MM = 5.0


def displacement_at(result, points):
    field = result.displacement_field()
    values = []
    for component in range(3):
        image = sitk.GetImageFromArray(np.ascontiguousarray(field[..., component]))
        image.CopyInformation(result.fixed_grid)
        values.append([image.EvaluateAtPhysicalPoint(tuple(p), sitk.sitkLinear) for p in points])
    return np.array(values).T


def target_registration_error(result, points):
    return np.linalg.norm(points + displacement_at(result, points) - true_mapping(points, WARP_MM),
                          axis=1)


@pytest.fixture(scope="module")
def pelvis_pair():
    g = grid(size=(72, 56, 26), spacing=(2.2, 2.2, 4.0))
    return render(g), render(g, warp=WARP_MM)


def check_recovery(pelvis_pair, **options):
    fixed, moving = pelvis_pair
    points = landmarks()
    before = np.linalg.norm(true_mapping(points, WARP_MM) - points, axis=1).mean()
    result = register(fixed, moving, "rectal", names=("dwi_b0", "t2w"), **options)
    after = target_registration_error(result, points).mean()
    assert before > 3.0
    assert after < 1.5, f"mean TRE {after:.2f} mm (before registration {before:.2f} mm)"
    assert result.final_metric is not None and result.final_metric < 0
    return result


def test_rectal_preset_recovers_a_known_deformation(pelvis_pair, tmp_path, monkeypatch):
    # The paper's preset with fewer iterations per level, to keep the suite short; the full
    # preset is the slow test below. Nothing is written into the working directory (elastix
    # and transformix write there unless told otherwise).
    monkeypatch.chdir(tmp_path)
    result = check_recovery(pelvis_pair, overrides={"MaximumNumberOfIterations": 200},
                            stage_overrides=[{}, {"NumberOfResolutions": 3}])
    # a label map follows the same transform and stays a label map
    labels = sitk.Cast(pelvis_pair[1] > 0.6, sitk.sitkUInt8)
    warped = result.apply(labels, "nearest")
    assert set(np.unique(sitk.GetArrayViewFromImage(warped))) <= {0, 1}
    assert warped.GetSize() == pelvis_pair[0].GetSize()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_rectal_preset_recovers_a_known_deformation(pelvis_pair):
    check_recovery(pelvis_pair)


@pytest.mark.parametrize("child_python", [None, sys.executable], ids=["here", "in a child"])
def test_failure_is_a_clear_message(child_python):
    """The same words whether elastix ran here or in a child process (as in Slicer)."""
    fixed = render(grid(size=(40, 32, 16), spacing=(4, 4, 6)))
    moving = render(grid(size=(40, 32, 16), spacing=(4, 4, 6), origin=(60, 40, 30)))
    with pytest.raises(RegistrationFailed, match="registration of t2w to dwi_b0 failed: too "
                       "little of the t2w overlaps the dwi_b0"):
        register(fixed, moving, "affine", overrides={"MaximumNumberOfIterations": 20},
                 names=("dwi_b0", "t2w"), child_python=child_python)


def test_preset_maps_follow_the_paper(tmp_path):
    affine, bspline = preset_maps("rectal")
    assert affine["Transform"] == ["AffineTransform"]
    assert bspline["Metric"] == ["AdvancedMattesMutualInformation",
                                 "TransformBendingEnergyPenalty"]
    assert (bspline["Metric0Weight"], bspline["Metric1Weight"]) == (["1"], ["20"])
    assert bspline["FinalGridSpacingInPhysicalUnits"] == ["4"]
    assert bspline["Optimizer"] == ["AdaptiveStochasticGradientDescent"]
    assert bspline["ASGDParameterEstimationMethod"] == ["DisplacementDistribution"]
    assert "NumberOfThreads" not in bspline  # crashes itk-elastix with multi-metric maps
    changed = preset_maps("rectal", {"MaximumNumberOfIterations": 7},
                          [{}, {"FinalGridSpacingInPhysicalUnits": 8}])
    assert changed[0]["MaximumNumberOfIterations"] == ["7"]
    assert changed[1]["FinalGridSpacingInPhysicalUnits"] == ["8"]
    text = write_parameter_file(bspline, tmp_path / "p.txt").read_text(encoding="utf-8")
    assert '(Metric "AdvancedMattesMutualInformation" "TransformBendingEnergyPenalty")' in text
    assert "(Metric1Weight 20)" in text
    with pytest.raises(ValueError, match="unknown registration preset"):
        preset_maps("nope")


def test_an_empty_mask_is_refused_before_elastix_runs():
    from oncoseg.errors import InputError

    fixed = render(grid(size=(20, 16, 8), spacing=(4, 4, 6)))
    empty = sitk.Image(fixed.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(fixed)
    with pytest.raises(InputError, match="mask of dwi_b0: is empty"):
        register(fixed, fixed, "affine", fixed_mask=empty, names=("dwi_b0", "t2w"))
