"""``oncoseg info``: what a file is, checked as the methods would check it.

Images are described (geometry, orientation, intensities) only if they are usable volumes;
model files only if their header is sound. A file that would fail later fails here, with the
same message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from oncoseg.geometry import orientation_code, physical_bounds, voxel_volume_ml
from oncoseg.io.dicomseg_reading import is_dicom_seg, read_dicom_seg
from oncoseg.io.segnrrd import read_seg_nrrd
from oncoseg.io.volumes import read_volume
from oncoseg.modelfile import file_sha256, read_header
from oncoseg.validation import check_structure, count_nonfinite, volume_problems

# intensity percentiles of bigger images come from a regular sample of this many voxels
PERCENTILE_SAMPLE = 1 << 24
MODEL_ENDINGS = (".safetensors", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".h5")


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = str(path).lower()
    if name.endswith(MODEL_ENDINGS):
        return describe_model(path)
    if name.endswith(".seg.nrrd") or (Path(path).is_file() and is_dicom_seg(path)):
        return describe_segmentation(path)
    return describe_image(path)


def _geometry(image: sitk.Image) -> dict[str, Any]:
    low, high = physical_bounds(image)
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [round(s, 6) for s in image.GetSpacing()],
        "origin_lps_mm": [round(o, 4) for o in image.GetOrigin()],
        "direction": [round(d, 6) for d in image.GetDirection()],
        "orientation": orientation_code(image),
        "extent_mm": [round(float(h - lo), 2) for lo, h in zip(low, high, strict=True)],
    }


def describe_image(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Geometry and intensities of any 3D scalar image, with what would stop a method from
    using it (a single slice, NaN voxels, a constant image) as warnings in the method's words."""
    volume = read_volume(path)
    image = volume.image
    check_structure(image, str(path))
    nan, infinite = count_nonfinite(image)
    array = sitk.GetArrayViewFromImage(image)
    finite = array[np.isfinite(array)] if nan or infinite else array
    intensity: dict[str, Any] = {"nan_voxels": nan, "infinite_voxels": infinite}
    if finite.size:
        # percentiles of a regular sample: np.percentile copies what it is given
        step = max(1, finite.size // PERCENTILE_SAMPLE)
        p1, p50, p99 = np.percentile(finite.reshape(-1)[::step], [1, 50, 99])
        intensity.update({
            "min": float(finite.min()), "max": float(finite.max()),
            "mean": float(finite.mean()), "std": float(finite.std()),
            "p1": float(p1), "median": float(p50), "p99": float(p99),
            "constant": bool(finite.min() == finite.max()),
        })
    return {
        "kind": "image",
        "path": str(path),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "voxels": int(np.prod(image.GetSize())),
        **_geometry(image),
        "intensity": intensity,
        "warnings": volume_problems(image, str(path), min_slices=2, allow_constant=False),
        "notes": list(volume.notes),  # how it was read (resampled slices, placements ...)
    }


def describe_segmentation(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Slicer segmentation or a DICOM SEG (on the grid its frames lie on): its segments,
    their voxels and volumes."""
    segmentation = read_dicom_seg(path) if is_dicom_seg(path) else read_seg_nrrd(path)
    ml = voxel_volume_ml(segmentation.geometry)
    segments = []
    for s in segmentation.segments:
        voxels = int(np.count_nonzero(segmentation.mask(s.id)))
        segments.append({"id": s.id, "name": s.name, "color": list(s.color),
                         "layer": s.layer, "label_value": s.label_value, "voxels": voxels,
                         "volume_ml": round(voxels * ml, 3), "terminology": s.terminology})
    return {"kind": "segmentation", "path": str(path), "layers": len(segmentation.layers),
            **_geometry(segmentation.geometry), "segments": segments}


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    header = read_header(path)
    m = header.metadata
    return {
        "kind": "model",
        "path": str(path),
        "size_mb": round(Path(path).stat().st_size / 1e6, 3),
        "task": m.task,
        "architecture": m.architecture,
        "architecture_args": m.architecture_args,
        "parameters": header.parameter_count,
        "parameters_by_part": header.parameters_by_part(),
        "tensors": len(header.tensors),
        "inputs": m.inputs,
        "preprocessing": m.preprocessing,
        "outputs": m.outputs,
        "demo": m.demo,
        "description": m.description,
        "license": m.license or "not stated",
        "training_data_license": m.training_data_license or "not stated",
        "sha256": file_sha256(path),
        "provenance": m.provenance,
        "format_version": m.format_version,
    }


def format_description(info: dict[str, Any]) -> str:
    """Readable text for a terminal; ``--json`` prints the dictionary itself."""
    lines = [f"{info['path']}: {info['kind']}"]
    if info["kind"] == "model":
        if info["demo"]:
            lines.append("  DEMO MODEL trained on synthetic phantoms - not for clinical use")
        lines += [f"  task: {info['task']}", f"  architecture: {info['architecture']}",
                  f"  parameters: {info['parameters']:,} in {info['tensors']} tensors "
                  f"({info['size_mb']} MB)",
                  "  parameters by part: " + ", ".join(
                      f"{part} {count:,}" for part, count in info["parameters_by_part"].items()),
                  f"  architecture arguments: {info['architecture_args']}",
                  f"  inputs: {', '.join(info['inputs'])}"]
        if info["description"]:
            lines.append(f"  description: {info['description']}")
        lines += [f"  licence: {info['license']}",
                  f"  training data licence: {info['training_data_license']}",
                  f"  sha256: {info['sha256']}"]
        for key in ("preprocessing", "outputs", "provenance"):
            lines.append(f"  {key}: {info[key]}")
        return "\n".join(lines)
    lines += [
        f"  size: {' x '.join(map(str, info['size']))} voxels",
        f"  spacing: {' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm",
        f"  extent: {' x '.join(f'{s:g}' for s in info['extent_mm'])} mm",
        f"  origin (LPS): {', '.join(f'{o:g}' for o in info['origin_lps_mm'])} mm",
        f"  orientation: {info['orientation']}",
    ]
    if info["kind"] == "image":
        i = info["intensity"]
        lines.append(f"  pixel type: {info['pixel_type']}")
        if "min" in i:
            lines.append(f"  intensity: min {i['min']:g}, p1 {i['p1']:g}, median "
                         f"{i['median']:g}, p99 {i['p99']:g}, max {i['max']:g} (mean "
                         f"{i['mean']:.4g}, sd {i['std']:.4g})")
        lines.append(f"  non-finite voxels: {i['nan_voxels']} NaN, {i['infinite_voxels']} "
                     "infinite")
        for warning in info["warnings"]:
            lines.append(f"  warning: a method would refuse it: it {warning}")
        for note in info["notes"]:
            lines.append(f"  note: {note}")
    else:
        lines.append(f"  layers: {info['layers']}")
        for s in info["segments"]:
            lines.append(f"  segment '{s['name']}': {s['voxels']} voxels, {s['volume_ml']} mL")
    return "\n".join(lines)
