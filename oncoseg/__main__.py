"""``python -m oncoseg`` (used by Slicer's ``PythonSlicer -m oncoseg`` for training runs).

PythonSlicer is a launcher that points ``ITK_AUTOLOAD_PATH`` at Slicer's own ITK plugins
(SlicerLauncherSettings.ini, SuperBuild/python_configure_python_launcher.cmake at v5.10.0), and
``import SimpleITK`` alone loads them: a known crash (Slicer issue #8947). OncoSeg uses no ITK
plugin, so they go before anything imports ITK. Like the ``oncoseg`` script it ends through
``console_main``: no slow interpreter teardown once every output is written.
"""

from oncoseg.childprocess import forget_slicer_itk

forget_slicer_itk()

from oncoseg.cli import console_main  # noqa: E402  (after the environment is cleaned)

console_main()
