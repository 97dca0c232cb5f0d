"""``python -m oncoseg`` (used by Slicer's ``PythonSlicer -m oncoseg`` for training runs)."""

from oncoseg.cli import main

raise SystemExit(main())
