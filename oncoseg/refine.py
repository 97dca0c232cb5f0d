"""Click and scribble correction of one segment, guided by the model's probability map.

A reader's positive input (a click or a scribble) adds the region that the model's probability
and the image support around it; negative input removes the region under it. The method is the
random walker with a prior model (L. Grady, "Multilabel random walker image segmentation using
prior models", CVPR 2005; L. Grady, "Random walks for image segmentation", IEEE TPAMI 28(11),
2006), in its two-label form: on a 6-connected grid graph of a local crop with edge weights

    w_ij = exp(-beta * sum_c (I_c(i) - I_c(j))^2 / s_c) * (h_min / h_ij)^2

(``s_c``: the median squared neighbour difference of image channel ``c`` in the crop, i.e. its
noise level; ``h_ij``: the edge's length in mm, so that anisotropic voxels approximate the same
continuous energy), the
probability ``x`` that a voxel belongs to the segment minimises

    sum_ij w_ij (x_i - x_j)^2 + gamma * sum_i [p_i (1 - x_i)^2 + (1 - p_i) x_i^2]

with the reader's seeds fixed (positive 1, negative 0), i.e. ``(L_UU + gamma I) x_U =
gamma p_U - L_UM x_M``: a sparse, symmetric positive definite system, solved by conjugate
gradients (Jacobi preconditioned, started from the prior). ``p`` is the model's probability of
the segment, so where the reader gives no input the answer is the model's own; the seeds
propagate along homogeneous image regions and stop at intensity edges. The segment is
``x > 0.5``. The crop's faces keep their current labels (the walk is local); without a model
map (``probability=None``) gamma is 0: the classic two-label walker between the reader's seeds
and the faces.

Why a random walker rather than a geodesic distance (Criminisi et al., GeoS, ECCV 2008; Wang
et al., DeepIGeoS, IEEE TPAMI 2018): the walker's prior term uses the model's calibrated
probabilities directly (a geodesic distance needs a second rule to combine with them), the
energy has one global optimum, and the walker is robust to weak or leaky edges in noisy MR
where a shortest path leaks through one gap. Measured against a GeoS-like comparator (a
development script, not shipped: generalized geodesic distances from the map's soft masks,
nu * (1 - p) for the segment and nu * p for the background, the clicks as hard seeds, the
segment where the first is smaller), the two tied: segments starting below Dice 0.90 reached
0.767 after 3 clicks with either (geodesic at its best of nu 10/20/40 mm and intensity weights
1/3; 2 phantoms per task). What was measured (``Testing/benchmarks/bench_refine.py``,
simulated reader on unseen phantoms of the four segmentation tasks): beta in 0.3..10, gamma in
0.005..0.5 and boxes of 30 or 40 mm; segments starting below Dice 0.90 reached 0.761..0.768
after 3 clicks on average for every setting with beta >= 1 and gamma >= 0.02 (the trade-off
moves between structures: a small gamma lets a click clear a large false positive that the
image sets apart, e.g. the GI phantom's small bowel, but spills over where the false and the
true part look alike, e.g. its large bowel), so the defaults are the simplest good setting:
beta 1, gamma 0.5, a 30 mm margin.

The walker alone follows the prior almost everywhere (with gamma 0.5 a seed's pull fades within
a voxel or two in homogeneous tissue), so a click could not move a boundary the model drew
confidently in the wrong place: the rectal model's one-voxel over-segmentation shell (its
voxels at 0.6-0.9, the tumour's at 0.97-1.0), or a false region at the true part's probability.
The reader's input therefore also recalibrates the prior near it before the walk
(:func:`_recalibrated_prior`: the logit shifted until the clicked voxel lies one logit unit on
the reader's side, fading over 15 mm, with image dissimilarity at 2.5 standard deviations and,
since 2026-12-06, with the difference from the clicked voxel's logit at 2 logit units: 12 -> 14
of 20 segments alone and 15 -> 17 of 20 in the session on seed 3100, 9 -> 10 of 16 and 12 -> 13
of 16 on seed 3300, the GI stomach gaining and the rectal tumour's one-voxel shell, whose
voxels spread over 0.6-0.99, losing: docs/RESULTS.md).
Measured with the same benchmark (3 clicks; segments starting below Dice 0.90 that gain 0.05):
6 of 24 without it, 12 of 24 with it on the benchmark's phantoms (seed 3100, where the settings
were chosen), and 4 of 20 against 9 of 20 on phantoms not used to choose them (seed 3300).
Variants measured and not kept: the shift without the image term (8 of 24, but 9 segments made
worse: the GI phantom's small bowel lost up to 0.10), gated by the click's depth from the
boundary or by the share of the segment it would move (6-8 of 24), weighted by a geodesic
distance on the image gradient (6 of 24), spread along the segment's surface when the click
lies in a thin boundary error (11 of 24, 2-3 segments made worse), and a separate image term
for negative clicks (9-12 of 24).

A task may set other values for its model's map (``Task.refine``, read by
``Task.refine_settings``; Slicer's effect, the review app and the benchmark use them). The
rectal task did until 2026-12-08: its demo's map then saturated with a one-voxel rim at
0.54-0.99 round a core at 0.98-1.0, and a negative click moving the boundary 3 logit units past
the clicked voxel (``recalibration_margin_negative``) over 25 mm (``recalibration_mm``) gained
+0.053 / +0.079 where the defaults gained +0.025 / +0.030. The demo trained that day on partial
volumes has no rim, and the same values lost 0.03-0.05 Dice over 10 clicks against the
defaults (docs/RESULTS.md); no task sets any now.

The fade with distance reaches further for a click deep in what it corrects: its width is at
least 15 mm and twice the click's distance from the segment's boundary (inside the segment
for negative input, outside for positive; ``recalibration_depth_reach``). The simulated
reader clicks at the centre of the largest error region, and a click 10 mm deep in a false
region speaks for all of it, not for the 15 mm round it: the GI small bowel's large false
regions now go in 3 clicks (+0.062 to +0.145 instead of +0.058 to +0.086 on both seeds), with
the same segments meeting the goal and none more made worse; three times the depth lifted the
small bowel further but took the stomach of case1_day14 below the goal (docs/RESULTS.md).

Per click, 0.016 s median on the phantoms and 0.016..0.28 s on a 256 x 256 x 40 volume (2 shared
cores; the rectal grid's finer voxels the slowest; the time grows with the earlier clicks kept
as seeds, one distance transform each: docs/RESULTS.md).

Guarantees, whatever the solver returns:

* only the target segment's voxels change, and only inside the box ``box_margin_mm`` around
  the new input (the bounding box of its points widened by that margin in every physical
  direction, on the label map's grid);
* a voxel of another segment never changes (it is fixed to "not target" in the walk, and any
  change there is refused);
* a locked voxel never changes (:func:`hand_edits` defines the usual lock: what the reader
  painted by hand since the segment was last produced by the model or by refine);
* only changes connected to the input are kept: voxels added lie in a connected component of
  the new segment that holds a positive seed, voxels removed in a connected component of the
  new background that holds a negative seed. A voxel far from the click where the prior alone
  disagrees with the current segmentation (e.g. a component that post-processing removed)
  therefore stays as it is.

Coordinates: strokes are physical points in ITK's LPS millimetres (Slicer's RAS points are
converted by the caller, ``OncoSegCommonLib.coordinates.ras_lps``). Everything is mapped through
the label map's own index <-> physical transform, so storage order and obliquity do not matter.
The probability map and the images may be on other grids: only the crop is resampled (linear).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import SimpleITK as sitk

from oncoseg.errors import InputError
from oncoseg.geometry import same_grid

# Half-size of the box around the input in which anything may change, in mm: 3 cm each side
# (a 6 cm box around a click) holds a rectal tumour or an organ's error region; the change is
# clipped to it.
DEFAULT_BOX_MARGIN_MM = 30.0
# Radius of the ball a click fixes as seed, in mm (at least the voxel under the point).
DEFAULT_SEED_RADIUS_MM = 2.0


@dataclass(frozen=True)
class Stroke:
    """A click (one point) or a scribble (a polyline), in physical LPS mm; ``positive``
    adds to the segment, negative removes."""

    points: tuple[tuple[float, float, float], ...]
    positive: bool = True

    @staticmethod
    def click(point: Sequence[float], positive: bool = True) -> Stroke:
        return Stroke((tuple(float(v) for v in point),), positive)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not self.points or any(len(p) != 3 for p in self.points):
            raise InputError("refine stroke", "needs one or more 3D points")


@dataclass(frozen=True)
class RefineSettings:
    """The walker's parameters (chosen by ``bench_refine.py``; see the module docstring)."""

    beta: float = 1.0  # edge sensitivity (squared differences in units of the crop's median)
    gamma: float = 0.5  # weight of the model's prior against the image term
    box_margin_mm: float = DEFAULT_BOX_MARGIN_MM
    seed_radius_mm: float = DEFAULT_SEED_RADIUS_MM
    tolerance: float = 1e-3  # conjugate gradient's relative residual
    max_iterations: int = 400
    # the reader's input recalibrates the model near it (_recalibrated_prior): the logit shift
    # that puts a clicked voxel ``recalibration_margin`` beyond the decision boundary, fading
    # with distance from the input (a Gaussian of ``recalibration_mm``) and with how unlike the
    # clicked voxels a voxel looks (a Gaussian of the z-score, ``recalibration_similarity``
    # standard deviations); a margin of 0 turns it off
    recalibration_margin: float = 1.0
    recalibration_mm: float = 15.0
    recalibration_similarity: float = 2.5
    # ... and with how unlike the clicked voxels the model rates a voxel (a Gaussian of the
    # difference in logit, in logit units); 0 turns that term off
    recalibration_confidence: float = 2.0
    # the margin for negative input where a model needs another than for positive input
    # (None: ``recalibration_margin``); a task sets it through ``Task.refine``
    recalibration_margin_negative: float | None = None
    # the fade's width grows to this many times the click's depth in what it corrects (its
    # distance from the segment's boundary: inside the segment for negative input, outside for
    # positive), so that a click deep in a large error reaches across it; 0 turns that off
    recalibration_depth_reach: float = 2.0

    def margin(self, positive: bool) -> float:
        """How far beyond the decision boundary a click of this sign puts its voxel."""
        if positive or self.recalibration_margin_negative is None:
            return self.recalibration_margin
        return self.recalibration_margin_negative


