"""The hierarchical voxelwise vote of paper 004 (section 2.3) over n models' label maps.

Votes are pooled along the tumour's nesting: a voxel is tumour when the share of models that
call it any tumour class reaches T_tumor; a tumour voxel is core when, among the tumour votes,
the share for necrotic/non-enhancing or enhancing reaches T_core (else oedema); a core voxel is
enhancing when, among the core votes, the share for enhancing reaches T_enhancing (else
necrotic/non-enhancing). Labels: 0 background, 1 necrotic/non-enhancing core, 2 oedema,
3 enhancing. Paper: T = 0.4, 0.3, 0.4.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS = (0.4, 0.3, 0.4)  # tumour, core, enhancing


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.divide(part, whole, out=np.zeros(part.shape, float), where=whole > 0)


def hierarchical_vote(label_maps: Sequence[np.ndarray],
                      thresholds: tuple[float, float, float] = THRESHOLDS) -> np.ndarray:
    """One label map from n label maps of the same shape."""
    if not label_maps:
        raise ValueError("the vote needs at least one label map")
    if any(not 0 < t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must lie in (0, 1], got {thresholds}")
    stacked = np.stack([np.asarray(m) for m in label_maps])
    votes = [np.count_nonzero(stacked == c, axis=0) for c in range(4)]
    tumour_votes = votes[1] + votes[2] + votes[3]
    core_votes = votes[1] + votes[3]
    t_tumour, t_core, t_enhancing = thresholds
    tumour = _share(tumour_votes, np.full(tumour_votes.shape, len(label_maps))) >= t_tumour
    core = tumour & (_share(core_votes, tumour_votes) >= t_core)
    enhancing = core & (_share(votes[3], core_votes) >= t_enhancing)
    labels = np.zeros(stacked.shape[1:], np.uint8)
    labels[tumour] = 2
    labels[core] = 1
    labels[enhancing] = 3
    return labels
