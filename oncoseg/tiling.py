"""Resampling a large volume slab by slab, so no full-size float copy of it is ever made.

A 1024^3 int16 CT is 2 GB; resampling it the plain way (cast to float32, then resample) holds
6 GB before the network sees a voxel. Here the target grid is filled a slab at a time: for each
slab of target slices, the block of source voxels that slab's points fall in (plus the
interpolation's one-voxel margin) is cut out, converted and resampled, and the result is
written into the output array. The source can be an in-memory image or a file that SimpleITK
streams (MetaImage and NIfTI, compressed or not; NRRD is read whole by ITK, so a NRRD source is
read once), and the values are those of one whole-volume resampling: every point a slab needs
lies inside its block.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from oncoseg.geometry import check_overlap
from oncoseg.postprocess import most_likely

# Bytes of source block (as float32) converted at a time: the working set of a slab.
SLAB_BYTES = 64 << 20
_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
# Formats whose ImageIO reads a requested region without reading the rest of the file
# (measured: a 16-slice slab of a 512 x 512 x 384 int16 volume costs 11-27 MB for these,
# 204 MB - the whole volume - for NRRD; Testing/benchmarks/bench_memory.py)
STREAMED_ENDINGS = (".mha", ".mhd", ".nii", ".nii.gz")


@dataclass(frozen=True)
class Geometry:
    """A grid without voxels: what resampling needs to know about its source or target."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> Geometry:
        return cls(tuple(int(s) for s in image.GetSize()),
                   tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()),
                   tuple(float(d) for d in image.GetDirection()))

    def index_to_physical(self) -> np.ndarray:
        """4 x 4 matrix taking (i, j, k, 1) to (x, y, z, 1) in LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def slab(self, start: int, stop: int) -> Geometry:
        """Slices ``start:stop`` along the third (k) axis as a grid of their own."""
        matrix = self.index_to_physical()
        origin = matrix @ np.array([0.0, 0.0, float(start), 1.0])
        return Geometry((self.size[0], self.size[1], stop - start), self.spacing,
                        tuple(float(o) for o in origin[:3]), self.direction)

    def image(self, array: np.ndarray) -> sitk.Image:
        """``array`` (z, y, x) as an image on this grid."""
        image = sitk.GetImageFromArray(array, isVector=False)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image

    def empty(self) -> sitk.Image:
        """A one-voxel stand-in carrying this grid's geometry (for overlap checks)."""
        image = sitk.Image([1, 1, 1], sitk.sitkUInt8)
        corner = Geometry((1, 1, 1), tuple(np.asarray(self.spacing) * self.size), self.origin,
                          self.direction)
        # the stand-in voxel covers the whole box: shift its centre to the box's middle
        centre = self.index_to_physical() @ np.array([*((np.asarray(self.size) - 1) / 2), 1.0])
        image.SetSpacing(corner.spacing)
        image.SetDirection(self.direction)
        image.SetOrigin(tuple(float(c) for c in centre[:3]))
        return image


class VolumeSource:
    """Voxel blocks of a volume, from memory or from a file read block by block."""

    def __init__(self, image: sitk.Image | None = None,
                 path: str | os.PathLike[str] | None = None):
        if (image is None) == (path is None):
            raise ValueError("give an image or a path")
        self.image = image
        self.path = None if path is None else Path(path)
        if image is not None:
            self.geometry = Geometry.of(image)
            self.pixel_id = image.GetPixelID()
        else:
            reader = self._reader()
            reader.ReadImageInformation()
            self.geometry = Geometry.of(reader)
            self.pixel_id = reader.GetPixelID()
            if not str(self.path).lower().endswith(STREAMED_ENDINGS):
                self.image, self.path = sitk.ReadImage(str(self.path)), None  # read once

    def _reader(self) -> sitk.ImageFileReader:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(self.path))
        return reader

    def block(self, index: tuple[int, int, int], size: tuple[int, int, int]) -> sitk.Image:
        """Voxels ``index`` to ``index + size`` (i, j, k) with their geometry."""
        if self.image is not None:
            return sitk.RegionOfInterest(self.image, [int(s) for s in size],
                                         [int(i) for i in index])
        reader = self._reader()
        reader.SetExtractIndex([int(i) for i in index])
        reader.SetExtractSize([int(s) for s in size])
        return reader.Execute()


