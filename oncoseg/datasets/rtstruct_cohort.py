"""DICOM cohorts with RT structure sets: one folder per patient, CT series + RTSTRUCT (or a
DICOM SEG, as NCI's Imaging Data Commons publishes annotations: its segments' labels are the
structure names).

Structure names are mapped to a task's segments through an editable synonym table (case,
spaces and punctuation ignored) and the segments' AAPM TG-263 names. A segment that a
patient's structure set does not contain is *unannotated* for that patient: training must not
treat its absence as background
(``Case.info['annotated']`` lists what is known).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from oncoseg.datasets.base import Case, check_case_id
from oncoseg.errors import InputError
from oncoseg.io.rtstruct import read_rtstruct
from oncoseg.io.volumes import list_dicom_series, read_dicom_series
from oncoseg.structure_names import (
    normalise,
    packaged_synonym_table,
    synonym_table,
    tg263_synonyms,
)


def load_synonyms(path: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """The synonym table: OncoSeg segment name -> clinical names; the shipped one, or an
    edited copy."""
    if path is None:
        return packaged_synonym_table()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(str(path), f"cannot be read ({error.strerror})") from None
    return synonym_table(text, str(path))


def map_structures(names: list[str], synonyms: Mapping[str, list[str]]
                   ) -> tuple[dict[str, str], list[str]]:
    """(segment -> structure name, structure names that map to nothing). A segment's TG-263
    name maps to it whatever the table says: structure sets named by the standard need no
    editing of the table."""
    lookup = {normalise(tg263): segment for tg263, segment in tg263_synonyms(synonyms).items()}
    for segment, spellings in synonyms.items():
        for spelling in [segment, *spellings]:
            lookup[normalise(spelling)] = segment
    mapped, unmapped = {}, []
    for name in names:
        segment = lookup.get(normalise(name))
        if segment is None:
            unmapped.append(name)
        elif segment not in mapped:
            mapped[segment] = name
    return mapped, unmapped


def _modality(path: Path) -> str:
    try:
        return str(pydicom.dcmread(str(path), stop_before_pixels=True,
                                   specific_tags=["Modality"]).get("Modality", ""))
    except (pydicom.errors.InvalidDicomError, OSError):
        return ""


def _structure_files(folder: Path) -> list[Path]:
    """The patient's RT structure sets, or where it has none its DICOM SEGs."""
    found: dict[str, list[Path]] = {"RTSTRUCT": [], "SEG": []}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found.get(_modality(path), []).append(path)
    return found["RTSTRUCT"] or found["SEG"]


def matches(root: Path) -> bool:
    for folder in (p for p in root.iterdir() if p.is_dir()):
        return bool(_structure_files(folder))
    return False


def read_cases(root: Path, roles=None, synonyms: str | os.PathLike[str] | Mapping | None = None,
               **_options) -> list[Case]:
    """``synonyms``: a table (mapping) or the path of an edited copy of the default one."""
    table = synonyms if isinstance(synonyms, Mapping) else load_synonyms(synonyms)
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case_id = check_case_id(folder.name, str(root))
        files = _structure_files(folder)
        if not files:
            raise InputError(f"case '{case_id}'", f"in {root} has no RT structure set (nor a "
                             "DICOM SEG)")
        kind, names, series_uid, patient = _described(files[-1])
        series_folder = _find_series(folder, series_uid)
        if series_folder is None:
            raise InputError(f"case '{case_id}'", f"in {root}: its {files[-1].name} "
                             f"references image series {series_uid}, which is not in the "
                             "patient's folder")
        mapped, unmapped = map_structures(names, table)
        cases.append(Case(case_id, {"ct": series_folder}, {}, patient=patient or case_id,
                          info={kind: str(files[-1]), "series_uid": series_uid,
                                "structures": mapped, "annotated": sorted(mapped),
                                "unmapped": unmapped}))
    return cases


def _described(path: Path) -> tuple[str, list[str], str, str]:
    """(info key: 'rtstruct' or 'seg', structure names, the series they were drawn on, the
    patient ID) of a structure set or DICOM SEG."""
    from oncoseg.io.dicomseg_reading import dicom_seg_reference, dicom_seg_segments

    segments = dicom_seg_segments(path)
    if segments is not None:
        series_uid, patient = dicom_seg_reference(path)
        return "seg", [s.name for s in segments], series_uid, patient
    structure_set = read_rtstruct(path)
    return "rtstruct", [s.name for s in structure_set.structures], \
        structure_set.referenced_series_uid, structure_set.patient_id


def _find_series(folder: Path, series_uid: str) -> Path | None:
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if any(s.uid == series_uid for s in list_dicom_series(candidate)):
            return candidate
    return None


def check_case(case: Case, where: str) -> None:
    if not case.info["structures"]:
        raise InputError(f"case '{case.id}'", f"in {where}: no structure of its RT structure "
                         f"set matches the synonym table (its structures: "
                         f"{', '.join(case.info['unmapped']) or 'none'})")


def load_labels(case: Case, segments: Mapping[str, int]) -> tuple[sitk.Image, np.ndarray,
                                                                   list[str]]:
    """The CT, a label map (segment name -> label value) and the annotated segments.

    Where structures overlap, the later segment in ``segments`` wins.
    """
    image = read_dicom_series(case.images["ct"], case.info["series_uid"])
    mask = _seg_masks(case.info["seg"], image) if "seg" in case.info else \
        read_rtstruct(case.info["rtstruct"]).mask
    labels = np.zeros(image.GetSize()[::-1], np.uint8)
    annotated = []
    for segment, value in segments.items():
        name = case.info["structures"].get(segment)
        if name is None:
            continue
        labels[mask(name, image)] = value
        annotated.append(segment)
    return image, labels, annotated


def _grid_of(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _seg_masks(path: str, image: sitk.Image) -> Callable[[str, sitk.Image], np.ndarray]:
    """A DICOM SEG's segment (by label) as a mask on ``image``, as a structure set's
    ``mask`` gives one (nearest neighbour: exact where its frames lie on the image's planes)."""
    from oncoseg.datasets.segmentation_labels import on_lattice
    from oncoseg.geometry import image_like, resample_to_reference
    from oncoseg.io.dicomseg_reading import read_dicom_seg

    segmentation = read_dicom_seg(path)
    if not on_lattice(_grid_of(segmentation.geometry), _grid_of(image)):
        raise InputError(path, "is a DICOM SEG whose frames do not lie on the slices of the "
                         "CT series it references")

    def mask(name: str, reference: sitk.Image) -> np.ndarray:
        segment = next(s for s in segmentation.segments if s.name == name)
        layer = segmentation.layers[segment.layer]
        on_seg = image_like(segmentation.mask(segment.id).astype(np.uint8), layer)
        return sitk.GetArrayFromImage(resample_to_reference(on_seg, reference, "nearest")) > 0

    return mask
