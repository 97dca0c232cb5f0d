"""A folder of PNG slices as one volume: the ``scans/`` folders of the UW-Madison GI tract data
set (Kaggle 2022).

    scans/slice_0001_266_266_1.50_1.50.png    slice number, width, height, pixel spacing (mm)

Each slice is a 16-bit PNG named with its number, size and in-plane spacing; slices are 3 mm
apart. The format lives here, with the other volume formats, because :func:`oncoseg.io.volumes.
read_volume` accepts such a folder as an input; the data set layout around it (``train.csv`` and
its run-length masks, cases and days) is :mod:`oncoseg.datasets.kaggle`, which builds on this.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError

SLICE_THICKNESS_MM = 3.0
_SLICE = re.compile(r"^slice_(\d{4})_(\d+)_(\d+)_([\d.]+)_([\d.]+)\.png$")


def slice_files(scans: Path) -> list[tuple[int, Path, tuple[int, int], tuple[float, float]]]:
    """(number, path, (width, height), (sx, sy)) of each slice, in slice order."""
    found = []
    for path in scans.iterdir():
        match = _SLICE.match(path.name)
        if match:
            n, w, h, sx, sy = match.groups()
            found.append((int(n), path, (int(w), int(h)), (float(sx), float(sy))))
    return sorted(found)


def read_scan(scans: Path, case_id: str = "") -> sitk.Image:
    """The slices of one scan as a 3D image (x: width, y: height, z: slice number)."""
    from PIL import Image

    slices = slice_files(scans)
    if not slices:
        raise InputError(f"case '{case_id}'", f"has no slice_*.png files in {scans}")
    sizes = {s[2] for s in slices}
    spacings = {s[3] for s in slices}
    if len(sizes) > 1 or len(spacings) > 1:
        raise InputError(f"case '{case_id}'", f"has slices of different sizes or spacings in "
                         f"{scans}: {sorted(sizes)}")
    (width, height), (sx, sy) = sizes.pop(), spacings.pop()
    numbers = [s[0] for s in slices]
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing or len(set(numbers)) < len(numbers):
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise InputError(f"case '{case_id}'", f"has slices {numbers[0]} to {numbers[-1]} in "
                         f"{scans} " + (f"with {len(missing)} missing ({shown})" if missing
                                        else "with repeated numbers")
                         + f": stacked {SLICE_THICKNESS_MM:g} mm apart, every slice after a "
                         "gap would lie in the wrong place")
    stack = np.zeros((len(slices), height, width), np.uint16)
    for index, (_, path, _, _) in enumerate(slices):
        try:
            with Image.open(path) as png:
                pixels = np.asarray(png)
        except (OSError, ValueError) as error:  # truncated, not a PNG, an unknown mode
            raise InputError(f"case '{case_id}'", f"slice {path.name} cannot be read "
                             f"({error})") from None
        if pixels.shape != (height, width):
            raise InputError(f"case '{case_id}'", f"slice {path.name} is {pixels.shape[1]} x "
                             f"{pixels.shape[0]} pixels, its name says {width} x {height}")
        stack[index] = pixels
    image = sitk.GetImageFromArray(stack)
    image.SetSpacing((sx, sy, SLICE_THICKNESS_MM))
    return image