def _source_block(source: Geometry, target: Geometry, margin: int
                  ) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(index, size) of the source voxels that the target grid's points fall among; None when
    they all lie outside the source."""
    to_source = np.linalg.inv(source.index_to_physical()) @ target.index_to_physical()
    last = np.asarray(target.size, float) - 1
    corners = np.array([[*np.where(c, last, 0.0), 1.0]
                        for c in itertools.product([False, True], repeat=3)])
    points = (corners @ to_source.T)[:, :3]
    low = np.floor(points.min(axis=0)).astype(int) - margin
    high = np.ceil(points.max(axis=0)).astype(int) + margin
    low = np.maximum(low, 0)
    high = np.minimum(high, np.asarray(source.size) - 1)
    if np.any(high < low):
        return None
    return tuple(int(v) for v in low), tuple(int(v) for v in high - low + 1)


def slab_ranges(target: Geometry, source: Geometry, slab_bytes: int = SLAB_BYTES
                ) -> Iterator[tuple[int, int]]:
    """Target slice ranges whose source blocks hold about ``slab_bytes`` as float32 (measured
    on the first one and two slices, so any storage order of the source is priced right)."""

    def block_bytes(count: int) -> float:
        found = _source_block(source, target.slab(0, count), 2)
        return 4.0 * float(np.prod(found[1])) if found else 0.0

    one = block_bytes(1)
    per_slice = max(block_bytes(min(2, target.size[2])) - one, 1.0)
    step = int(max(1, min(target.size[2], (slab_bytes - (one - per_slice)) // per_slice)))
    for start in range(0, target.size[2], step):
        yield start, min(target.size[2], start + step)


def resample_onto(source: VolumeSource, target: Geometry, interpolation: str = "linear",
                  default_value: float = 0.0, dtype: type = np.float32,
                  names: tuple[str, str] = ("image", "target grid"),
                  slab_bytes: int = SLAB_BYTES) -> np.ndarray:
    """``source`` on the ``target`` grid as a (z, y, x) array of ``dtype``, computed slab by
    slab: the same values as one :func:`sitk.Resample` of the whole source (outside it:
    ``default_value``), with at most one slab's block of the source converted at a time."""
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    check_overlap(source.geometry.empty(), target.empty(), *names)
    output = np.full(target.size[::-1], default_value, dtype)
    pixel = sitk.sitkFloat32 if np.dtype(dtype).kind == "f" else source.pixel_id
    margin = 1 if interpolation == "linear" else 0
    for start, stop in slab_ranges(target, source.geometry, slab_bytes):
        slab = target.slab(start, stop)
        found = _source_block(source.geometry, slab, margin + 1)
        if found is None:
            continue
        block = source.block(*found)
        resampled = sitk.Resample(block, list(slab.size), sitk.Transform(),
                                  _INTERPOLATORS[interpolation], slab.origin, slab.spacing,
                                  slab.direction, float(default_value), pixel)
        output[start:stop] = sitk.GetArrayViewFromImage(resampled)
    return output


def continue_edges(values: np.ndarray, spacing_zyx: tuple[float, float, float],
                   reach_mm: float, beyond: float) -> None:
    """In place: each NaN voxel of ``values`` (z, y, x) within ``reach_mm`` of a number takes
    the nearest number (the edge continued outward), the farther ones ``beyond``. For a grid
    that covers corners its source never acquired (:func:`resample_onto` with a NaN default):
    a constant there is an edge the network never saw."""
    unseen = np.isnan(values)
    if not unseen.any():
        return
    if unseen.all():
        values[...] = beyond
        return
    distance, nearest = ndimage.distance_transform_edt(unseen, sampling=spacing_zyx,
                                                       return_indices=True)
    near = unseen & (distance <= reach_mm)
    values[near] = values[tuple(index[near] for index in nearest)]
    values[unseen & ~near] = beyond


