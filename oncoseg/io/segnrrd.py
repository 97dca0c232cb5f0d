"""Slicer's segmentation file (``.seg.nrrd``), read and written without Slicer.

The file is a NRRD in LPS space holding one labelmap per *layer*: a 3D image when all segments
share one layer (no overlaps), a 4D image whose first (list) axis is the layer otherwise. Each
segment is described by ``SegmentN_*`` key/value fields: ID, name, colour, label value inside its
layer, layer index, extent and tags (terminology). ``Segmentation_ReferenceImageExtentOffset``
places the file's first voxel on the reference grid; Slicer already folds that offset into the
file's origin, so physical placement needs only the origin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nrrd
import numpy as np
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import image_like
from oncoseg.io.atomic import atomic_path

Color = tuple[float, float, float]
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_SPACES = {
    "left-posterior-superior": np.eye(3),
    "LPS": np.eye(3),
    "right-anterior-superior": _LPS_FROM_RAS,
    "RAS": _LPS_FROM_RAS,
}


@dataclass
class Segment:
    """A segment's description; its voxels are ``label_value`` in layer ``layer``."""

    id: str
    name: str
    color: Color
    label_value: int = 1
    layer: int = 0
    terminology: str = ""  # Slicer's TerminologyEntry string, see oncoseg.terminology
    tags: dict[str, str] = field(default_factory=dict)  # other Slicer tags, kept as they are
    # a longer name the DICOM writers record beside ``name`` (OncoSeg's name when an export
    # names the segment by TG-263); not part of a .seg.nrrd
    description: str = ""


@dataclass
class Segmentation:
    """Segments over labelmap layers sharing one grid (uint8 SimpleITK images)."""

    layers: list[sitk.Image]
    segments: list[Segment]

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a segmentation needs at least one layer (its geometry)")
        for segment in self.segments:
            if not 0 <= segment.layer < len(self.layers):
                raise ValueError(f"segment {segment.name!r} refers to missing layer "
                                 f"{segment.layer}")

    @property
    def geometry(self) -> sitk.Image:
        return self.layers[0]

    def segment(self, key: str) -> Segment:
        """Look a segment up by ID, then by name."""
        for segment in self.segments:
            if segment.id == key:
                return segment
        for segment in self.segments:
            if segment.name == key:
                return segment
        names = ", ".join(s.name for s in self.segments) or "none"
        raise KeyError(f"no segment {key!r} (segments: {names})")

    def mask(self, key: str) -> np.ndarray:
        """Boolean (z, y, x) array of one segment."""
        segment = self.segment(key)
        return sitk.GetArrayViewFromImage(self.layers[segment.layer]) == segment.label_value

    def label_image(self) -> sitk.Image:
        """All segments as one label image, segment i -> label i + 1 (in segment order).

        Overlapping segments cannot be one label image; that is an error, not a silent choice.
        """
        shape = sitk.GetArrayViewFromImage(self.geometry).shape
        dtype = np.uint8 if len(self.segments) < 256 else np.uint16
        labels = np.zeros(shape, dtype)
        for index, segment in enumerate(self.segments, start=1):
            mask = self.mask(segment.id)
            if np.any(labels[mask]):
                raise ValueError(f"segment {segment.name!r} overlaps another segment; "
                                 "use mask() per segment")
            labels[mask] = index
        return image_like(labels, self.geometry)

    @classmethod
    def from_label_image(cls, labels: sitk.Image, segments: Sequence[Segment]) -> Segmentation:
        """One layer holding ``labels``; a segment owns the voxels equal to its label_value."""
        if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("a label image must be a 3D scalar image")
        array = sitk.GetArrayViewFromImage(labels)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("label values must lie in 0..255 for one layer")
        # a uint8 label map is used as it is: a copy of a 1024^3 one is another gigabyte
        layer = labels if labels.GetPixelID() == sitk.sitkUInt8 else \
            sitk.Cast(labels, sitk.sitkUInt8)
        return cls([layer], [_with_layer(s, 0) for s in segments])

    @classmethod
    def from_masks(cls, reference: sitk.Image, masks: Iterable[np.ndarray],
                   segments: Sequence[Segment]) -> Segmentation:
        """Segments from boolean (z, y, x) masks, one per segment (an iterator holds one in
        memory at a time); overlapping masks go to separate layers."""
        shape = sitk.GetArrayViewFromImage(reference).shape[:3]
        layers: list[np.ndarray] = []
        placed: list[Segment] = []
        for mask, segment in zip(masks, segments, strict=True):
            mask = np.asarray(mask, bool)
            if mask.shape != shape:
                raise ValueError(f"mask of {segment.name!r} has shape {mask.shape}, "
                                 f"reference grid is {shape}")
            for index, layer in enumerate(layers):
                used = {s.label_value for s in placed if s.layer == index}
                if len(used) < 255 and not np.any(layer[mask]):
                    break
            else:
                layers.append(np.zeros(shape, np.uint8))
                index = len(layers) - 1
            value = 1 + max((s.label_value for s in placed if s.layer == index), default=0)
            layers[index][mask] = value
            placed.append(_with_layer(segment, index, value))
        if not layers:
            layers.append(np.zeros(shape, np.uint8))
        images = []
        for layer in layers:
            image = sitk.GetImageFromArray(layer)
            image.SetOrigin(reference.GetOrigin())
            image.SetSpacing(reference.GetSpacing())
            image.SetDirection(reference.GetDirection())
            images.append(image)
        return cls(images, placed)


