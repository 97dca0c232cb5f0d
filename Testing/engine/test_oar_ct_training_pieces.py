"""OAR CT: the partial-label loss of paper 003 and the 3D network's shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oncoseg.oar.ct.network import OarUNet3D
from oncoseg.oar.losses import partial_label_nll

BLADDER = 3


def reference_nll(logits, target, annotated):
    """Straightforward, voxel by voxel: sum the probabilities the case cannot tell apart."""
    p = torch.softmax(logits.double(), 1)
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        missing = [c for c in range(1, logits.shape[1]) if not annotated[b, c]]
        for index in np.ndindex(*target.shape[1:]):
            label = int(target[(b, *index)])
            probs = p[(b, slice(None), *index)]
            value = probs[0] + sum(probs[c] for c in missing) if label == 0 else probs[label]
            total -= float(torch.log(value))
            count += 1
    return total / count


def test_matches_a_voxel_by_voxel_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 3, 4, 5)
    target = torch.randint(0, 6, (2, 3, 4, 5))
    annotated = torch.tensor([[True] * 6, [True, True, True, False, True, False]])
    target[1][target[1] == 3] = 0  # an unannotated organ never appears in its case's labels
    target[1][target[1] == 5] = 0
    assert float(partial_label_nll(logits, target, annotated)) == pytest.approx(
        reference_nll(logits, target, annotated), rel=1e-5)


def test_all_annotated_is_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 4, 4, 4)
    target = torch.randint(0, 6, (2, 4, 4, 4))
    annotated = torch.ones(2, 6, dtype=torch.bool)
    assert float(partial_label_nll(logits, target, annotated)) == pytest.approx(
        float(F.cross_entropy(logits, target)), rel=1e-6)


def test_bladder_predictions_cost_nothing_where_the_bladder_was_not_contoured():
    torch.manual_seed(2)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, :2] = 1  # a femoral head, annotated; the rest background
    without_bladder = torch.tensor([[True, True, True, False, True, True]])
    with_bladder = torch.ones(1, 6, dtype=torch.bool)
    logits = torch.randn(1, 6, 4, 4, 4)
    says_bladder = logits.clone()
    says_bladder[:, BLADDER] += 8.0  # the network calls the background voxels bladder
    background = target == 0
    says_bladder[:, BLADDER][~background] = logits[:, BLADDER][~background]
    base = float(partial_label_nll(logits, target, without_bladder))
    moved = float(partial_label_nll(says_bladder, target, without_bladder))
    # moving probability mass from background to bladder leaves the merged term unchanged
    # (up to the other organs' share, which shrinks): the loss does not rise
    assert moved <= base + 1e-6
    # where the bladder was contoured, the same predictions are punished
    assert float(partial_label_nll(says_bladder, target, with_bladder)) > base + 1.0
    # and the gradient towards "bladder" on background voxels is zero or pushes towards it
    says_bladder.requires_grad_(True)
    partial_label_nll(says_bladder, target, without_bladder).backward()
    assert float(says_bladder.grad[:, BLADDER][background.expand_as(
        says_bladder.grad[:, BLADDER])].max()) <= 0.0


@pytest.mark.parametrize(("size", "pools"), [((16, 32, 32), ((2, 2, 2),) * 3),
                                              ((8, 32, 32), ((1, 2, 2), (2, 2, 2), (2, 2, 2)))])
def test_network_output_shape_and_divisor(size, pools):
    network = OarUNet3D(filters=(4, 8, 16, 32), pools=pools)
    out = network(torch.zeros(1, 1, *size))
    assert out.shape == (1, 6, *size)
    assert all(s % d == 0 for s, d in zip(size, network.divisor, strict=True))


def test_post_processing_applies_to_the_organs_named():
    from oncoseg.errors import InputError
    from oncoseg.oar.ct.predict import clean_organs

    labels = np.zeros((4, 10, 20), np.uint8)
    labels[1:3, 2:5, 1:4] = 5  # nodal CTV, right side
    labels[1:3, 2:5, 15:18] = 5  # nodal CTV, left side (same size: one survives)
    labels[1:3, 6:9, 8:12] = 3  # bladder
    labels[2, 9, 0] = 3  # a stray bladder voxel
    everything = clean_organs(labels, ["Bladder", "Nodal CTV"])
    assert (everything == 5).sum() == 18 and (everything == 3).sum() == 24
    ctv_kept = clean_organs(labels, ["Bladder"])
    assert (ctv_kept == 5).sum() == 36 and (ctv_kept == 3).sum() == 24
    with pytest.raises(InputError, match="'Spleen' is not an organ"):
        clean_organs(labels, ["Spleen"])
