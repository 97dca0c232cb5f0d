"""Labels that are named: Slicer segmentations (``.seg.nrrd``), DICOM SEGs, and the label
descriptions of a data set's dataset.json (nnU-Net, the Medical Segmentation Decathlon).

A label map says a structure by a number the task defines; a segmentation says it by name
(and coded meaning), and numbers its segments in the order they were drawn or written. So a
segmentation given as a case's labels is read by its segments' names: each at the value of the
task's segment of that name, a segment the task does not have refused by name, and the
structures it holds known (one it lacks is unknown, as in a structure set). Its grid need not
cover the image: Slicer can save a segmentation cropped to its segments, and a DICOM SEG leaves
out the planes without any. A data set whose dataset.json names its label values is read the
same way: each value as the task's structure of that name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.io.volumes import volume_information

if TYPE_CHECKING:
    from oncoseg.io.segnrrd import Segment, Segmentation
    from oncoseg.tasks import SegmentSpec


def segments_named_in(path: Path) -> list[Segment] | None:
    """The segments a segmentation file names: a Slicer segmentation (``.seg.nrrd``, or any
    NRRD whose header describes segments) or a DICOM SEG; None for a label map."""
    if str(path).lower().endswith((".nrrd", ".nhdr")):
        from oncoseg.io.segnrrd import segments_in

        return segments_in(path)
    from oncoseg.io.dicom_series import is_dicom_file

    if path.is_file() and is_dicom_file(path):
        from oncoseg.io.dicomseg_reading import dicom_seg_segments

        return dicom_seg_segments(path)
    return None


def read_segmentation(path: Path) -> Segmentation:
    from oncoseg.io.dicomseg_reading import is_dicom_seg, read_dicom_seg
    from oncoseg.io.segnrrd import read_seg_nrrd

    return read_dicom_seg(path) if is_dicom_seg(path) else read_seg_nrrd(path)


def matched_segments(named: Sequence[Segment], specs: Sequence[SegmentSpec] | None,
                     case_id: str, path: Path) -> dict[str, Segment]:
    """Task segment name -> the file's segment that is it. Every segment of the file must be
    one of the task's, once: a segment the task does not know would otherwise be left out or
    taken for another without a word. A task of one structure takes a file of one segment
    whatever its name (Slicer names a new segment 'Segment_1'); without ``specs`` (a task
    that reads one structure) the file must hold one segment."""
    from oncoseg.structure_names import matching_segment

    where = f"case '{case_id}'"
    if not specs:
        if len(named) != 1:
            raise InputError(where, f"label file {path.name} is a segmentation of "
                             f"{len(named)} segments ({', '.join(s.name for s in named)}); "
                             "the task reads one")
        return {named[0].name: named[0]}
    matched: dict[str, Segment] = {}
    unknown = []
    for segment in named:
        spec = matching_segment(segment.name, segment.terminology, specs)
        if spec is None:
            unknown.append(segment.name)
        elif spec.name in matched:
            raise InputError(where, f"label file {path.name}: segments "
                             f"'{matched[spec.name].name}' and '{segment.name}' are both "
                             f"'{spec.name}'")
        else:
            matched[spec.name] = segment
    if unknown and len(specs) == len(named) == 1:  # one structure: whatever its name
        return {specs[0].name: named[0]}
    if unknown:
        raise InputError(where, f"label file {path.name}: segment(s) "
                         f"{', '.join(repr(n) for n in unknown)} match none of the task's "
                         f"({', '.join(s.name for s in specs)}, their TG-263 names or usual "
                         "synonyms): rename or delete them (in Slicer: Segment Editor)")
    return matched


def label_image(path: Path, case_id: str, segments: Sequence[SegmentSpec] | None
                ) -> sitk.Image:
    """The label file as a label image: a segmentation (Slicer's, a DICOM SEG) with each
    segment at the value of the task's segment of that name (a Slicer segmentation's own
    values follow the order the segments were drawn in, a SEG's numbers the writer's order;
    where segments overlap the later of the task's wins, as for a structure set), any other
    file as it is."""
    from oncoseg.io.volumes import read_image

    named = segments_named_in(path)
    if named is None:
        return read_image(path)
    from oncoseg.geometry import image_like

    matched = matched_segments(named, segments, case_id, path)
    segmentation = read_segmentation(path)
    labels = np.zeros(sitk.GetArrayViewFromImage(segmentation.geometry).shape, np.uint8)
    for spec in segments or [None]:
        segment = matched.get(spec.name) if spec is not None else named[0]
        if segment is not None:
            labels[segmentation.mask(segment.id)] = spec.label if spec is not None else 1
    return image_like(labels, segmentation.geometry)


def segmentation_grid(path: Path) -> tuple:
    """A segmentation file's grid as (size, spacing, origin, direction), as a case's grid
    check compares grids (a DICOM SEG's: the grid its frames lie on)."""
    from oncoseg.io.dicomseg_reading import dicom_seg_grid, is_dicom_seg

    if is_dicom_seg(path):
        grid = dicom_seg_grid(path)
        return grid.size, grid.spacing, grid.origin, grid.direction
    info = volume_information(path)
    size = info.GetSize()
    direction = np.asarray(info.GetDirection()).reshape(len(size), len(size))
    return size[:3], info.GetSpacing()[:3], info.GetOrigin()[:3], tuple(direction[:3, :3].ravel())


def on_lattice(a: tuple, b: tuple, tolerance: float = 1e-3) -> bool:
    """Whether grid ``a``'s voxels are voxels of grid ``b``: the same spacing and axes, the
    origin a whole number of voxels away. A segmentation need not cover its image (Slicer
    can save one cropped to its segments; a DICOM SEG leaves out the planes without any)."""
    if not (np.allclose(a[1], b[1], atol=tolerance) and np.allclose(a[3], b[3], atol=tolerance)):
        return False
    axes = np.asarray(b[3], float).reshape(3, 3)
    steps = axes.T @ (np.asarray(a[2], float) - np.asarray(b[2], float)) / np.asarray(b[1])
    return bool(np.allclose(steps, np.rint(steps), atol=0.01))


def declared_values(declared: Mapping[str, Any] | None, specs: Sequence[SegmentSpec] | None,
                    where: str) -> tuple[dict[int, int], list[str]] | None:
    """(label value in the files -> the task's value, the task's segments declared) from a
    data set's label descriptions: nnU-Net's ``"labels": {"edema": 1}`` or the Decathlon's
    ``"labels": {"1": "edema"}``; None where there are none to read (or no task segments).
    The Decathlon's brain tumours number oedema 1 and the necrotic core 2, BraTS and OncoSeg
    the other way round: read by value, each was trained and scored as the other. A name the
    task does not have is refused by name, and so are regions (nnU-Net's region-based labels,
    ``"tumor core": [2, 3]``), which say no value's own structure. A task of one structure
    takes a data set of one label whatever its name."""
    if not declared or not specs:
        return None
    if all(str(k).strip().isdigit() and isinstance(v, str) for k, v in declared.items()):
        entries = [(str(v), int(k)) for k, v in declared.items()]  # the Decathlon's
    else:
        entries = list(declared.items())
    entries = [(str(name), value) for name, value in entries
               if str(name).lower() not in ("background", "ignore") and value != 0]
    regions = [f"{name}: {value}" for name, value in entries
               if isinstance(value, list) and len(value) > 1]
    if regions:
        raise InputError(where, f"its dataset.json describes regions ({'; '.join(regions)}), "
                         "not one structure per label value: which value is which structure "
                         "cannot be told; describe each value by its own structure")
    values = [(name, int(value[0] if isinstance(value, list) else value))
              for name, value in entries]
    if len(specs) == len(values) == 1:
        return {values[0][1]: specs[0].label}, [specs[0].name]
    from oncoseg.structure_names import matching_segment

    mapping: dict[int, int] = {}
    found: dict[str, str] = {}
    unknown = []
    for name, value in values:
        spec = matching_segment(name, "", specs)
        if spec is None:
            unknown.append(name)
        elif spec.name in found:
            raise InputError(where, f"its dataset.json calls two labels '{spec.name}' "
                             f"('{found[spec.name]}' and '{name}')")
        else:
            found[spec.name] = name
            mapping[value] = spec.label
    if unknown:
        raise InputError(where, f"its dataset.json names label(s) "
                         f"{', '.join(repr(n) for n in unknown)}, which match none of the "
                         f"task's structures ({', '.join(s.name for s in specs)}, their TG-263 "
                         "names or usual synonyms): give each label the name of the task's "
                         "structure it is, or take the structure out of the label files")
    return mapping, [spec.name for spec in specs if spec.name in found]