def _with_layer(segment: Segment, layer: int, label_value: int | None = None) -> Segment:
    return Segment(segment.id, segment.name, segment.color,
                   segment.label_value if label_value is None else label_value, layer,
                   segment.terminology, dict(segment.tags))


# ---------------------------------------------------------------------------- reading


def read_seg_nrrd(path: str | os.PathLike[str]) -> Segmentation:
    """Read a ``.seg.nrrd`` written by Slicer or by :func:`write_seg_nrrd`."""
    if not Path(path).is_file():
        raise InputError(str(path), "no such file")
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, ValueError) as error:
        raise InputError(str(path), f"is not a readable NRRD file ({error})") from None
    header.update(_utf8_key_values(Path(path)))
    try:
        return _segmentation_from_nrrd(data, header)
    except (KeyError, ValueError) as error:
        raise InputError(str(path), f"is not a valid segmentation file ({error})") from None


def segments_in(path: str | os.PathLike[str]) -> list[Segment] | None:
    """The segments a NRRD file describes as Slicer's segmentation files do, from its header
    alone; None for one that describes none (a plain label map, read by its values)."""
    try:
        header = nrrd.read_header(str(path))
    except (nrrd.NRRDError, OSError, ValueError) as error:
        raise InputError(str(path), f"is not a readable NRRD file ({error})") from None
    header.update(_utf8_key_values(Path(path)))
    sizes = header.get("sizes", [])
    segments = _segments_from_header(header, int(sizes[0]) if len(sizes) == 4 else 1)
    return segments or None


def _utf8_key_values(path: Path) -> dict[str, str]:
    """The header's key/value pairs (``key:=value``: Slicer's segment names, tags) decoded as
    UTF-8, as Slicer writes them: pynrrd reads the header as ASCII and drops every other byte
    ('Harnröhre' came back as 'Harnrhre')."""
    values = {}
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                break  # the header ends at the first blank line
            if b":=" in line and not line.startswith(b"#"):
                key, value = line.decode("utf-8", errors="replace").split(":=", 1)
                values[key.strip()] = value.strip()
    return values


def _segmentation_from_nrrd(data: np.ndarray, header: dict) -> Segmentation:
    space = header.get("space", "left-posterior-superior")
    if space not in _SPACES:
        raise ValueError(f"unsupported space {space!r}")
    to_lps = _SPACES[space]
    kinds = header.get("kinds", ["domain"] * data.ndim)
    directions = np.asarray(header["space directions"], float)
    spatial = [i for i, kind in enumerate(kinds) if kind in ("domain", "space")]
    if len(spatial) != 3:
        raise ValueError(f"expected 3 spatial axes, kinds are {kinds}")
    if data.ndim == 4:
        list_axis_file = next(i for i in range(4) if i not in spatial)
        if list_axis_file != 0:
            raise ValueError("the layer axis must be the first axis of a 4D segmentation")
        layers_zyx = [np.ascontiguousarray(data[..., k]) for k in range(data.shape[-1])]
    elif data.ndim == 3:
        layers_zyx = [data]
    else:
        raise ValueError(f"a segmentation has 3 or 4 dimensions, this one {data.ndim}")
    axes = to_lps @ directions[spatial].T  # columns: LPS vector of one voxel step along i, j, k
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("zero-length space direction")
    direction = axes / spacing
    origin = to_lps @ np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), float)

    images = []
    for layer in layers_zyx:
        if np.issubdtype(layer.dtype, np.floating):
            layer = np.trunc(layer)
        if layer.size and (layer.min() < 0 or layer.max() > 255):
            raise ValueError("label values outside 0..255")
        image = sitk.GetImageFromArray(layer.astype(np.uint8, copy=False))
        image.SetOrigin(tuple(origin))
        image.SetSpacing(tuple(spacing))
        image.SetDirection(tuple(direction.ravel()))
        images.append(image)
    return Segmentation(images, _segments_from_header(header, len(images)))


_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(\w+)$")


