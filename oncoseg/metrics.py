"""Agreement between a result and a reference, as the papers report it.

Overlap: Dice and Jaccard, with the empty/empty case an explicit choice of the caller. Surface:
mean surface distance and the 95th-percentile Hausdorff distance in millimetres on the voxel
grid's spacing, with surfaces and distances defined as in MONAI (edge voxels = mask minus its
6-connected erosion; distances from each edge voxel of one mask to the nearest edge voxel of
the other). "Mean surface distance" has two symmetric forms that differ whenever the two
surfaces have different numbers of voxels, so each has its own function and its own name in
every table: :func:`mean_surface_distance` pools the distances of both surfaces' voxels
(MONAI's ``symmetric=True``), :func:`mean_of_directed_surface_distances` averages the two
directed means (paper 003's MSD, section 2.6). Probability maps: voxelwise ROC AUC.
Task-specific scores (BraTS regions, the UW-Madison Kaggle score) and the per-case table writer
sit on top.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from oncoseg.io.atomic import write_text_atomic

_FACE_NEIGHBOURS = {2: ndimage.generate_binary_structure(2, 1),
                    3: ndimage.generate_binary_structure(3, 1)}


def _pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(prediction, bool), np.asarray(reference, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return a, b


def dice(prediction: np.ndarray, reference: np.ndarray, *, empty: float = 1.0) -> float:
    """2|A∩B| / (|A| + |B|); ``empty`` is returned when both masks are empty."""
    a, b = _pair(prediction, reference)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float(empty)
    return 2.0 * int(np.count_nonzero(a & b)) / total


def jaccard(prediction: np.ndarray, reference: np.ndarray, *, empty: float = 1.0) -> float:
    a, b = _pair(prediction, reference)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return float(empty)
    return int(np.count_nonzero(a & b)) / union


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive voxel scores above a
    random negative one (ties count one half), computed from mid-ranks in O(n log n)."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.size} vs {y.size}")
    positives = int(np.count_nonzero(y))
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    # mid-rank of each group of tied scores (1-based)
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    ranks = np.empty(s.size, np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    rank_sum = float(ranks[y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


# ---------------------------------------------------------------------------- surfaces


def _edges(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask (outside the array counts)."""
    eroded = ndimage.binary_erosion(mask, structure=_FACE_NEIGHBOURS[mask.ndim], border_value=0)
    return mask & ~eroded


