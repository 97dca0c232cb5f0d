"""The decoder's one-buffer "upsample by two beside the skip" gives PyTorch's own values."""

import pytest
import torch
import torch.nn.functional as F

from oncoseg.upsampling import _fused, beside_upsampled, reused_concatenations, upsampled_to

CL3 = torch.channels_last_3d


def _plain(skip, x):
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return torch.cat([skip, F.interpolate(x, size=skip.shape[2:], mode=mode,
                                          align_corners=False)], 1)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3, 4), (1, 3, 1, 6, 2), (1, 8, 2, 1, 1)])
def test_one_buffer_path_equals_interpolate_and_cat(shape):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=CL3)
    skip = torch.randn(shape[0], 4, *[2 * n for n in shape[2:]]).contiguous(memory_format=CL3)
    with torch.inference_mode():
        assert _fused(skip, x)
        joined = beside_upsampled(skip, x)
    assert joined.is_contiguous(memory_format=CL3)  # as torch.cat of channels-last maps
    torch.testing.assert_close(joined, _plain(skip, x), rtol=0, atol=2e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_the_upsampled_part_alone_is_the_joins_second_half(dims):
    """``upsampled_to`` (what a prepared decoder convolves beside the skip) gives the values
    ``beside_upsampled`` puts after the skip, on the one-buffer path (3D) and PyTorch's (2D)."""
    torch.manual_seed(1)
    layout = CL3 if dims == 3 else torch.channels_last
    x = torch.randn(2, 5, *(3, 4, 6)[-dims:]).contiguous(memory_format=layout)
    skip = torch.randn(2, 4, *[2 * n for n in x.shape[2:]]).contiguous(memory_format=layout)
    with torch.inference_mode(), reused_concatenations():
        alone = upsampled_to(skip, x)
        joined = beside_upsampled(skip, x)
    assert alone.is_contiguous(memory_format=layout)
    torch.testing.assert_close(alone, joined[:, 4:], rtol=0, atol=0)


def test_other_maps_take_pytorchs_path():
    x3 = torch.randn(1, 3, 5, 5, 5).contiguous(memory_format=CL3)
    odd = torch.randn(1, 2, 11, 10, 10).contiguous(memory_format=CL3)  # not doubled along z
    assert not _fused(odd, x3)
    assert not _fused(torch.randn(1, 2, 10, 10, 10), x3)  # skip not channels-last
    x2, skip2 = torch.randn(2, 3, 4, 4), torch.randn(2, 2, 8, 8)
    assert not _fused(skip2, x2)  # 2D: measured no faster
    torch.testing.assert_close(beside_upsampled(odd, x3), _plain(odd, x3), rtol=0, atol=0)
    # training: autograd goes through PyTorch's operations
    x = torch.randn(1, 3, 4, 4, 4).contiguous(memory_format=CL3).requires_grad_()
    skip = torch.randn(1, 2, 8, 8, 8).contiguous(memory_format=CL3)
    assert not _fused(skip, x)
    beside_upsampled(skip, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_buffer_is_reused_only_when_nothing_refers_to_it():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 4, 5, 6).contiguous(memory_format=CL3)
    skip = torch.randn(1, 2, 8, 10, 12).contiguous(memory_format=CL3)
    other = torch.randn(1, 3, 4, 5, 6).contiguous(memory_format=CL3)
    with torch.inference_mode(), reused_concatenations():
        first = beside_upsampled(skip, x)
        address = first.data_ptr()
        del first
        second = beside_upsampled(skip, other)  # nothing refers to the first: its buffer
        assert second.data_ptr() == address
        torch.testing.assert_close(second, _plain(skip, other), rtol=0, atol=2e-6)
        kept = second[:, 2:]  # a view of it lives on: the next one gets a buffer of its own
        before = kept.clone()
        del second
        third = beside_upsampled(skip, x)
        assert third.data_ptr() != address
        torch.testing.assert_close(kept, before, rtol=0, atol=0)  # not written over
        held = third  # the result itself, under another name
        del third
        fourth = beside_upsampled(skip, other)
        assert fourth.data_ptr() != held.data_ptr()
        torch.testing.assert_close(held, _plain(skip, x), rtol=0, atol=2e-6)
        last = fourth.data_ptr()
        del fourth
        assert beside_upsampled(skip, x).data_ptr() == last
