"""Readers for the layouts data sets come in, and ``--layout auto``.

Each reader knows how to recognise its layout (``matches``) and how to list its cases
(``read``); cases are checked (files present, labels on an image's grid, safe ids) before they
are returned, so training never starts on a broken data set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncoseg.datasets import kaggle, rtstruct_cohort
from oncoseg.datasets.base import FRACTION_SUFFIX, Case, Dataset, check_case_id, check_files
from oncoseg.errors import InputError
from oncoseg.io.volumes import volume_stem
from oncoseg.tasks import Task

LABEL_PREFIXES = ("label", "seg")


# ---------------------------------------------------------------------------- case folders


def _folders_match(root: Path) -> bool:
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(subfolders) and all(any(volume_stem(f) for f in p.iterdir() if f.is_file())
                                    for p in subfolders)


def _folders_read(root: Path, roles: Sequence[str] | None, partial: bool = False,
                  **_options) -> list[Case]:
    """One folder per case, one file per role. With ``partial`` (a task whose roles are all
    optional, such as the brain's four sequences) a case lacking some roles is read with the
    ones it has (``info['missing']``); one with none is refused."""
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        check_case_id(folder.name, str(root))
        files = {volume_stem(f): f for f in folder.iterdir() if f.is_file() and volume_stem(f)}
        labels = {s: f for s, f in files.items() if s.lower().startswith(LABEL_PREFIXES)}
        shares = {s for s in labels
                  if s.endswith(FRACTION_SUFFIX) and s.removesuffix(FRACTION_SUFFIX) in labels}
        fractions = {s.removesuffix(FRACTION_SUFFIX): labels.pop(s) for s in sorted(shares)}
        images = {s: f for s, f in files.items() if not s.lower().startswith(LABEL_PREFIXES)}
        missing = [r for r in roles or () if r not in images]
        if missing and (not partial or len(missing) == len(roles)):
            raise InputError(f"case '{folder.name}'", f"in {root}: the {missing[0]} file "
                             f"is missing (expected {missing[0]}.nii.gz or another volume "
                             f"format; found {', '.join(sorted(images)) or 'none'})")
        unused = sorted(set(images) - set(roles)) if roles else []
        if roles:
            images = {r: images[r] for r in roles if r in images}
        info_file = folder / "case.json"
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        if missing:
            info["missing"] = missing
        if unused:
            info["unused"] = unused
        cases.append(Case(folder.name, images, labels, info=info, fractions=fractions))
    return cases


# ---------------------------------------------------------------------------- nnU-Net / MSD


def _nnunet_match(root: Path) -> bool:
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


def _channels_by_name(channel_names: Sequence[str], roles: Sequence[str],
                      role_hints: Mapping[str, Sequence[str]] | None,
                      where: str) -> list[str] | None:
    """The task's role of each channel, by the channel's name where dataset.json names them as
    the roles are known (the role's name or one of its name hints, case and punctuation
    aside: 'FLAIR', 'T1w', 't1gd', 'T2w' for the brain's flair, t1, t1c, t2); None where the
    names say nothing about the roles ('0', 'MRI'), to be taken by position. The Decathlon's
    brain tumours list FLAIR first, where the task's roles start with T1: taken by position,
    every channel was read as another sequence."""
    from oncoseg.structure_names import normalise

    if not role_hints:
        return None
    spellings = {role: {normalise(role), *(normalise(h) for h in role_hints.get(role, ()))}
                 for role in roles}
    found = [[role for role in roles if normalise(name) in spellings[role]]
             for name in channel_names]
    if not any(found) or (len(channel_names) == 1 and len(roles) == 1):
        return None
    chosen = [match[0] if len(match) == 1 else None for match in found]
    if None in chosen or len(set(chosen)) != len(chosen):
        unclear = [name for name, role in zip(channel_names, chosen, strict=True)
                   if role is None or chosen.count(role) > 1]
        raise InputError(where, f"names its channels {', '.join(channel_names)}: "
                         f"{', '.join(unclear)} cannot be told apart as one of the task's "
                         f"inputs ({', '.join(roles)}); name each channel after its input")
    return [str(role) for role in chosen]


def _nnunet_read(root: Path, roles: Sequence[str] | None,
                 role_hints: Mapping[str, Sequence[str]] | None = None,
                 partial: bool = False, **_options) -> list[Case]:
    """nnU-Net raw or the Decathlon's layout. Channels named after the task's inputs are taken
    by name; a task whose inputs are each optional (``partial``: the brain's sequences) then
    takes a data set of some of them."""
    try:
        description = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(str(root / "dataset.json"), f"is not valid JSON ({error})") from None
    channels = description.get("channel_names") or description.get("modality") or {}
    channel_names = [channels[k] for k in sorted(channels, key=int)]
    if not channel_names:
        raise InputError(str(root / "dataset.json"), "names no channels ('channel_names' or "
                         "'modality')")
    named = _channels_by_name(channel_names, roles, role_hints, str(root / "dataset.json")) \
        if roles else None
    if roles and len(roles) != len(channel_names) and (named is None or not partial):
        raise InputError(str(root / "dataset.json"), f"has {len(channel_names)} channels "
                         f"({', '.join(channel_names)}); the task needs {len(roles)} "
                         f"({', '.join(roles)})")
    names = named or (list(roles) if roles else [c.lower() for c in channel_names])
    ending = description.get("file_ending", ".nii.gz")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    ids = sorted({f.name[: -len(ending) - 5] for f in images_dir.iterdir()
                  if f.name.endswith(ending) and f.name[-len(ending) - 5] == "_"})
    if not ids and description.get("training"):
        return _msd_cases(root, description, names, channel_names)
    cases = []
    for case_id in ids:
        check_case_id(case_id, str(root))
        images = {name: images_dir / f"{case_id}_{index:04d}{ending}"
                  for index, name in enumerate(names)}
        label = labels_dir / f"{case_id}{ending}"
        labels = {"label": label} if labels_dir.is_dir() else {}
        cases.append(Case(case_id, images, labels,
                          info={"channel_names": channel_names,
                                "labels": description.get("labels", {})}))
    return cases


def _msd_cases(root: Path, description: dict, names: list[str],
               channel_names: list[str]) -> list[Case]:
    """The Decathlon's own layout: ``training`` lists image/label pairs; a multi-channel image
    is one 4D file whose fourth axis holds the channels in ``modality`` order."""
    cases = []
    for entry in description["training"]:
        image = root / str(entry.get("image", "")).removeprefix("./")
        case_id = check_case_id(image.name.split(".")[0], str(root))
        if not image.is_file():
            raise InputError(f"case '{case_id}'", f"in {root}: {image.name} (named in "
                             "dataset.json) is missing")
        label = root / str(entry.get("label", "")).removeprefix("./")
        info = {"channel_names": channel_names, "labels": description.get("labels", {})}
        if len(names) > 1:
            info["channels"] = {name: index for index, name in enumerate(names)}
        cases.append(Case(case_id, {name: image for name in names},
                          {"label": label} if entry.get("label") else {}, info=info))
    return cases


# ---------------------------------------------------------------------------- BraTS

# role -> file suffix, and how the enhancing tumour is labelled on disk
BRATS_NAMINGS = {
    "brats2021": ("_", {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}, 4),
    "brats2023": ("-", {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}, 3),
}
BRATS_ROLES = ("t1", "t1c", "t2", "flair")


def _brats_naming(folder: Path) -> str | None:
    """The naming of the first file of the case found (any sequence, or the labels: a case
    may lack sequences)."""
    for naming, (sep, suffixes, _) in BRATS_NAMINGS.items():
        if any((folder / f"{folder.name}{sep}{suffix}.nii.gz").is_file()
               for suffix in (*suffixes.values(), "seg")):
            return naming
    return None


def _brats_match(root: Path) -> bool:
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(folders) and any(_brats_naming(p) for p in folders)


def _brats_read(root: Path, roles: Sequence[str] | None, **_options) -> list[Case]:
    """BraTS 2017-2021 (_t1 _t1ce _t2 _flair _seg, enhancing = 4) and 2023+ (-t1n -t1c -t2w
    -t2f -seg, enhancing = 3). Labels are mapped to OncoSeg's 1 core, 2 oedema, 3 enhancing
    when they are read (``info['label_map']``). A case with a sequence file absent is read
    without that role (``info['missing']``); one with none is refused."""
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        check_case_id(folder.name, str(root))
        naming = _brats_naming(folder)
        if naming is None:
            raise InputError(f"case '{folder.name}'", f"in {root} has no BraTS image files "
                             f"(expected {folder.name}_t1ce.nii.gz or "
                             f"{folder.name}-t1c.nii.gz and the other sequences)")
        sep, suffixes, enhancing = BRATS_NAMINGS[naming]
        wanted = roles or BRATS_ROLES
        paths = {role: folder / f"{folder.name}{sep}{suffixes[role]}.nii.gz" for role in wanted}
        # a case may lack a sequence (paper 004 pretrains its subnetworks on such cases):
        # it is read without it, and info['missing'] names it
        images = {role: path for role, path in paths.items() if path.is_file()}
        missing = [role for role in paths if role not in images]
        if not images:
            raise InputError(f"case '{folder.name}'", f"in {root} has none of the sequence "
                             f"files ({', '.join(p.name for p in paths.values())})")
        seg = folder / f"{folder.name}{sep}seg.nii.gz"
        labels = {"label": seg} if seg.is_file() else {}
        cases.append(Case(folder.name, images, labels,
                          info={"naming": naming, "label_map": {str(enhancing): 3},
                                "missing": missing}))
    return cases


# ---------------------------------------------------------------------------- staging table

STAGING_TABLE = "staging.csv"
STAGES = ("T2", "T3")


def _staging_match(root: Path) -> bool:
    return (root / STAGING_TABLE).is_file()


def staging_table(root: Path) -> dict[str, dict[str, Any]]:
    """staging.csv under ``root`` read and checked, by case id: the stage, an optional ROI box
    "x0 y0 z0 x1 y1 z1" in LPS mm (``roi_lps_mm``) and optional representative slices
    (``slices``: the numbers, from 0, of the one to three slices a radiologist chose)."""
    table = root / STAGING_TABLE
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"case_id", "stage"} <= set(rows[0]):
        raise InputError(str(table), "needs the columns case_id and stage (and optionally "
                         "roi_lps_mm)")
    read: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        case_id = check_case_id(row["case_id"].strip(), f"{table} line {line}")
        stage = row["stage"].strip().upper()
        if stage not in STAGES:
            raise InputError(f"case '{case_id}'", f"has stage '{row['stage']}' in {table} "
                             f"(line {line}); expected T2 or T3")
        info: dict[str, Any] = {"stage": stage, "line": line}
        roi_text = (row.get("roi_lps_mm") or "").split()
        if roi_text:
            if len(roi_text) != 6:
                raise InputError(f"case '{case_id}'", f"has an ROI of {len(roi_text)} numbers "
                                 f"in {table} (line {line}); expected 6")
            info["roi_lps_mm"] = [float(v) for v in roi_text]
        slices_text = (row.get("slices") or "").split()
        if slices_text:
            if not all(v.isdigit() for v in slices_text):
                raise InputError(f"case '{case_id}'", f"has representative slices "
                                 f"'{row['slices']}' in {table} (line {line}); expected slice "
                                 "numbers counted from 0, separated by spaces")
            info["slices"] = [int(v) for v in slices_text]
        read[case_id] = info
    return read


def _staging_read(root: Path, roles: Sequence[str] | None, partial: bool = False,
                  **_options) -> list[Case]:
    """Case folders (as in the folders layout) listed in staging.csv (:func:`staging_table`)
    with their stage, ROI box and representative slices."""
    table = staging_table(root)
    folders = {c.id: c for c in _folders_read(root, roles, partial)}
    cases = []
    for case_id, info in table.items():
        if case_id not in folders:
            raise InputError(f"case '{case_id}'", f"is listed in {root / STAGING_TABLE} (line "
                             f"{info['line']}) but has no folder in {root}")
        case = folders[case_id]
        case.info.update({k: v for k, v in info.items() if k != "line"})
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------- CSV manifest

MANIFEST_COLUMNS = ("case_id", "role", "path")


def _manifest_match(root: Path) -> bool:
    return root.is_file() and root.suffix.lower() == ".csv"


def _manifest_read(root: Path, roles: Sequence[str] | None, partial: bool = False,
                   **_options) -> list[Case]:
    """Data in no layout, listed in a CSV file: one row per file, ``case_id,role,path``, a
    relative path read from the CSV's folder. A role starting with 'label' or 'seg' is a label
    file; cases lacking roles are treated as the folders layout treats them. A path may be a
    DICOM study folder as a PACS exports it: an optional ``series`` column then says which of
    its series the role is (UID, number or description pattern, as ``--series``)."""
    with root.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not set(MANIFEST_COLUMNS) <= set(rows[0]):
        raise InputError(str(root), "needs the columns " + ",".join(MANIFEST_COLUMNS) +
                         " (one row per file)")
    cases: dict[str, Case] = {}
    for line, row in enumerate(rows, start=2):
        case_id = check_case_id((row["case_id"] or "").strip(), f"{root} line {line}")
        role, text = (row["role"] or "").strip(), (row["path"] or "").strip()
        if not role or not text:
            raise InputError(f"{root} line {line}", "needs a role and a path")
        path = Path(text) if Path(text).is_absolute() else root.parent / text
        case = cases.setdefault(case_id, Case(case_id, {}))
        files = case.labels if role.lower().startswith(LABEL_PREFIXES) else case.images
        if role in files:
            raise InputError(f"{root} line {line}", f"gives case '{case_id}' a second "
                             f"'{role}' file")
        files[role] = path
        series = (row.get("series") or "").strip()
        if series:
            case.info.setdefault("series", {})[role] = series
    for case in cases.values():
        missing = [r for r in roles or () if r not in case.images]
        if missing and (not partial or len(missing) == len(roles)):
            raise InputError(f"case '{case.id}'", f"in {root} has no '{missing[0]}' row "
                             f"(roles given: {', '.join(sorted(case.images)) or 'none'})")
        if roles:
            case.images = {r: case.images[r] for r in roles if r in case.images}
        if missing:
            case.info["missing"] = missing
    return sorted(cases.values(), key=lambda c: c.id)


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    matches: Callable[[Path], bool]
    read: Callable[..., list[Case]]  # (root, roles, **options) -> cases
    check: Callable[[Case, str], None] = check_files


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


register_layout(Layout("rtstruct", "DICOM cohort: one folder per patient with a CT series and "
                       "an RT structure set (or a DICOM SEG); names mapped through a synonym "
                       "table",
                       rtstruct_cohort.matches, rtstruct_cohort.read_cases,
                       rtstruct_cohort.check_case))
register_layout(Layout("kaggle-gi", "UW-Madison GI tract (Kaggle): train.csv with run-length "
                       "masks, train/caseN/caseN_dayN/scans/slice_*.png",
                       kaggle.matches, kaggle.read_cases, kaggle.check_case))
register_layout(Layout("brats", "BraTS case folders, 2017-2021 names (_t1ce, _seg; enhancing "
                       "label 4) or 2023+ names (-t1c, -seg; enhancing label 3)",
                       _brats_match, _brats_read))
register_layout(Layout("staging", "case folders plus staging.csv (case_id, stage T2/T3, "
                       "optional roi_lps_mm and slices)", _staging_match, _staging_read))
register_layout(Layout("nnunet", "nnU-Net / Medical Segmentation Decathlon raw: dataset.json, "
                       "imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz",
                       _nnunet_match, _nnunet_read))
register_layout(Layout("manifest", "a CSV file with the columns case_id,role,path (one row "
                       "per file or DICOM folder; relative paths from the CSV's folder; an "
                       "optional series column chooses a series in a folder)",
                       _manifest_match, _manifest_read))
register_layout(Layout("folders", "one folder per case, one file per input role named after "
                       "the role, label files starting with 'label'",
                       _folders_match, _folders_read))


def detect_layout(root: str | os.PathLike[str]) -> str:
    root = Path(root)
    if _manifest_match(root):
        return "manifest"
    if not root.is_dir():
        raise InputError(str(root), "is not a folder (nor a CSV manifest)")
    for name, layout in LAYOUTS.items():
        if layout.matches(root):
            return name
    raise InputError(str(root), "matches no known data set layout (" +
                     "; ".join(f"{n}: {layout.description}" for n, layout in LAYOUTS.items())
                     + ")")


def read_dataset(root: str | os.PathLike[str], layout: str = "auto",
                 roles: Sequence[str] | None = None, check: bool = True,
                 **options) -> Dataset:
    """Read and check a data set; ``roles`` are the task's input roles, in order; ``options``
    go to the layout's reader (``synonyms`` for RT structure set cohorts, ``partial`` when
    a case may lack some of the roles, ``role_hints`` (role -> names it goes by,
    :func:`role_hints`) where a layout names its channels). Without ``check`` the files are
    not opened: a cohort prediction finds an unreadable case when it reaches it, records it
    and goes on."""
    root = Path(root)
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise InputError("--layout", f"'{layout}' is not a known layout (layouts: "
                         f"{', '.join(LAYOUTS)}, auto)")
    if name == "manifest" and not _manifest_match(root):
        raise InputError(str(root), "is not a CSV file (the manifest layout reads one)")
    if name != "manifest" and not root.is_dir():
        raise InputError(str(root), "is not a folder")
    cases = LAYOUTS[name].read(root, roles, **options)
    if not cases:
        raise InputError(str(root), f"holds no cases in the {name} layout")
    for case in cases if check else ():
        LAYOUTS[name].check(case, str(root))
    return Dataset(root, name, cases)


def role_hints(task: Task) -> dict[str, tuple[str, ...]]:
    """The names each of a task's inputs goes by (its Slicer name hints), for layouts that
    name their channels (nnU-Net, the Decathlon)."""
    return {role.name: role.name_hints for role in task.inputs}
