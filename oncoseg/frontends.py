"""Where the front ends that share the Slicer modules' logic live in a source checkout.

The engine never imports them; ``oncoseg serve`` puts these folders on the path (as Slicer
does for its modules) and loads the review app by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from oncoseg.errors import InputError

CHECKOUT = Path(__file__).resolve().parents[1]
MODULE_FOLDERS = ("OncoSegCommon", "RectalSeg", "OARSeg", "StagingCNN", "BrainTumor2D3D",
                  "OncoSegWeb")


def add_module_folders() -> None:
    """Put the module folders on ``sys.path``; an installed wheel has none of them."""
    if not (CHECKOUT / "OncoSegWeb").is_dir():
        raise InputError("oncoseg serve", "needs a source checkout of OncoSeg (the review app "
                         "runs the Slicer modules' logic, which the wheel does not carry): "
                         "git clone, then pip install -e '.[web]'")
    for folder in MODULE_FOLDERS:
        path = str(CHECKOUT / folder)
        if path not in sys.path:
            sys.path.insert(0, path)
