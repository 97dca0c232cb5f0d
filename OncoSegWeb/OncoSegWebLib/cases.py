"""The cases under a data root, each checked on its own so that one broken case does not hide
the others.

A case is a folder holding image volumes (NIfTI, NRRD, MHA, ...), a DICOM series, or a scan's
PNG slices in the UW-Madison GI layout directly; label files (``label``, ``seg``, ``mask`` in the
name) are references, not inputs. Folders are searched a few levels deep, so a root of data sets
(``root/rectal/rectal_000``, ``root/gi/train/case1/case1_day15/scans``) works as well as a root
of cases.

A cohort's output folder (``oncoseg predict TASK --dataset ...``, recognised by its
``cohort.json``) lists its finished cases instead, flagged ones first: each opens with its
inputs and its stored result, ready for correction, without running the model again.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oncoseg.cohort import CASES, TABLE
from oncoseg.cohort import SUMMARY as COHORT_SUMMARY
from oncoseg.datasets import kaggle
from oncoseg.datasets.base import FRACTION_SUFFIX
from oncoseg.datasets.layouts import STAGING_TABLE, staging_table
from oncoseg.errors import InputError
from oncoseg.io.dicom_series import is_dicom_file
from oncoseg.io.folders import links_within, may_follow, walk
from oncoseg.io.volumes import (
    is_volume_file,
    list_dicom_series,
    volume_information,
    volume_stem,
)
from oncoseg.method import Hints
from OncoSegWebLib.security import inside_root

MAX_DEPTH = 5
LABEL_WORDS = ("label", "seg", "mask")


@dataclass(frozen=True)
class CaseEntry:
    id: str  # the folder relative to the data root, '/'-separated
    folder: Path
    volumes: dict[str, Path] = field(default_factory=dict)  # name -> file or series folder
    error: str = ""  # why the case cannot be opened; empty when it can
    result: Path | None = None  # a cohort case: the folder of its stored result
    flags: tuple[str, ...] = ()  # a cohort case: its quality-control reasons
    # name -> how to choose its series in a folder holding several (UID, or its description
    # with the acquisition in parentheses where series share a UID)
    series: dict[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not self.error and bool(self.volumes)


def volume_name(path: Path) -> str:
    """The file name without its ending; a Slicer segmentation 'x.seg.nrrd' is 'x'."""
    if path.name.lower().endswith(".seg.nrrd"):
        return path.name[: -len(".seg.nrrd")]
    return volume_stem(path) or path.stem


def is_label_file(path: Path) -> bool:
    """Labels, not a scan: a file named as labels are (or as a label's partial volume,
    ``label_fraction``), or any Slicer segmentation (which methods refuse as a scan, so a case
    listing it as one could not open)."""
    if path.name.lower().endswith(".seg.nrrd"):
        return True
    stem = volume_name(path).lower().removesuffix(FRACTION_SUFFIX)
    return any(stem == word or stem.endswith(("_" + word, "-" + word)) for word in LABEL_WORDS)


def _check_volume(path: Path) -> str:
    try:
        reader = volume_information(path)
    except InputError as error:
        return f"{path.name} cannot be read ({error.problem[:120]})"
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].replace(str(path), path.name)
        return f"{path.name} cannot be read ({reason[:120]})"  # no server paths on the page
    if reader.GetDimension() != 3:
        return f"{path.name} is {reader.GetDimension()}D; a 3D volume is needed"
    return ""


def _unique_name(name: str, number: str, taken: Mapping[str, object]) -> str:
    """``name``, or where a series of the same description is listed already, the name with
    its series number, then a count: a name the case does not use yet."""
    candidates = [name, *([f"{name} #{number}"] if number else [])]
    candidates += (f"{name} ({k})" for k in range(2, len(taken) + 3))
    return next(c for c in candidates if c not in taken)


def read_case(root: Path, folder: Path) -> CaseEntry | None:
    """The case in ``folder``, or None when the folder holds no images at all."""
    case_id = folder.relative_to(root).as_posix() or "."
    found = sorted(p for p in folder.iterdir() if p.is_file())
    files = [p for p in found if may_follow(p)]  # a linked file out of the root is not read
    outside = [p.name for p in found if p not in files and is_volume_file(p)]
    volumes = {volume_name(p): p for p in files if is_volume_file(p) and not is_label_file(p)}
    # a DICOMDIR indexes an export's files in the folders below it (list_dicom_series follows it)
    has_dicom = any(p.name.upper() == "DICOMDIR" or (not is_volume_file(p) and is_dicom_file(p))
                    for p in files)
    chosen: dict[str, str] = {}
    if has_dicom:
        series = list_dicom_series(folder)
        if not series:
            return CaseEntry(case_id, folder, error="its DICOM files hold no readable series")
        uids = [item.uid for item in series]
        for item in series:
            name = _unique_name(item.label or item.modality or "DICOM series", item.number,
                                volumes)
            volumes[name] = folder
            if len(series) > 1:
                chosen[name] = item.uid if item.uid and uids.count(item.uid) == 1 \
                    else item.label
    if not volumes and kaggle.slice_files(folder):
        volumes[folder.parent.name] = folder  # the scan's name: <case>_<day>
    errors = [f"{name} links outside the data root and is not opened" for name in outside]
    if not volumes:
        return CaseEntry(case_id, folder, error=errors[0]) if errors else None
    errors += [e for e in (_check_volume(p) for p in volumes.values() if p.is_file()) if e]
    return CaseEntry(case_id, folder, volumes, "; ".join(errors), series=chosen)


def cohort_cases(root: Path, cohort: Path) -> list[CaseEntry]:
    """A cohort output folder's finished cases (:func:`find_cases` orders them, most flags
    first, with every other cohort's); a case whose inputs are gone or lie outside the data
    root carries that as its error."""
    table = cohort / TABLE
    if not table.is_file():
        return []
    with table.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("status") == "done"]
    cases = []
    for row in rows:
        folder = cohort / CASES / row["case_id"]
        case_id = folder.relative_to(root).as_posix()
        flags = tuple(r for r in (row.get("flag_reasons") or "").split(" | ") if r)
        try:
            document = json.loads((folder / "result.json").read_text(encoding="utf-8"))
            volumes = {role: inside_root(root, path) for role, path in
                       document["inputs"].items()}
            missing = [role for role, path in volumes.items() if not path.exists()]
            error = f"its {missing[0]} input is gone" if missing else ""
            # the series a DICOM input was read from, in a folder that may hold several
            series = {role: found["series_uid"] for role, found in
                      document.get("input_series", {}).items() if found.get("series_uid")}
        except (OSError, ValueError, KeyError, InputError) as problem:
            volumes, series, error = {}, {}, f"its result cannot be opened ({str(problem)[:120]})"
        cases.append(CaseEntry(case_id, folder, volumes, error, folder, flags, series))
    return cases


def find_cases(root: str | os.PathLike[str]) -> list[CaseEntry]:
    """Every case under ``root``: cohorts' finished cases first (flagged first), then input
    cases sorted by id; unreadable ones carry their error."""
    root = Path(root).resolve()
    with links_within(root):  # linked folders are followed only inside the data root
        return _cases_under(root)


def _cases_under(root: Path) -> list[CaseEntry]:
    cases, cohorts = [], []
    for current, folders, files in walk(root, MAX_DEPTH):
        if COHORT_SUMMARY in files:  # a cohort's output: its results, not input cases
            cohorts += cohort_cases(root, Path(current))
            folders[:] = []
            continue
        try:
            case = read_case(root, Path(current))
        except OSError as error:
            case = CaseEntry(Path(current).relative_to(root).as_posix(), Path(current),
                             error=f"cannot be listed ({error.strerror})")
        if case is not None:
            cases.append(case)
            folders[:] = []  # a case's subfolders (scans, series) belong to it
    return sorted(cohorts, key=lambda c: (-len(c.flags), c.id)) + \
        sorted(cases, key=lambda c: c.id)


def stated_hints(case: CaseEntry, task: str) -> Hints:
    """What the case's data set states for a run of ``task``: a staging case's ROI box, from
    the staging.csv of the data set holding its folder (the staging layout). The network stages
    a crop round rectum and tumour, and refuses a run without one."""
    table = case.folder.parent / STAGING_TABLE
    if task != "staging" or not table.is_file():
        return Hints()
    return Hints(roi_lps_mm=staging_table(case.folder.parent).get(case.folder.name, {})
                 .get("roi_lps_mm"))
