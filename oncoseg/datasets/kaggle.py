"""The UW-Madison GI tract segmentation layout (Kaggle 2022).

    train.csv                                  id,class,segmentation
    train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png

One scan (a case on a day) is a stack of 16-bit PNG slices named with their number, width,
height and pixel spacing; slices are 3 mm apart. Reading such a stack is a volume format
(:mod:`oncoseg.io.png_slices`, which ``read_volume`` also uses); its names are available here
too. Masks are run-length encoded per slice and organ ("start length ..." over the row-major
flattened slice, starts counted from 1).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from oncoseg.datasets.base import Case, check_case_id
from oncoseg.errors import InputError
from oncoseg.io.png_slices import SLICE_THICKNESS_MM, read_scan, slice_files

# the scans' format, for the callers that know it as part of this layout
__all__ = ["CLASSES", "SLICE_THICKNESS_MM", "TABLE", "check_case", "matches", "read_cases",
           "read_masks", "read_scan", "rle_decode", "rle_encode", "slice_files"]

CLASSES = ("large_bowel", "small_bowel", "stomach")
TABLE = "train.csv"
_ID = re.compile(r"^(case\d+)_(day\d+)_slice_(\d{4})$")


def rle_encode(mask: np.ndarray) -> str:
    flat = np.concatenate([[0], np.asarray(mask, bool).ravel(order="C").astype(np.int8), [0]])
    runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(v) for v in runs)


def rle_decode(text: str, shape: tuple[int, int], where: str) -> np.ndarray:
    mask = np.zeros(shape[0] * shape[1], np.uint8)
    values = text.split()
    if len(values) % 2:
        raise InputError(where, "has an odd number of run-length values")
    try:
        starts, lengths = (np.asarray(values[0::2], int) - 1, np.asarray(values[1::2], int))
    except ValueError:
        raise InputError(where, "has a run-length value that is not a whole number") from None
    if len(starts) and (starts.min() < 0 or lengths.min() < 1):
        raise InputError(where, "has a run-length start below 1 or a length below 1")
    if len(starts) and int((starts + lengths).max()) > mask.size:
        raise InputError(where, f"has a run-length mask longer than its image "
                         f"({int((starts + lengths).max())} pixels, the slice has {mask.size})")
    for start, length in zip(starts, lengths, strict=True):
        mask[start:start + length] = 1
    return mask.reshape(shape)


def read_masks(case: Case) -> dict[str, np.ndarray]:
    """Each organ's mask (z, y, x) for a scan read with :func:`read_cases`."""
    scans = case.images["mr"]
    slices = slice_files(scans)
    height, width = slices[0][2][1], slices[0][2][0]
    number_to_index = {n: i for i, (n, *_) in enumerate(slices)}
    masks = {c: np.zeros((len(slices), height, width), np.uint8) for c in CLASSES}
    for (number, organ), text in case.info["rle"].items():
        if number not in number_to_index:
            raise InputError(f"case '{case.id}'", f"train.csv has a mask for slice {number:04d}, "
                             "which has no image")
        where = f"case '{case.id}' slice {number:04d} {organ}"
        masks[organ][number_to_index[number]] = rle_decode(text, (height, width), where)
    return masks


def matches(root: Path) -> bool:
    return (root / TABLE).is_file() and (root / "train").is_dir()


def read_cases(root: Path, roles=None, **_options) -> list[Case]:
    """One case per scan (case and day); the patient is the case, so splits keep days
    together."""
    rle: dict[tuple[str, str], dict[tuple[int, str], str]] = defaultdict(dict)
    with (root / TABLE).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "class", "segmentation"} <= set(reader.fieldnames or ()):
            raise InputError(str(root / TABLE), "needs the columns id, class, segmentation")
        for line, row in enumerate(reader, start=2):
            match = _ID.match(row["id"])
            if not match:
                raise InputError(f"case '{row['id']}'", f"in {root / TABLE} (line {line}) is not "
                                 "a caseN_dayN_slice_NNNN id")
            if row["class"] not in CLASSES:
                raise InputError(f"case '{row['id']}'", f"has class '{row['class']}' in "
                                 f"{root / TABLE} (line {line}); expected {', '.join(CLASSES)}")
            if row["segmentation"].strip():
                patient, day, number = match.groups()
                rle[(patient, day)][(int(number), row["class"])] = row["segmentation"]
    cases = []
    for patient_dir in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        check_case_id(patient_dir.name, str(root / "train"))
        for day_dir in sorted(p for p in patient_dir.iterdir() if p.is_dir()):
            check_case_id(day_dir.name, str(patient_dir))
            scans = day_dir / "scans"
            patient, _, day = day_dir.name.partition("_")
            cases.append(Case(day_dir.name, {"mr": scans}, {}, patient=patient_dir.name,
                              info={"rle": rle.get((patient, day), {})}))
    return cases


def check_case(case: Case, where: str) -> None:
    scans = case.images["mr"]
    if not scans.is_dir() or not slice_files(scans):
        raise InputError(f"case '{case.id}'", f"in {where} has no scans/slice_*.png files")
    read_masks(case)  # decodes every mask: bad run-lengths are found before training
