"""The storage tests' network memory (Testing/helpers/network_memo.py) answers only what the
network would answer anyway: the same weights on the same input bytes."""

import torch
from network_memo import remembered_networks


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU()).eval()


def test_same_weights_and_bytes_are_answered_anything_else_runs():
    x = torch.randn(1, 2, 8, 8)
    with torch.inference_mode(), remembered_networks() as memo:
        first = _net(0)(x)
        again = _net(0)(x.clone())  # another object with the same weights, the same bytes
        assert (memo.misses, memo.hits) == (1, 1) and torch.equal(first, again)
        again.add_(1.0)  # a caller writing into its answer changes nothing remembered
        assert torch.equal(_net(0)(x), first) and memo.hits == 2
        nudged = x.clone()
        nudged.view(-1)[0] = torch.nextafter(nudged.view(-1)[0], torch.tensor(1e9))
        _net(0)(nudged)  # one bit of the input
        _net(1)(x)  # other weights
        _net(0)(x.contiguous(memory_format=torch.channels_last))  # another layout
        assert (memo.misses, memo.hits) == (4, 2)
    net = _net(0).train()
    original = torch.nn.Module.__call__
    with remembered_networks() as memo:
        net(x)
        net(x)  # training mode, gradients on: never answered from memory
        assert (memo.misses, memo.hits) == (0, 0)
    assert torch.nn.Module.__call__ is original  # put back when the block ends
