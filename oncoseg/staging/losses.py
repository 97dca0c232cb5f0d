"""The staging losses of paper 002: focal loss, plus triplet loss with online hard mining
(the default) or center loss, each with its original paper's settings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """-(1 - p)^gamma log p of the true class (Lin et al. 2017), one logit per sample for T3;
    gamma = 0 is the cross-entropy."""
    targets = targets.float()
    log_p = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (-(1.0 - log_p.exp()) ** gamma * log_p).mean()


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor,
                       margin: float = 0.2) -> torch.Tensor:
    """Triplet loss with online hard mining (Schroff et al. 2015): for every anchor in the
    batch, its farthest positive and nearest negative, on l2-normalised features and squared
    distances. Zero when the batch holds one class only (no triplet exists)."""
    embedded = F.normalize(features, dim=1)
    distances = torch.cdist(embedded, embedded).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives, negatives = same & ~eye, ~same
    usable = positives.any(dim=1) & negatives.any(dim=1)
    if not usable.any():
        return features.sum() * 0.0
    hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negatives, float("inf")).amin(dim=1)
    losses = F.relu(hardest_positive - hardest_negative + margin)
    return losses[usable].mean()


class CenterLoss(nn.Module):
    """1/2 sum ||x_i - c_{y_i}||^2 (Wen et al. 2016), averaged over the batch; the class
    centres are parameters learned with the network."""

    def __init__(self, classes: int, features: int):
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(classes, features))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (features - self.centres[labels]).pow(2).sum(dim=1).mean()
