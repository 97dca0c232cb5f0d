"""Paper 004's training algorithm and hierarchical vote, on hand-made cases."""

import numpy as np
import pytest
import torch

from oncoseg.brain.optimizer import LossPlateauHalving, NormalisedSGD
from oncoseg.brain.voting import hierarchical_vote


def test_a_step_moves_by_the_learning_rate_whatever_the_gradient_size():
    for scale in (1e-6, 1.0, 1e6):
        a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        optimizer = NormalisedSGD([a, b], lr=0.25, momentum=0.0)
        a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]) * scale, torch.tensor([0.0, 4.0]) * scale
        optimizer.step()
        # one norm over all parameters together: the update is -lr * g / ||g||
        assert torch.allclose(a.detach(), torch.tensor([-0.15, 0.0, 0.0]))
        assert torch.allclose(b.detach(), torch.tensor([0.0, -0.2]))


def test_momentum_accumulates_normalised_steps():
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = NormalisedSGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = torch.tensor([5.0])
        optimizer.step()
    # v1 = -0.1, v2 = 0.9 * -0.1 - 0.1; p = v1 + v2
    assert float(p.detach()) == pytest.approx(-0.1 + (-0.19))


def test_n_batches_per_iteration_are_one_summed_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(20, 3), torch.randn(20)
    w1, w2 = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    o1, o2 = NormalisedSGD([w1], lr=0.1), NormalisedSGD([w2], lr=0.1)
    for batch in torch.split(torch.arange(20), 5):  # accumulated over 4 batches
        ((x[batch] @ w1 - y[batch]) ** 2).sum().backward()
    o1.step()
    ((x @ w2 - y) ** 2).sum().backward()
    o2.step()
    assert torch.allclose(w1, w2)


def test_it_minimises_a_quadratic():
    p = torch.nn.Parameter(torch.tensor([4.0, -3.0]))
    optimizer = NormalisedSGD([p], lr=0.25, momentum=0.9)
    schedule = LossPlateauHalving(optimizer, lr_min=1e-4, period=50, d_loss=0.98)
    for _ in range(1500):
        optimizer.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        optimizer.step()
        schedule.step(loss)
    assert float((p.detach() ** 2).sum()) < 1e-3
    assert schedule.lr < 0.25


def test_the_learning_rate_halves_on_a_plateau_down_to_its_minimum_and_f_doubles():
    optimizer = NormalisedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)
    schedule = LossPlateauHalving(optimizer, lr_min=0.1, period=4, d_loss=0.98)
    for loss in (4.0, 4.0, 3.0, 3.0):  # fell by 25 %: keep
        schedule.step(loss)
    assert schedule.lr == 0.25 and schedule.period == 4
    for loss in (3.0, 3.0, 3.0, 3.0):  # flat: halve
        schedule.step(loss)
    assert schedule.lr == 0.125 and schedule.period == 4
    for loss in (3.0, 3.0, 3.0, 3.0):  # flat again, twice in a row: halve (floor) and double F
        schedule.step(loss)
    assert schedule.lr == 0.1 and schedule.period == 8
    state = schedule.state_dict()
    restored = LossPlateauHalving(optimizer, lr_min=0.1, period=4)
    restored.load_state_dict(state)
    assert restored.period == 8


def test_hierarchical_vote_on_hand_made_votes():
    # five models; columns are voxels
    maps = np.array([
        [0, 2, 2, 1, 3, 0, 1],
        [0, 2, 1, 1, 3, 0, 0],
        [0, 0, 2, 3, 1, 0, 0],
        [0, 0, 2, 3, 1, 2, 0],
        [0, 0, 2, 0, 0, 1, 0],
    ])
    labels = hierarchical_vote(list(maps))
    # voxel 0: no tumour votes; 1: 2/5 tumour (>= 0.4), all oedema; 2: 5/5 tumour, core 1/5 <
    # 0.3 -> oedema; 3: 4/4 core, enhancing 2/4 >= 0.4 -> enhancing; 4: 4/4 core, enhancing
    # 2/4 -> enhancing; 5: 2/5 tumour, core 1/2 -> core, enhancing 0 -> necrotic; 6: 1/5 < 0.4
    assert labels.tolist() == [0, 2, 2, 3, 3, 1, 0]
    # thresholds move the decisions: a stricter tumour threshold drops voxels 1 and 5
    strict = hierarchical_vote(list(maps), (0.6, 0.3, 0.4))
    assert strict.tolist() == [0, 0, 2, 3, 3, 0, 0]


def test_one_model_votes_for_itself():
    labels = np.random.default_rng(0).integers(0, 4, (4, 5, 6))
    assert np.array_equal(hierarchical_vote([labels]), labels)
    with pytest.raises(ValueError):
        hierarchical_vote([])


def test_vote_of_the_papers_six_members_at_its_thresholds():
    """Section 2.3 with n = 6 and T = (0.4, 0.3, 0.4): each column sits at or next to a
    threshold, so a '>' for '>=' or a share taken over the wrong votes changes its label."""
    # rows: A1, B1, C1, A2, B2, C2; columns are voxels
    maps = np.array([
        [2, 2, 2, 1, 1, 3, 3, 2],
        [2, 2, 2, 2, 1, 3, 3, 2],
        [2, 0, 2, 2, 3, 1, 1, 2],
        [0, 0, 1, 2, 3, 1, 1, 1],
        [0, 0, 0, 2, 2, 1, 1, 3],
        [0, 0, 0, 2, 0, 1, 0, 0],
    ])
    labels = hierarchical_vote(list(maps), (0.4, 0.3, 0.4))
    # 0: tumour 3/6 = 0.5, core 0/3 -> oedema; 1: tumour 2/6 = 0.33 < 0.4 -> background;
    # 2: tumour 4/6, core 1/4 = 0.25 < 0.3 -> oedema; 3: 6/6, core 1/6 < 0.3 -> oedema;
    # 4: 5/6, core 4/5, enhancing 2/4 = 0.5 -> enhancing; 5: 6/6, core 6/6, enhancing 2/6 =
    # 0.33 < 0.4 -> necrotic; 6: 5/6, core 5/5, enhancing 2/5 = 0.4 -> enhancing;
    # 7: 5/6, core 2/5 = 0.4 >= 0.3, enhancing 1/2 -> enhancing
    assert labels.tolist() == [2, 0, 2, 2, 3, 1, 3, 3]
    # the default of the settings and of the vote are the paper's
    from oncoseg.brain.config import BrainConfig
    from oncoseg.brain.voting import THRESHOLDS

    assert tuple(BrainConfig().vote_thresholds) == THRESHOLDS == (0.4, 0.3, 0.4)
    assert hierarchical_vote(list(maps)).tolist() == labels.tolist()
