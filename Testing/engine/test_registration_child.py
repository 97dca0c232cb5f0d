"""elastix in a child process (how the Slicer logic runs it): the same result as in this
process, progress while it runs, cancel ends the launcher and its interpreter, and Slicer's ITK
plugins are never loaded.

The child is started through a stand-in for PythonSlicer (helpers/launchers.py) that sets
ITK_AUTOLOAD_PATH the way PythonSlicer's launcher settings do (Slicer v5.10.0,
CMake/SlicerBlockCTKAppLauncherSettings.cmake and
SuperBuild/python_configure_python_launcher.cmake: PythonSlicer reads SlicerLauncherSettings.ini,
which sets ITK_AUTOLOAD_PATH). The images are the small ones of test_registration.py's
failure test.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from deformations import grid, render
from launchers import descendants, itk_plugin_folder, python_launcher, running

from oncoseg.errors import Cancelled, OncoSegError
from oncoseg.progress import CancelToken
from oncoseg.registration import SLICER_ITK_VARIABLES, register

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher scripts")

FAST = {"overrides": {"MaximumNumberOfIterations": 40},
        "stage_overrides": [{"NumberOfResolutions": 2}, {"NumberOfResolutions": 2}]}


@pytest.fixture(scope="module")
def pair():
    g = grid(size=(40, 32, 16), spacing=(4, 4, 6))
    return render(g), render(g, warp=4.0)


def parameters(result):
    return [np.array(m["TransformParameters"], float) for m in result.transform]


def test_child_registration_equals_in_process_and_loads_no_slicer_itk_plugin(
        pair, tmp_path, monkeypatch):
    fixed, moving = pair
    here = register(fixed, moving, "rectal", names=("dwi_b0", "t2w"), **FAST)

    plugins = itk_plugin_folder(tmp_path / "itk")
    if plugins is None:
        pytest.skip("needs a C compiler to build the ITK plugin probe")
    marker = tmp_path / "plugin-loaded"
    monkeypatch.setenv("ONCOSEG_TEST_ITK_PLUGIN_MARKER", str(marker))
    # the probe works: a process that keeps ITK_AUTOLOAD_PATH loads the plugin on import
    subprocess.run([sys.executable, "-c", "import SimpleITK"], check=True,
                   env={**os.environ, "ITK_AUTOLOAD_PATH": str(plugins)})
    assert marker.read_text() == "loaded\n"
    marker.unlink()

    # Slicer's environment: the variables set in this process and again by the launcher
    for name in SLICER_ITK_VARIABLES:
        monkeypatch.setenv(name, str(plugins))
    launcher = python_launcher(tmp_path / "bin", {"ITK_AUTOLOAD_PATH": str(plugins)})
    events = []
    there = register(fixed, moving, "rectal", names=("dwi_b0", "t2w"),
                     progress=events.append, child_python=str(launcher), **FAST)

    assert not marker.exists(), "the child loaded the ITK plugins of ITK_AUTOLOAD_PATH"
    assert len(there.transform) == len(here.transform) == 2
    for a, b in zip(parameters(here), parameters(there), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3)
    assert there.final_metric == pytest.approx(here.final_metric, rel=1e-3)
    difference = np.abs(sitk.GetArrayFromImage(there.warped) -
                        sitk.GetArrayFromImage(here.warped)).max()
    assert difference < 1e-3 * np.abs(sitk.GetArrayFromImage(here.warped)).max()
    assert there.warped.GetSize() == fixed.GetSize()

    # progress came level by level from the child's log, in order, ending at 1
    levels = [e for e in events if "level" in e.message]
    assert {e.message for e in levels} >= {"stage 1 of 2, level 1 of 2",
                                           "stage 2 of 2, level 2 of 2"}
    assert [e.fraction for e in levels] == sorted(e.fraction for e in levels)
    assert events[-1].fraction == 1.0

    # the transform applied in the child too equals the one applied here
    labels = sitk.Cast(moving > 0.6, sitk.sitkUInt8)
    assert np.array_equal(sitk.GetArrayFromImage(there.apply(labels, "nearest")),
                          sitk.GetArrayFromImage(here.apply(labels, "nearest")))
    assert not marker.exists()


def test_cancel_ends_the_launcher_and_its_interpreter_mid_registration(pair, tmp_path,
                                                                      monkeypatch):
    fixed, moving = pair
    scratch = tmp_path / "tmp"  # this process's and the child's temporary folders
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    launcher = python_launcher(tmp_path / "bin")
    cancel = CancelToken()
    tree = []

    def progress(event):
        if "level" in event.message and not tree:  # elastix runs in the child
            tree.extend(descendants())
            cancel.cancel()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        register(fixed, moving, "rectal", names=("dwi_b0", "t2w"), progress=progress,
                 cancel=cancel, child_python=str(launcher))
    assert len(tree) >= 2, "the launcher and the interpreter it started"
    assert running(tree) == []
    assert list(scratch.iterdir()) == [], "nothing left of the cancelled registration"
    assert time.monotonic() - started < 120


def test_a_child_that_dies_is_reported_with_its_last_words(pair, tmp_path):
    broken = tmp_path / "BrokenPython"
    broken.write_text("#!/bin/sh\necho 'Fatal Python error: init_import_site'\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(OncoSegError, match=r"ended with exit code 3: Fatal Python error"):
        register(*pair, "affine", child_python=str(broken))


def test_images_go_to_the_child_without_the_metadata_metaimage_cannot_hold(tmp_path, capfd):
    from oncoseg.registration import write_child_input

    image = render(grid(size=(8, 8, 4), spacing=(4, 4, 6)))
    nifti = tmp_path / "t2w.nii.gz"
    sitk.WriteImage(image, str(nifti))
    read = sitk.ReadImage(str(nifti))
    assert "descrip" in read.GetMetaDataKeys()  # what a NIfTI reader attaches
    capfd.readouterr()
    write_child_input(read, tmp_path / "t2w.mha")
    assert "WARNING" not in capfd.readouterr().err
    assert "descrip" in read.GetMetaDataKeys(), "the caller's image was changed"
    back = sitk.ReadImage(str(tmp_path / "t2w.mha"))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(read))
    assert back.GetDirection() == pytest.approx(read.GetDirection())
    assert back.GetOrigin() == pytest.approx(read.GetOrigin())


def test_the_training_child_loads_no_slicer_itk_plugin(tmp_path, monkeypatch):
    """``PythonSlicer -m oncoseg train`` (the panel's training process): the launcher sets
    ITK_AUTOLOAD_PATH again, so ``python -m oncoseg`` itself drops it before SimpleITK loads."""
    plugins = itk_plugin_folder(tmp_path / "itk")
    if plugins is None:
        pytest.skip("needs a C compiler to build the ITK plugin probe")
    marker = tmp_path / "plugin-loaded"
    monkeypatch.setenv("ONCOSEG_TEST_ITK_PLUGIN_MARKER", str(marker))
    launcher = python_launcher(tmp_path / "bin", {"ITK_AUTOLOAD_PATH": str(plugins)})
    probe = "import SimpleITK"  # the check of the probe itself, through the same launcher
    subprocess.run([str(launcher), "-c", probe], check=True)
    assert marker.read_text() == "loaded\n"
    marker.unlink()
    # `info` reads an image with SimpleITK, as training does
    image = tmp_path / "image.nrrd"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(image))
    done = subprocess.run([str(launcher), "-m", "oncoseg", "info", str(image)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "python -m oncoseg loaded the ITK plugins of ITK_AUTOLOAD_PATH"
