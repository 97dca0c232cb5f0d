"""The negative log-likelihood of paper 003 for partially annotated cases.

Clinical structure sets rarely hold every organ: a patient without a bladder contour still has
a bladder. Labelling those voxels background would teach the network to miss bladders. The
paper merges each missing label with the background: for a case where organ k is not
annotated, a background voxel is explained by "background or k", so the probability that
enters the loss there is p(background) + p(k), and predicting k costs nothing.

A voxel nobody annotated (nnU-Net's ignore label, :data:`~oncoseg.datasets.base.IGNORE_LABEL`)
is the same idea taken to every class: it is explained by any class, the probability entering
the loss there is 1, and it adds nothing. It still counts in the mean, so a batch's loss stays
the mean of its micro-batches' (the accumulation in :mod:`oncoseg.oar.ct.training`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oncoseg.datasets.base import IGNORE_LABEL


def partial_label_nll(logits: torch.Tensor, target: torch.Tensor,
                      annotated: torch.Tensor) -> torch.Tensor:
    """Mean NLL over voxels.

    ``logits`` (B, C, ...) with class 0 the background; ``target`` (B, ...) integer labels;
    ``annotated`` (B, C) bool, which classes each case annotates (background always counts as
    annotated). Voxels labelled with an annotated organ use log p(organ); background voxels use
    log of the summed probability of background and every class the case did not annotate;
    voxels labelled :data:`IGNORE_LABEL` use log 1.
    """
    if logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                         "differ in batch or space")
    log_p = F.log_softmax(logits.float(), dim=1)
    merged = annotated.clone().bool()
    merged[:, 0] = False
    unannotated = ~merged
    unannotated[:, 0] = True  # the background merges with every unannotated class
    shape = (*unannotated.shape, *([1] * (logits.dim() - 2)))
    masked = log_p.masked_fill(~unannotated.view(shape), float("-inf"))
    log_background = torch.logsumexp(masked, dim=1)
    ignored = target == IGNORE_LABEL
    known = target.long().masked_fill(ignored, 0)
    log_target = log_p.gather(1, known.unsqueeze(1)).squeeze(1)
    chosen = torch.where(known == 0, log_background, log_target)
    return -chosen.masked_fill(ignored, 0.0).mean()