def surface_distances(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction edge voxel to the reference edge, and back.

    ``spacing`` follows the array's axis order (for a SimpleITK array: z, y, x spacing, i.e.
    ``image.GetSpacing()[::-1]``). Work is restricted to the masks' common bounding box, plus
    one voxel so the erosion sees the true border.
    """
    a, b = _pair(prediction, reference)
    if len(spacing) != a.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {a.ndim} dimensions")
    union = a | b
    if not union.any():
        return np.zeros(0), np.zeros(0)
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2)
                for idx in np.nonzero(union))
    a, b = a[box], b[box]
    edges_a, edges_b = _edges(a), _edges(b)
    if not edges_a.any() or not edges_b.any():
        inf_a = np.full(int(edges_a.sum()), np.inf)
        inf_b = np.full(int(edges_b.sum()), np.inf)
        return inf_a, inf_b
    sampling = np.asarray(spacing, float)
    to_b = ndimage.distance_transform_edt(~edges_b, sampling=sampling)[edges_a]
    to_a = ndimage.distance_transform_edt(~edges_a, sampling=sampling)[edges_b]
    return to_b, to_a


def _pooled_mean(to_reference: np.ndarray, to_prediction: np.ndarray) -> float:
    both = np.concatenate([to_reference, to_prediction])
    return float(both.mean()) if both.size else math.nan


def _mean_of_means(to_reference: np.ndarray, to_prediction: np.ndarray) -> float:
    if not to_reference.size and not to_prediction.size:
        return math.nan
    if not to_reference.size or not to_prediction.size:
        return math.inf
    return float((to_reference.mean() + to_prediction.mean()) / 2.0)


def _percentile_hausdorff(to_reference: np.ndarray, to_prediction: np.ndarray,
                          percentile: float) -> float:
    if not to_reference.size and not to_prediction.size:
        return math.nan
    if not to_reference.size or not to_prediction.size:
        return math.inf
    return float(max(np.percentile(to_reference, percentile),
                     np.percentile(to_prediction, percentile)))


def mean_surface_distance(prediction: np.ndarray, reference: np.ndarray,
                          spacing: Sequence[float]) -> float:
    """Symmetric, pooled: the mean over the edge voxels of both masks together, so the larger
    surface weighs more (MONAI's ``compute_average_surface_distance(symmetric=True)``); nan if
    both are empty. Not paper 003's MSD: see :func:`mean_of_directed_surface_distances`."""
    return _pooled_mean(*surface_distances(prediction, reference, spacing))


def mean_of_directed_surface_distances(prediction: np.ndarray, reference: np.ndarray,
                                       spacing: Sequence[float]) -> float:
    """Symmetric, as paper 003 (Sartor et al. 2020, 2.6) defines its MSD: the mean distance
    from the prediction's surface voxels to the reference surface, the same from the
    reference's, and the average of the two means, so each surface weighs one half whatever
    its size. nan if both masks are empty, inf if one is."""
    return _mean_of_means(*surface_distances(prediction, reference, spacing))


def surface_figures(prediction: np.ndarray, reference: np.ndarray,
                    spacing: Sequence[float]) -> dict[str, float]:
    """Both mean surface distances and HD95 from one computation of the distances (the
    distance transforms are the cost): ``msd_paper_mm`` (the mean of the two directed
    means), ``msd_pooled_mm`` and ``hd95_mm``, each as its own function gives it."""
    distances = surface_distances(prediction, reference, spacing)
    return {"msd_paper_mm": _mean_of_means(*distances),
            "msd_pooled_mm": _pooled_mean(*distances),
            "hd95_mm": _percentile_hausdorff(*distances, 95.0)}


def hausdorff(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
              percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance, or its percentile version (HD95: ``percentile=95``).

    The larger of the two directed percentiles; nan if both masks are empty, inf if one is.
    """
    return _percentile_hausdorff(*surface_distances(prediction, reference, spacing),
                                 percentile)


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    return hausdorff(prediction, reference, spacing, 95.0)


# ---------------------------------------------------------------------------- task scores

BRATS_REGIONS = {"whole tumour": (1, 2, 3), "tumour core": (1, 3), "enhancing tumour": (3,)}


def brats_regions(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Nested BraTS regions from OncoSeg's brain labels (1 necrotic/non-enhancing core,
    2 oedema, 3 enhancing)."""
    labels = np.asarray(labels)
    return {name: np.isin(labels, values) for name, values in BRATS_REGIONS.items()}


def slice_dice(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Dice of each slice (axis 0) of two masks, 1 where both slices are empty: the
    UW-Madison competition scores every (slice, organ) row of a submission this way."""
    a, b = _pair(prediction, reference)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    overlap = np.count_nonzero(a & b, axis=1)
    total = np.count_nonzero(a, axis=1) + np.count_nonzero(b, axis=1)
    return np.where(total == 0, 1.0, 2.0 * overlap / np.maximum(total, 1))


def kaggle_hausdorff_score(prediction: np.ndarray, reference: np.ndarray) -> float:
    """1 - Hausdorff / volume diagonal for one scan and organ, the competition's 3D part.

    The distance is taken between the masks' voxel index sets (slice number as the third
    coordinate, not millimetres) and normalised by the diagonal of the volume in voxels; both
    empty scores 1, one empty scores 0.
    """
    a, b = _pair(prediction, reference)
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    diagonal = float(np.sqrt(np.sum(np.square(a.shape))))
    distance = max(_directed_hausdorff_voxels(a, b), _directed_hausdorff_voxels(b, a))
    return 1.0 - min(distance / diagonal, 1.0)


def kaggle_gi_score(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The UW-Madison GI tract competition's score for one scan (z, y, x) and one organ:
    0.4 x the mean per-slice Dice + 0.6 x the Hausdorff score. A data set's score weights
    every slice's Dice equally, not every scan's: see the oar-mr evaluation."""
    d = float(slice_dice(prediction, reference).mean())
    h_score = kaggle_hausdorff_score(prediction, reference)
    return {"dice": d, "hausdorff_score": h_score, "score": 0.4 * d + 0.6 * h_score}


def icc_agreement(scores: np.ndarray) -> float:
    """ICC(2,1) of Shrout and Fleiss: two-way random effects, absolute agreement, single
    measurement. ``scores`` is (subjects, raters), e.g. per-case DSC of k repeated trainings:
    1 when the repeats give every case the same score, low when they disagree."""
    x = np.asarray(scores, np.float64)
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError(f"ICC needs at least 2 subjects and 2 raters, got {n} x {k}")
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_error = np.sum((x - grand) ** 2) - ss_rows - ss_cols
    ms_rows, ms_cols = ss_rows / (n - 1), ss_cols / (k - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    return float((ms_rows - ms_error) / denominator) if denominator > 0 else math.nan


def _directed_hausdorff_voxels(a: np.ndarray, b: np.ndarray) -> float:
    """max over voxels of ``a`` of the distance to the nearest voxel of ``b``, exactly, via the
    Euclidean distance transform of b's complement."""
    return float(ndimage.distance_transform_edt(~b)[a].max())


# ---------------------------------------------------------------------------- tables


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean, SD, median and range over finite values; how many were not finite."""
    v = np.asarray([x for x in values if x is not None], float)
    finite = v[np.isfinite(v)]
    if not finite.size:
        return {"n": 0, "not_finite": int(v.size)}
    return {"n": int(finite.size), "mean": float(finite.mean()),
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "median": float(np.median(finite)), "min": float(finite.min()),
            "max": float(finite.max()), "not_finite": int(v.size - finite.size)}


def write_case_table(rows: Sequence[Mapping[str, Any]], folder: str | os.PathLike[str],
                     overwrite: bool = False) -> tuple[Path, Path]:
    """``cases.csv`` (one row per case) and ``summary.json`` (per numeric column)."""
    if not rows:
        raise ValueError("no cases to write")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    numeric = [c for c in columns
               if all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                      for r in rows if r.get(c) is not None)
               and any(r.get(c) is not None for r in rows)]
    summary = {c: summarise([r.get(c) for r in rows]) for c in numeric}
    folder = Path(folder)
    table = write_text_atomic(folder / "cases.csv", buffer.getvalue(), overwrite)
    report = write_text_atomic(folder / "summary.json",
                               json.dumps({"cases": len(rows), "metrics": summary}, indent=2)
                               + "\n", overwrite)
    return table, report


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
    return value