def _segments_from_header(header: dict, n_layers: int) -> list[Segment]:
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = _SEGMENT_KEY.match(key)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
    if not fields:
        # A plain labelmap NRRD: one segment per label value found, as Slicer imports it.
        return []
    segments = []
    for index in sorted(fields):
        f = fields[index]
        tags = _parse_tags(f.get("Tags", ""))
        color_text = f.get("Color") or f.get("DefaultColor") or "0.5 0.5 0.5"
        rgb = [float(v) for v in color_text.split()[:3]]
        segments.append(Segment(
            id=f.get("ID", f"Segment_{index}"),
            name=f.get("Name", f"Segment_{index}"),
            color=(rgb[0], rgb[1], rgb[2]),
            label_value=int(f.get("LabelValue", 1)),
            layer=int(f.get("Layer", index if n_layers > 1 else 0)),
            terminology=tags.pop("TerminologyEntry", ""),
            tags=tags,
        ))
    return segments


def _parse_tags(text: str) -> dict[str, str]:
    tags = {}
    for item in text.split("|"):
        if ":" in item:
            key, value = item.split(":", 1)
            tags[key] = value
    return tags


# ---------------------------------------------------------------------------- writing


def write_seg_nrrd(segmentation: Segmentation, path: str | os.PathLike[str],
                   overwrite: bool = False) -> Path:
    """Write the file Slicer writes: 3D for one layer, 4D (layer axis first) for several."""
    geometry = segmentation.geometry
    if geometry.GetDimension() != 3:
        raise ValueError("segmentation layers must be 3D")
    for layer in segmentation.layers[1:]:
        _check_same_grid(geometry, layer)
    arrays = [sitk.GetArrayViewFromImage(layer).astype(np.uint8, copy=False)
              for layer in segmentation.layers]
    direction = np.asarray(geometry.GetDirection(), float).reshape(3, 3)
    axes = direction * np.asarray(geometry.GetSpacing(), float)  # columns = voxel steps, LPS
    header: dict[str, object] = {
        "type": "unsigned char",
        "space": "left-posterior-superior",
        "space origin": np.asarray(geometry.GetOrigin(), float),
        "encoding": "gzip",
    }
    if len(arrays) == 1:
        data = arrays[0]
        header["kinds"] = ["domain", "domain", "domain"]
        header["space directions"] = axes.T
    else:
        data = np.stack(arrays, axis=-1)
        header["kinds"] = ["list", "domain", "domain", "domain"]
        header["space directions"] = np.vstack([np.full((1, 3), np.nan), axes.T])
    extents = [_extent(a) for a in arrays]
    for index, segment in enumerate(segmentation.segments):
        prefix = f"Segment{index}_"
        tags = dict(segment.tags)
        if segment.terminology:
            tags["TerminologyEntry"] = segment.terminology
        header[prefix + "Color"] = " ".join(f"{c:g}" for c in segment.color)
        header[prefix + "ColorAutoGenerated"] = "0"
        header[prefix + "Extent"] = extents[segment.layer]
        header[prefix + "ID"] = segment.id
        header[prefix + "LabelValue"] = str(segment.label_value)
        header[prefix + "Layer"] = str(segment.layer)
        header[prefix + "Name"] = segment.name
        header[prefix + "NameAutoGenerated"] = "0"
        header[prefix + "Tags"] = "".join(f"{k}:{v}|" for k, v in tags.items())
    header["Segmentation_ContainedRepresentationNames"] = "Binary labelmap|"
    header["Segmentation_MasterRepresentation"] = "Binary labelmap"
    header["Segmentation_ReferenceImageExtentOffset"] = "0 0 0"
    # pynrrd writes its header as ASCII: a name or tag beyond it goes in as a placeholder,
    # replaced by its UTF-8 bytes (what Slicer writes) once the file is written
    placeholders = {}
    for key, value in header.items():
        if isinstance(value, str) and not value.isascii():
            placeholders[f"@oncoseg-utf8-{len(placeholders)}@"] = value
            header[key] = next(reversed(placeholders))
    with atomic_path(path, overwrite) as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(data), header, index_order="C",
                   compression_level=1)
        if placeholders:
            head, blank, voxels = Path(tmp).read_bytes().partition(b"\n\n")
            for placeholder, value in placeholders.items():
                head = head.replace(placeholder.encode("ascii"), value.encode("utf-8"))
            Path(tmp).write_bytes(head + blank + voxels)
    return Path(path)


def _extent(layer_zyx: np.ndarray) -> str:
    """Bounding box of non-zero voxels as Slicer's 'i0 i1 j0 j1 k0 k1' (empty: 0 -1 ...)."""
    nonzero = np.nonzero(layer_zyx)
    if not nonzero[0].size:
        return "0 -1 0 -1 0 -1"
    k, j, i = (axis for axis in nonzero)
    return f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}"


def _check_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    same = (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-9))
    if not same:
        raise ValueError("all layers of a segmentation must share one grid")