@dataclass
class RefineResult:
    """The corrected label map (the input is never modified), where it may have changed (the
    box, as (z, y, x) slices of the label array) and what changed."""

    labels: sitk.Image
    box: tuple[slice, slice, slice]
    added: np.ndarray  # bool, box-shaped: voxels that became the target segment
    removed: np.ndarray  # bool, box-shaped: voxels that left it
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return int(self.added.sum() + self.removed.sum())


def hand_edits(current: sitk.Image | np.ndarray, reference: sitk.Image | np.ndarray
               ) -> np.ndarray:
    """The lock refine respects: voxels whose label differs between the current segmentation
    and ``reference``, the segmentation as the model (or refine's own last answer) left it.
    What differs was painted by the reader and is theirs to change, not the walker's."""
    a = sitk.GetArrayViewFromImage(current) if isinstance(current, sitk.Image) else current
    b = sitk.GetArrayViewFromImage(reference) if isinstance(reference, sitk.Image) \
        else reference
    if a.shape != b.shape:
        raise InputError("refine lock", f"segmentations of shapes {a.shape} and {b.shape} "
                         "cannot be compared")
    return np.asarray(a != b)


def _box(labels: sitk.Image, points: np.ndarray, margin_mm: float
         ) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the label grid covering the points' bounding box + margin."""
    low, high = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])])
    index = np.array([labels.TransformPhysicalPointToContinuousIndex(tuple(map(float, c)))
                      for c in corners])
    size = np.asarray(labels.GetSize())
    start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, size)
    stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, size)
    if np.any(stop <= start):
        raise InputError("refine", "the input lies outside the segmentation's volume")
    return tuple(slice(int(start[a]), int(stop[a])) for a in (2, 1, 0))  # type: ignore


