"""Paper 004's loss: cross-entropy whose voxel weights are set by the batch (eqs. 1-3).

Every voxel of class c gets the weight t_c / N_b^c (N_b^c: voxels of class c in the batch), so
class c accounts for the share t_c of the loss whatever its frequency. The weights sum to one,
so the loss reads as a cross-entropy; the paper further divides by the number of voxels, a
constant factor that its normalised-gradient optimiser ignores. A class absent from the batch
passes its share to the present ones (the paper assumes every class is present; patches of
healthy tissue are not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def batch_weighted_cross_entropy(scores: torch.Tensor, target: torch.Tensor,
                                 targets: Sequence[float]) -> torch.Tensor:
    """``scores`` (B, C, ...) before softmax, ``target`` (B, ...) class indices."""
    classes = scores.shape[1]
    counts = torch.bincount(target.reshape(-1), minlength=classes).to(scores.dtype)
    shares = torch.as_tensor(list(targets), dtype=scores.dtype, device=scores.device)
    shares = torch.where(counts > 0, shares, torch.zeros_like(shares))
    shares = shares / shares.sum().clamp_min(1e-12)
    per_class = shares / counts.clamp_min(1)
    weights = per_class[target]
    nll = F.cross_entropy(scores, target, reduction="none")
    return (weights * nll).sum()