def resample_labels_onto(labels: sitk.Image, target: Geometry) -> sitk.Image:
    """A label map on another grid (nearest neighbour) as uint8, written straight into the
    output image: the only full-size allocation is the result itself."""
    return sitk.Resample(labels, list(target.size), sitk.Transform(), sitk.sitkNearestNeighbor,
                         target.origin, target.spacing, target.direction, 0, sitk.sitkUInt8)


# Output voxels computed at a time by linear_slabs (a slab's float32 working set, about 3x this)
LINEAR_SLAB_VOXELS = 1 << 22
# A direction cosine below this (relative to the axis's largest) counts as zero: the two grids'
# axes are then parallel, and linear resampling separates into one interpolation per axis.
_PARALLEL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class _AxisWeights:
    """ITK's linear interpolation along one axis at continuous source positions: inside
    [-0.5, count - 0.5) (``ImageFunction::IsInsideBuffer``) the neighbours ``low`` and ``high``
    with weights 1 - d and d, an index past either end clamped to it
    (``LinearInterpolateImageFunction``); outside, both weights 0 (``inside`` False)."""

    low: np.ndarray
    high: np.ndarray
    low_weight: np.ndarray
    high_weight: np.ndarray
    inside: np.ndarray

    @classmethod
    def at(cls, positions: np.ndarray, count: int) -> _AxisWeights:
        inside = (positions >= -0.5) & (positions < count - 0.5)
        base = np.floor(np.where(inside, positions, 0.0))
        fraction = np.where(inside, positions - base, 0.0)
        return cls(np.clip(base, 0, count - 1).astype(np.intp),
                   np.clip(base + 1, 0, count - 1).astype(np.intp),
                   np.where(inside, 1.0 - fraction, 0.0).astype(np.float32),
                   fraction.astype(np.float32), inside)

    def part(self, start: int, stop: int) -> _AxisWeights:
        return _AxisWeights(self.low[start:stop], self.high[start:stop],
                            self.low_weight[start:stop], self.high_weight[start:stop],
                            self.inside[start:stop])

    def apply(self, array: np.ndarray, axis: int) -> np.ndarray:
        """``array`` interpolated along ``axis``: two gathers and a weighted sum (each output
        voxel reads its two neighbours, not a dense row of weights)."""
        shape = [1] * array.ndim
        shape[axis] = -1
        # float32 from what is gathered (an int16 CT is never converted whole)
        result = np.take(array, self.low, axis=axis).astype(np.float32, copy=False)
        result *= self.low_weight.reshape(shape)
        upper = np.take(array, self.high, axis=axis).astype(np.float32, copy=False)
        upper *= self.high_weight.reshape(shape)
        result += upper
        return result


def _separable_weights(source: Geometry, target: Geometry
                       ) -> tuple[tuple[int, int, int], list[_AxisWeights]] | None:
    """For grids whose axes are parallel (any permutation and flip): which source axis each
    target axis (i, j, k) runs along, and each target axis's weights; None otherwise."""
    to_source = np.linalg.inv(source.index_to_physical()) @ target.index_to_physical()
    linear = to_source[:3, :3]
    axes = []
    for column in range(3):
        magnitudes = np.abs(linear[:, column])
        axis = int(np.argmax(magnitudes))
        if np.any(np.delete(magnitudes, axis) > _PARALLEL_TOLERANCE * magnitudes[axis]):
            return None
        axes.append(axis)
    if sorted(axes) != [0, 1, 2]:
        return None
    weights = [_AxisWeights.at(linear[axes[q], q] * np.arange(target.size[q], dtype=np.float64)
                               + to_source[axes[q], 3], source.size[axes[q]])
               for q in range(3)]
    return (axes[0], axes[1], axes[2]), weights