def _crop_grid(labels: sitk.Image, box: tuple[slice, slice, slice]) -> sitk.Image:
    start = [box[2].start, box[1].start, box[0].start]
    size = [box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start]
    return sitk.RegionOfInterest(labels, size, start)


def _sample(labels: sitk.Image, image: sitk.Image, box: tuple[slice, slice, slice]
            ) -> np.ndarray:
    """``image`` on the label grid's crop ``box`` as float32, resampled only there (its own
    voxels, copied, when it shares the label map's grid)."""
    if same_grid(image, labels):
        return sitk.GetArrayViewFromImage(image)[box].astype(np.float32)
    grid = _crop_grid(labels, box)
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def _crop_points(labels: sitk.Image, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Physical (x, y, z) of every voxel of the crop, shape (z, y, x, 3)."""
    zz, yy, xx = np.meshgrid(*(np.arange(s.start, s.stop, dtype=float) for s in box),
                             indexing="ij")
    index = np.stack([xx, yy, zz], axis=-1)
    spacing = np.asarray(labels.GetSpacing())
    direction = np.asarray(labels.GetDirection()).reshape(3, 3)
    return np.asarray(labels.GetOrigin()) + (index * spacing) @ direction.T


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """A polyline's points with extra ones every ``step`` mm along each segment."""
    out = [points[:1]]
    for a, b in itertools.pairwise(points):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(out)


def _seed_mask(labels: sitk.Image, box: tuple[slice, slice, slice], stroke: Stroke,
               coordinates: np.ndarray, radius_mm: float) -> np.ndarray:
    """Crop voxels within ``radius_mm`` of the stroke's points, plus each point's own voxel
    (each ball is measured in mm on the voxels of a small window around its point only)."""
    shape = coordinates.shape[:3]
    mask = np.zeros(shape, bool)
    step = max(min(labels.GetSpacing()) / 2, 1e-3)
    points = _densify(np.asarray(stroke.points, float), step)
    origin = np.array([s.start for s in box])
    reach = np.ceil(radius_mm / np.asarray(labels.GetSpacing())[::-1]).astype(int) + 1
    for point in points:
        index = np.array(labels.TransformPhysicalPointToContinuousIndex(
            tuple(map(float, point))))[::-1] - origin
        voxel = np.floor(index + 0.5).astype(int)
        if np.all(voxel >= 0) and np.all(voxel < shape):
            mask[tuple(voxel)] = True
        if radius_mm <= 0:
            continue
        low = np.clip(voxel - reach, 0, shape)
        high = np.clip(voxel + reach + 1, 0, shape)
        if np.any(high <= low):
            continue
        window = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        mask[window] |= np.sum((coordinates[window] - point) ** 2, axis=-1) <= radius_mm ** 2
    return mask


def _similarity(channels: Sequence[np.ndarray], scales: Sequence[float], seeds: np.ndarray,
                kappa: float) -> np.ndarray:
    """How much each voxel looks like the voxels under the seeds: a Gaussian of the z-score
    summed over channels, the seeds' spread floored at the crop's noise level (``scales``:
    each channel's :func:`_scale`)."""
    z2 = np.zeros(seeds.shape, np.float64)
    for image, scale in zip(channels, scales, strict=True):
        values = image[seeds].astype(np.float64)
        spread = max(float(values.std()), float(np.sqrt(scale)))
        z2 += ((image - values.mean()) / spread) ** 2
    return np.exp(-0.5 * z2 / kappa ** 2)


def _recalibrated_prior(prior: np.ndarray,
                        seeded: Sequence[tuple[np.ndarray, np.ndarray, bool]],
                        channels: Sequence[np.ndarray], scales: Sequence[float],
                        spacing_zyx: Sequence[float], settings: RefineSettings,
                        segment: np.ndarray | None = None) -> np.ndarray:
    """The model's probability recalibrated by the reader's input: a click says the model's
    decision boundary is wrong *here*, so the map's logit is shifted near the click until the
    clicked voxels lie ``recalibration_margin`` beyond the boundary on the reader's side.

    A negative click on a voxel the model gives 0.89 removes, near it, what the model is no
    more sure of than that (the one-voxel over-segmentation shell a model leaves round a
    tumour, whose voxels sit at 0.6-0.9 while the tumour's own sit at 0.97-1.0); a positive
    click on a voxel at 0.3 adds what the model rates at least as likely, near it. This is a
    local bias correction of the model's logits: image-specific adaptation of the model to the
    reader's input (Wang et al., BIFSeg, IEEE TMI 37(7), 2018, fine-tune the network on the
    scribbles) in its cheapest form, one offset that needs no network, no gradient and no GPU;
    or, seen from the reader's side, a threshold moved by a click (as Slicer's Local Threshold
    effect sets an intensity range from one), on the model's calibrated map rather than the
    raw image. The shift fades with distance (Gaussian, ``recalibration_mm``, wider for a
    click deep in what it corrects: a model's miscalibration is regional) and with how unlike
    the clicked voxels a voxel looks (:func:`_similarity`), so that a click on a false region
    the image sets apart moves that region and not the true part beside it at the same
    probability (the GI phantom's 45 mL small-bowel false positive has the true loops'
    probability, 0.82, but under half their MR signal). It fades too with how unlike the
    clicked voxels the model rates a voxel (a Gaussian of the logit difference,
    ``recalibration_confidence`` logit units): a click says the model is wrong about what it
    rates like the clicked voxel, not about what it rates far less (or far more) sure. The GI
    model's false shell round the stomach is surest where it is thickest (0.92-0.98, where the
    reader clicks), while the true stomach's rim beside it sits at 0.58-0.88: without this
    term the click took 455-646 true rim voxels with 815-1013 false ones. The walker then keeps
    only what the image supports and what is connected to the input. ``seeded``: per stroke,
    its seed ball, the voxels under its points, and its sign."""
    if settings.recalibration_margin <= 0 or not seeded:
        return prior
    eps = 1e-4
    logit = np.log(np.clip(prior, eps, 1 - eps)) - np.log(np.clip(1 - prior, eps, 1 - eps))
    shift = np.zeros(prior.shape, np.float64)
    for positive in (True, False):
        strongest = np.zeros(prior.shape, np.float64)
        depth = _depth(settings, segment, positive, seeded, spacing_zyx)
        for seeds, under, sign in seeded:
            if sign != positive or not under.any():
                continue
            at = logit[under]  # the voxels under the points, not the seed ball's rim
            # how far the clicked voxels must move to lie the margin beyond the boundary
            needed = (settings.margin(True) - float(at.min())) if positive else \
                (float(at.max()) + settings.margin(False))
            if needed <= 0:
                continue
            distance = ndi.distance_transform_edt(~seeds, sampling=spacing_zyx)
            reach = settings.recalibration_mm if depth is None else max(
                settings.recalibration_mm,
                settings.recalibration_depth_reach * float(depth[under].max()))
            weight = np.exp(-0.5 * (distance / reach) ** 2)
            if settings.recalibration_similarity > 0:
                weight *= _similarity(channels, scales, seeds,
                                      settings.recalibration_similarity)
            if settings.recalibration_confidence > 0:
                weight *= np.exp(-0.5 * ((logit - float(at.mean()))
                                         / settings.recalibration_confidence) ** 2)
            strongest = np.maximum(strongest, needed * weight)
        shift += strongest if positive else -strongest
    return (1.0 / (1.0 + np.exp(-(logit + shift)))).astype(np.float32)


def _depth(settings: RefineSettings, segment: np.ndarray | None, positive: bool,
           seeded: Sequence[tuple[np.ndarray, np.ndarray, bool]], spacing_zyx: Sequence[float]
           ) -> np.ndarray | None:
    """How deep each voxel lies in what input of this sign corrects (mm from the segment's
    boundary: outside it for positive input, inside for negative), where the recalibration's
    reach grows with a stroke's depth (a click at the centre of a large false region, 10 mm
    from the segment's edge, speaks for the whole region, not for the 15 mm round it); None
    where it does not."""
    if settings.recalibration_depth_reach <= 0 or segment is None or \
            not any(sign == positive for _, _, sign in seeded):
        return None
    return ndi.distance_transform_edt(~segment if positive else segment, sampling=spacing_zyx)


def _edges(shape: tuple[int, ...]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per array axis, the (first, second) flat indices of each neighbour pair."""
    flat = np.arange(int(np.prod(shape))).reshape(shape)
    out = []
    for axis in range(3):
        if shape[axis] < 2:
            continue
        a = np.take(flat, np.arange(shape[axis] - 1), axis=axis).ravel()
        b = np.take(flat, np.arange(1, shape[axis]), axis=axis).ravel()
        out.append((axis, a, b))
    return out


def walker_probability(channels: Sequence[np.ndarray], prior: np.ndarray, fixed: np.ndarray,
                       fixed_value: np.ndarray, spacing_zyx: Sequence[float],
                       settings: RefineSettings, scales: Sequence[float] | None = None
                       ) -> np.ndarray:
    """The random walker's probability of the target on a crop (module docstring): image
    channels and prior are (z, y, x) arrays; ``fixed`` voxels keep ``fixed_value``;
    ``scales``: each channel's :func:`_scale`, where the caller has them."""
    shape = prior.shape
    n = prior.size
    pairs = _edges(shape)
    h_min = min(spacing_zyx)
    weights = []
    scales = [_scale(image) for image in channels] if scales is None else scales
    for axis, a, b in pairs:
        d2 = np.zeros(a.size, np.float64)
        for image, scale in zip(channels, scales, strict=True):
            flat = image.ravel()
            d2 += (flat[a] - flat[b]).astype(np.float64) ** 2 / scale
        weights.append(np.exp(-settings.beta * d2) * (h_min / spacing_zyx[axis]) ** 2)
    first = np.concatenate([a for _, a, _ in pairs])
    second = np.concatenate([b for _, _, b in pairs])
    weight = np.concatenate(weights)
    fixed_flat = fixed.ravel()
    x = prior.ravel().astype(np.float64).copy()
    x[fixed_flat] = fixed_value.ravel()[fixed_flat]
    free = np.flatnonzero(~fixed_flat)
    if free.size == 0:
        return x.reshape(shape)
    # the system on the free voxels only, built from the edge list (never the whole
    # Laplacian): degree + gamma on the diagonal, -w between two free voxels, and w times
    # the fixed value on the right-hand side for an edge to a fixed voxel
    degree = np.bincount(first, weight, n) + np.bincount(second, weight, n)
    position = np.full(n, -1, np.int64)
    position[free] = np.arange(free.size)
    both = (position[first] >= 0) & (position[second] >= 0)
    i, j, w = position[first[both]], position[second[both]], weight[both]
    # a floor under gamma keeps the system definite where a free region touches no seed (a
    # crop that is the whole volume, or voxels cut off by edges whose weights underflow)
    gamma = max(settings.gamma, 1e-6)
    system = sp.csr_matrix(
        (np.concatenate([-w, -w, degree[free] + gamma]),
         (np.concatenate([i, j, np.arange(free.size)]),
          np.concatenate([j, i, np.arange(free.size)]))), shape=(free.size, free.size))
    to_fixed = np.zeros(n)
    one_free = (position[first] >= 0) & (position[second] < 0)
    to_fixed += np.bincount(first[one_free], weight[one_free] * x[second[one_free]], n)
    other_free = (position[first] < 0) & (position[second] >= 0)
    to_fixed += np.bincount(second[other_free], weight[other_free] * x[first[other_free]], n)
    rhs = gamma * x[free] + to_fixed[free]
    solution = _conjugate_gradient(system, rhs, x[free], settings.tolerance,
                                   settings.max_iterations)
    x[free] = solution
    return x.reshape(shape)


def _conjugate_gradient(matrix: sp.csr_matrix, rhs: np.ndarray, start: np.ndarray,
                        tolerance: float, max_iterations: int) -> np.ndarray:
    """Jacobi-preconditioned conjugate gradients. Written out rather than
    ``scipy.sparse.linalg.cg`` because its vector norms and dots go through BLAS, whose threads
    made a 30 000-unknown solve 10x slower on a busy two-core machine (measured: 1.3 s against
    0.1 s); numpy's own reductions stay on the calling thread."""
    inverse_diagonal = 1.0 / matrix.diagonal()
    x = start.copy()
    residual = rhs - matrix @ x
    goal = tolerance * max(float(np.sqrt((rhs * rhs).sum())), 1e-30)
    z = residual * inverse_diagonal
    direction = z.copy()
    rz = float((residual * z).sum())
    for _ in range(max_iterations):
        if float(np.sqrt((residual * residual).sum())) <= goal:
            break
        product = matrix @ direction
        step = rz / float((direction * product).sum())
        x += step * direction
        residual -= step * product
        z = residual * inverse_diagonal
        rz_next = float((residual * z).sum())
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    return x


def _scale(image: np.ndarray) -> float:
    """The crop's typical squared neighbour difference, the unit ``beta`` is measured in: the
    median over every edge, i.e. the noise level inside tissues rather than the edges (a mean
    would be ruled by the strongest edges in the crop, bone in a CT, and make a soft-tissue
    boundary look flat)."""
    parts = [np.diff(image, axis=axis).ravel() ** 2
             for axis in range(image.ndim) if image.shape[axis] > 1]
    if not parts:
        return 1.0
    squares = np.concatenate(parts)
    # every k-th edge: the median of 50 000 is as good a unit and costs 1/10 of all of them
    squares = squares[::max(1, squares.size // 50_000)]
    return max(float(np.median(squares.astype(np.float64))), 1e-12)


def refine(
    images: sitk.Image | Sequence[sitk.Image], probability: sitk.Image | None,
    labels: sitk.Image, target: int, strokes: Sequence[Stroke],
    earlier: Sequence[Stroke] = (), locked: sitk.Image | np.ndarray | None = None,
    settings: RefineSettings | None = None,
) -> RefineResult:
    """The label map with segment ``target`` corrected by ``strokes`` (see module docstring).

    ``images``: the image(s) the walker reads edges from (any grids covering the input);
    ``probability``: the model's map of the target segment (any grid; None: no model, the
    classic two-label walker of Grady 2006 between the reader's seeds and the box's faces,
    which hold their current labels); ``labels``: the current
    label map (integer values, 0 background); ``strokes``: the new input, which also sets the
    box; ``earlier``: earlier input on the same segment, kept as seeds where inside the box (so
    a second click does not undo the first); ``locked``: bool array (z, y, x) or image of
    voxels that must not change.
    """
    started = time.perf_counter()
    settings = settings or RefineSettings()
    if not strokes:
        raise InputError("refine", "needs at least one click or scribble")
    if target <= 0:
        raise InputError("refine", f"target label must be positive, not {target}")
    images = [images] if isinstance(images, sitk.Image) else list(images)
    points = np.concatenate([np.asarray(s.points, float) for s in strokes])
    box = _box(labels, points, settings.box_margin_mm)
    current = sitk.GetArrayViewFromImage(labels)[box]
    is_target = current == target
    other = (current != target) & (current != 0)
    lock = np.zeros(current.shape, bool)
    if locked is not None:
        lock_array = sitk.GetArrayViewFromImage(locked) if isinstance(locked, sitk.Image) \
            else np.asarray(locked)
        if lock_array.shape != sitk.GetArrayViewFromImage(labels).shape:
            raise InputError("refine lock", f"shape {lock_array.shape} is not the label map's")
        lock = lock_array[box].astype(bool)
    coordinates = _crop_points(labels, box)
    positive = np.zeros(current.shape, bool)
    negative = np.zeros(current.shape, bool)
    new_positive = np.zeros(current.shape, bool)
    new_negative = np.zeros(current.shape, bool)
    seeded: list[tuple[np.ndarray, np.ndarray, bool]] = []
    inside_low = coordinates.reshape(-1, 3).min(axis=0)
    inside_high = coordinates.reshape(-1, 3).max(axis=0)
    for stroke in [*strokes, *earlier]:
        stroke_points = np.asarray(stroke.points, float)
        if stroke in earlier and not np.any(np.all((stroke_points >= inside_low) &
                                                   (stroke_points <= inside_high), axis=1)):
            continue
        seeds = _seed_mask(labels, box, stroke, coordinates, settings.seed_radius_mm)
        seeded.append((seeds, _seed_mask(labels, box, stroke, coordinates, 0.0),
                       stroke.positive))
        if stroke.positive:
            positive |= seeds
            if stroke in strokes:
                new_positive |= seeds
        else:
            negative |= seeds
            if stroke in strokes:
                new_negative |= seeds
    positive &= ~negative  # a voxel under both kinds of input: the removal wins
    new_positive &= ~negative
    timings = {"crop": time.perf_counter() - started}

    channels = [_sample(labels, image, box) for image in images]
    prior = np.zeros(current.shape, np.float32) if probability is None else \
        np.clip(_sample(labels, probability, box), 0.0, 1.0)
    spacing_zyx = labels.GetSpacing()[::-1]
    scales = [_scale(image) for image in channels]  # each channel's noise, for both uses
    if probability is not None:
        prior = _recalibrated_prior(prior, seeded, channels, scales, spacing_zyx, settings,
                                    is_target)
    timings["resample"] = time.perf_counter() - started - timings["crop"]

    fixed = positive | negative | other | lock
    value = np.where(positive, 1.0, 0.0)
    value[other] = 0.0
    value[lock] = is_target[lock]
    # the crop's faces keep their label where the crop does not end at the volume's edge:
    # the walk cannot pull in or push out anything beyond the box
    full = sitk.GetArrayViewFromImage(labels).shape
    face = np.zeros(current.shape, bool)
    for axis, s in enumerate(box):
        index = [slice(None)] * 3
        if s.start > 0:
            index[axis] = 0  # type: ignore[call-overload]
            face[tuple(index)] = True
        if s.stop < full[axis]:
            index[axis] = -1  # type: ignore[call-overload]
            face[tuple(index)] = True
    face &= ~(positive | negative)
    value[face & ~lock & ~other] = is_target[face & ~lock & ~other]
    fixed |= face
    walked = time.perf_counter()
    if probability is None:  # no model: the classic walker between the seeds and the faces
        settings = replace(settings, gamma=0.0)
    x = walker_probability(channels, prior, fixed, value, spacing_zyx, settings, scales)
    timings["walk"] = time.perf_counter() - walked

    new = x > 0.5
    grow, shrink = new, ~new
    structure = ndi.generate_binary_structure(3, 1)
    added = np.zeros(current.shape, bool)
    removed = np.zeros(current.shape, bool)
    if new_positive.any():
        components, _ = ndi.label(grow, structure)
        keep = np.unique(components[new_positive & grow])
        added = np.isin(components, keep[keep > 0]) & ~is_target
    if new_negative.any():
        components, _ = ndi.label(shrink, structure)
        keep = np.unique(components[new_negative & shrink])
        removed = np.isin(components, keep[keep > 0]) & is_target
    added &= ~other & ~lock
    removed &= ~lock
    result = sitk.GetArrayFromImage(labels)
    crop = result[box]
    crop[added] = target
    crop[removed] = 0
    out = sitk.GetImageFromArray(result)
    out.CopyInformation(labels)
    timings["total"] = time.perf_counter() - started
    return RefineResult(out, box, added, removed, timings)
