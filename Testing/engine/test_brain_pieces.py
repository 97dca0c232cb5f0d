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



def test_members_and_2d_models_run_prepared_channels_last_equal_to_the_modules():
    from oncoseg.brain.network import Brain2D, Brain3D
    from oncoseg.device import inference_network, to_channels_last

    torch.manual_seed(0)
    member = Brain3D(4, 12, width=8, levels=2, import_at="first", norm="instance").eval()
    image, features = torch.randn(1, 4, 16, 16, 16), torch.randn(1, 12, 16, 16, 16)
    model_2d = Brain2D(4, 8, "unet", levels=2).eval()
    for m in model_2d.modules():  # trained-looking batch norm statistics, not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    slices = torch.randn(3, 4, 32, 32)
    with torch.inference_mode():
        expected_3d, expected_2d = member(image, features), model_2d(slices)
        runner_3d, runner_2d = inference_network(member, 3), inference_network(model_2d, 2)
        got_3d = runner_3d(to_channels_last(image), to_channels_last(features))
        got_2d = runner_2d(to_channels_last(slices))
    assert got_3d.is_contiguous(memory_format=torch.channels_last_3d)
    assert float((got_3d - expected_3d).abs().max()) <= 1e-5 * float(expected_3d.abs().max())
    assert float((got_2d - expected_2d).abs().max()) <= 1e-5 * float(expected_2d.abs().max())
    assert runner_3d is not member and not member.training  # a prepared copy on the CPU
    # the batch norms were folded away in the copy, the caller's module keeps them
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner_2d.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model_2d.modules())
    # a network in training mode is run as it is, its mode untouched
    model_2d.train()
    assert inference_network(model_2d, 2) is model_2d and model_2d.training


def test_weights_made_channels_last_inside_inference_mode_still_train():
    from oncoseg.device import channels_last_weights

    conv = torch.nn.Conv3d(2, 3, 3)
    with torch.inference_mode():
        channels_last_weights(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    conv(torch.randn(1, 2, 5, 5, 5)).sum().backward()  # inference tensors would refuse this
    assert conv.weight.grad is not None

def test_channels_last_weights_converts_2d_and_3d_weights_of_one_network():
    from oncoseg.brain.network import brain_ensemble
    from oncoseg.device import channels_last_weights

    torch.manual_seed(0)
    ensemble = brain_ensemble(width_2d=4, levels_2d=1,
                              members=[{"width": 4, "levels": 1, "import_at": "first"}])
    values = {name: p.detach().clone() for name, p in ensemble.named_parameters()}
    channels_last_weights(ensemble)
    for name, p in ensemble.named_parameters():
        assert torch.equal(p.detach(), values[name]), name
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last), name
        if p.dim() == 5:
            assert p.is_contiguous(memory_format=torch.channels_last_3d), name
    assert any(p.dim() == 4 and not p.is_contiguous() for p in ensemble.parameters())
    assert any(p.dim() == 5 and not p.is_contiguous() for p in ensemble.parameters())


def test_2d_slice_batches_keep_the_widest_map_in_a_heap_block(monkeypatch):
    """On the CPU a 2D model's slices go through in batches whose widest map (6 x the width
    channels at full resolution) fits one of malloc's reusable 32 MiB blocks, at most
    SLICE_BATCH; on a GPU SLICE_BATCH. The batch size never changes the scores."""
    from oncoseg.brain import predict
    from oncoseg.brain.network import Brain2D

    torch.manual_seed(0)
    network = Brain2D(width=8).eval()
    assert predict.slice_batch(network, (240, 240)) == 3  # 48 x 240 x 240 x 4 bytes a slice
    assert predict.slice_batch(network, (96, 80)) == predict.SLICE_BATCH
    assert predict.slice_batch(network, (240, 240), "cuda") == predict.SLICE_BATCH
    assert predict.slice_batch(Brain2D(width=64), (1024, 1024)) == 1  # still progresses
    volume = np.random.default_rng(0).random((4, 7, 20, 18), dtype=np.float32)
    present = np.ones(4, bool)
    scores = predict.scores_2d(network, volume, present, "axial")
    monkeypatch.setattr(predict, "slice_batch", lambda *args, **kwargs: 2)
    assert np.array_equal(predict.scores_2d(network, volume, present, "axial"), scores)