def linear_slabs(source: sitk.Image, target: Geometry, default_value: float = 0.0,
                 slab_voxels: int = LINEAR_SLAB_VOXELS, planes: bool = True
                 ) -> Iterator[np.ndarray]:
    """``source`` (a scalar 3D image) resampled linearly onto ``target``, as float32 (z, y, x)
    slabs of consecutive target slices, first to last: the values of one ``sitk.Resample``
    (identity transform, ``default_value`` outside) to float rounding, without the whole
    resampled volume ever being held. Grids with parallel axes (a working grid and the CT it
    came from, in any storage order) are interpolated one axis at a time, each output voxel
    from its two neighbours along that axis; others are resampled slab by slab with ITK.
    ``planes=False`` spares the source's slices interpolated in-plane onto the target (the
    least arithmetic when upsampling along k, but one target-sized plane per source slice:
    131 MB for a 3 mm working grid under a 512 x 512 CT), for callers that run several maps
    at once."""
    height = target.size[1] * target.size[0]
    step = max(1, min(target.size[2], slab_voxels // max(1, height)))
    separable = _separable_weights(Geometry.of(source), target)
    if separable is None:
        for start in range(0, target.size[2], step):
            slab = target.slab(start, min(target.size[2], start + step))
            resampled = sitk.Resample(source, list(slab.size), sitk.Transform(), sitk.sitkLinear,
                                      slab.origin, slab.spacing, slab.direction,
                                      float(default_value), sitk.sitkFloat32)
            yield sitk.GetArrayFromImage(resampled)
        return
    (along_i, along_j, along_k), (w_i, w_j, w_k) = separable
    # the source array's axes (numpy order: source axis a is array axis 2 - a) put in the
    # target's order: slowest along target k, then j, fastest along i
    ordered = sitk.GetArrayViewFromImage(source).transpose(2 - along_k, 2 - along_j, 2 - along_i)
    # upsampling along k (a working grid onto its CT): i and j first, on the source's few
    # slices, then each slab from two of those planes per slice (the least arithmetic)
    in_plane = (w_j.apply(w_i.apply(ordered, 2), 1)
                if planes and ordered.shape[0] <= target.size[2] else None)
    for start in range(0, target.size[2], step):
        part = w_k.part(start, min(target.size[2], start + step))
        if in_plane is not None:
            slab = part.apply(in_plane, 0)
        else:
            slab = w_j.apply(w_i.apply(part.apply(ordered, 0), 2), 1)
        if default_value != 0.0:  # zero weights give 0 outside; another default is put back
            slab[~part.inside] = default_value
            slab[:, ~w_j.inside] = default_value
            slab[:, :, ~w_i.inside] = default_value
        yield np.ascontiguousarray(slab, dtype=np.float32)


def most_likely_onto(maps: np.ndarray, grid: Geometry, target: Geometry) -> np.ndarray:
    """Per voxel of ``target``, the index of the largest of ``maps`` (K, z, y, x: one map per
    class on ``grid``) once each is resampled linearly onto ``target``, as uint8 (z, y, x): what
    ``argmax`` over the full-size resampled maps gives (ties to the first; outside the maps'
    grid every map reads 0, so the first wins), computed slab by slab. This is how nnU-Net
    brings a segmentation from the network's grid back to the image's: resample the class
    probabilities, then take the most likely class, so that the labels follow the maps
    between the coarse grid's voxels instead of its staircase.

    Grids with parallel axes take a short cut that gives the same classes: linear weights are
    non-negative and sum to one, so where one class is the largest at all eight corners of
    the cell a voxel falls in, it is the largest at the voxel too; only cells whose corners
    disagree (organ edges) are interpolated: a 1024^3 CT's post-processing from its 3 mm grid
    took 10.7 s instead of 28.8 s (docs/RESULTS.md, "Size and memory")."""
    if not 1 <= len(maps) <= 256:
        raise ValueError(f"{len(maps)} class maps: 1 to 256 give uint8 labels")
    separable = _separable_weights(grid, target)
    if separable is None:
        return _most_likely_slabs(maps, grid, target)
    axes, (w_i, w_j, w_k) = separable
    # the maps' axes in the target's order (k, j, i): no copy when they are in it already
    values = np.ascontiguousarray(maps.transpose(0, *(3 - a for a in axes[::-1])))
    corners = most_likely(values)
    agreed = _cells_agree(corners)
    # every slab is written whole, so nothing needs zeroing first (1 GB from np.zeros, then
    # written slab by slab: 3.4 s in a fresh process on the dev CPU; from np.empty: 0.2 s)
    output = np.empty(target.size[::-1], np.uint8)
    height = target.size[1] * target.size[0]
    step = max(1, min(target.size[2], LINEAR_SLAB_VOXELS // max(1, height)))
    for start in range(0, target.size[2], step):
        part = w_k.part(start, min(target.size[2], start + step))
        slab = _cell_values(corners, part, w_j, w_i)
        edge = ~_cell_values(agreed, part, w_j, w_i)
        for outside in (np.s_[~part.inside], np.s_[:, ~w_j.inside], np.s_[:, :, ~w_i.inside]):
            slab[outside] = 0  # whole slices, rows and columns beyond the maps' box
            edge[outside] = False
        if edge.any():
            slab[edge] = _interpolated_best(values, edge, part, w_j, w_i)
        output[start:start + slab.shape[0]] = slab
    return output


def _cell_values(array: np.ndarray, k: _AxisWeights, j: _AxisWeights, i: _AxisWeights
                 ) -> np.ndarray:
    """``array`` at each target voxel's cell (its low corner), in C order: ``np.take`` axis
    by axis (indexing ``[:, :, low]`` returns the last axis first in memory, and copying that
    into the output took 7 of a 1024^3 CT's 16 s; ``np.ix_`` is 5x slower)."""
    return np.take(np.take(np.take(array, k.low, 0), j.low, 1), i.low, 2)


def _cells_agree(corners: np.ndarray) -> np.ndarray:
    """True where the cell from voxel (k, j, i) to (k+1, j+1, i+1) (the last index repeated at
    the far ends, as the weights clamp it) holds one class at all eight corners."""
    padded = np.pad(corners, 1, mode="edge")[1:, 1:, 1:]
    depth, height, width = corners.shape
    agree = np.ones(corners.shape, bool)
    for dk, dj, di in itertools.product((0, 1), repeat=3):
        if dk or dj or di:
            agree &= padded[dk:dk + depth, dj:dj + height, di:di + width] == corners
    return agree


def _interpolated_best(values: np.ndarray, where: np.ndarray, k: _AxisWeights,
                       j: _AxisWeights, i: _AxisWeights) -> np.ndarray:
    """The largest class (first of ties) at the voxels ``where`` of a slab, every class
    interpolated from its eight corners at once."""
    kk, jj, ii = np.nonzero(where)
    _, height, width = values.shape[1:]
    flat = values.reshape(len(values), -1)
    total = np.zeros((len(values), kk.size), np.float32)
    axes = [((k.low[kk], k.low_weight[kk]), (k.high[kk], k.high_weight[kk])),
            ((j.low[jj], j.low_weight[jj]), (j.high[jj], j.high_weight[jj])),
            ((i.low[ii], i.low_weight[ii]), (i.high[ii], i.high_weight[ii]))]
    for (ak, wk), (aj, wj), (ai, wi) in itertools.product(*axes):
        total += flat[:, (ak * height + aj) * width + ai] * (wk * wj * wi)
    return most_likely(total)


def _most_likely_slabs(maps: np.ndarray, grid: Geometry, target: Geometry) -> np.ndarray:
    """:func:`most_likely_onto` for grids that are not parallel: every map resampled slab
    by slab (ITK), one slab per map held at a time."""
    images = [grid.image(array) for array in maps]
    output = np.empty(target.size[::-1], np.uint8)
    start = 0
    for slabs in zip(*(linear_slabs(m, target, planes=False) for m in images), strict=True):
        best = slabs[0]
        chosen = np.zeros(best.shape, np.uint8)
        for index, slab in enumerate(slabs[1:], 1):
            better = slab > best
            chosen[better] = index
            np.maximum(best, slab, out=best)
        output[start:start + best.shape[0]] = chosen
        start += best.shape[0]
    return output


def resample_linear(source: sitk.Image, reference: sitk.Image, default_value: float = 0.0
                    ) -> sitk.Image:
    """``source`` on ``reference``'s grid, linear, as a float32 image: :func:`linear_slabs`
    gathered into one array (the values of ``sitk.Resample`` to float rounding)."""
    target = Geometry.of(reference)
    output = np.empty(target.size[::-1], np.float32)
    start = 0
    for slab in linear_slabs(source, target, default_value):
        output[start:start + slab.shape[0]] = slab
        start += slab.shape[0]
    return target.image(output)
