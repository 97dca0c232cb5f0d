"""A U-Net decoder's "upsample, then concatenate with the skip", written in one buffer.

``torch.cat([skip, F.interpolate(x, scale 2, trilinear)], 1)`` writes the upsampled map twice:
once as the interpolation's own output and once more into the concatenation. On the brain's
2D-3D members that pair took 17 % of the network stage (a 66 MB map per decoder level;
``bench_network_peak.py``, issue 25). Linear upsampling by exactly two (``align_corners``
False) has fixed weights: along each axis, output ``2i`` is ``0.75 x[i] + 0.25 x[i-1]`` and
``2i+1`` is ``0.75 x[i] + 0.25 x[i+1]``, clamped at the ends (PyTorch's rule). Done one axis
at a time (one ``lerp`` per parity), the last axis writes straight into the concatenation's
channels: 30 ms against 52 ms for 32 channels from 35^3 to 70^3 (two threads, channels-last),
equal to 5e-7. Measured on 2D maps (bilinear) it gained nothing, so 2D maps, training (autograd),
other devices and other sizes take PyTorch's own path.

Inside :func:`reused_concatenations`, a concatenation whose earlier buffer of the same shape is
no longer used is written into that buffer again instead of a fresh one. A 66 MB map lies
above glibc malloc's 32 MB mmap ceiling, so a fresh one is mapped anew and each of its 16,000
pages faulted in and zeroed by the kernel (the brain members' stage took 128,000 page faults
per run); reused, it is faulted in once per stage. The brain members' stage with and without
the reuse: 1.83-1.93 s against 1.90-2.11 s (five alternating runs, dev-cpu-2; docs/RESULTS.md).
A process-wide malloc setting would do the same for every buffer, but in Slicer inference runs
inside Slicer's own process, where it would keep freed memory from the system; the scope here
frees its buffers when it ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
_reuse = threading.local()
# how many holders a storage has (private to PyTorch, present since 1.x): without it nothing is
# reused
_storage_holders = getattr(torch._C, "_storage_Use_Count", None)


@contextlib.contextmanager
def reused_concatenations() -> Iterator[None]:
    """Within the block, this thread's fused concatenations reuse the buffer of the last one of
    the same shape once nothing refers to it any more (module docstring); the buffers are let
    go when the block ends."""
    previous = getattr(_reuse, "pool", None)
    _reuse.pool = {}
    try:
        yield
    finally:
        _reuse.pool = previous


def _concatenation_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised channels-last buffer: the pool's, when it is free. The pool keeps the
    buffer itself and hands out an alias of it (``buffer[...]``), so while that alias or any
    view of it lives, the storage has a second holder besides the pool's tensor (and the
    temporary storage object the count is read through)."""
    pool = getattr(_reuse, "pool", None)
    if pool is None or _storage_holders is None:
        return torch.empty(shape, dtype=dtype, memory_format=torch.channels_last_3d)
    key = (shape, dtype)
    kept = pool.get(key)
    if kept is None or _storage_holders(kept.untyped_storage()._cdata) > 2:
        kept = torch.empty(shape, dtype=dtype, memory_format=torch.channels_last_3d)
        pool[key] = kept
    return kept[...]


def beside_upsampled(skip: Tensor, x: Tensor) -> Tensor:
    """``torch.cat([skip, x upsampled linearly to skip's size], 1)`` (``align_corners``
    False), as the decoder of a U-Net joins its levels."""
    if _fused(skip, x):
        return _fused_beside(skip, x)
    return torch.cat([skip, _interpolated(skip, x)], dim=1)


def _fused(skip: Tensor, x: Tensor) -> bool:
    """Where the one-buffer path was measured faster and gives PyTorch's values: 3D maps on
    the CPU in channels-last float32, doubled along every axis, nothing to differentiate."""
    return (x.dim() == 5 and skip.dim() == 5 and x.device.type == "cpu"
            and x.dtype == skip.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or skip.requires_grad))
            and x.is_contiguous(memory_format=torch.channels_last_3d)
            and skip.is_contiguous(memory_format=torch.channels_last_3d)
            and skip.shape[0] == x.shape[0]
            and all(s == 2 * n for s, n in zip(skip.shape[2:], x.shape[2:], strict=True)))


def upsampled_to(skip: Tensor, x: Tensor) -> Tensor:
    """``x`` upsampled linearly to ``skip``'s size, the second part of
    ``beside_upsampled(skip, x)`` with the same values, unjoined (a prepared decoder convolves
    the two parts apart: ``network_fusion.ConcatenatedConv``); on the one-buffer path into a
    buffer reused as the joins' are."""
    if not _fused(skip, x):
        return _interpolated(skip, x)
    out = _concatenation_buffer((x.shape[0], x.shape[1], *skip.shape[2:]), x.dtype)
    _doubled_into(x, out)
    return out


def _interpolated(skip: Tensor, x: Tensor) -> Tensor:
    """PyTorch's path: ``x`` interpolated linearly to ``skip``'s size."""
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)


def _fused_beside(skip: Tensor, x: Tensor) -> Tensor:
    channels = skip.shape[1]
    out = _concatenation_buffer((x.shape[0], channels + x.shape[1], *skip.shape[2:]), x.dtype)
    out[:, :channels].copy_(skip)
    _doubled_into(x, out[:, channels:])
    return out


def _doubled_into(x: Tensor, target: Tensor) -> None:
    """``x`` upsampled by two along its three spatial axes into ``target``."""
    doubled = x
    axes = (4, 3, 2)  # x, then y, then z (measured the faster order)
    for axis in axes:
        if axis == axes[-1]:
            step = target
        else:
            shape = list(doubled.shape)
            shape[axis] *= 2
            step = torch.empty(shape, dtype=x.dtype, memory_format=torch.channels_last_3d)
        doubled = _doubled_along(doubled, axis, step)


def _doubled_along(a: Tensor, axis: int, out: Tensor) -> Tensor:
    """``a`` linearly upsampled by two along ``axis`` into ``out``."""
    count = a.shape[axis]
    pairs = out.unflatten(axis, (count, 2))
    even, odd = pairs.select(axis + 1, 0), pairs.select(axis + 1, 1)
    first, last = a.narrow(axis, 0, 1), a.narrow(axis, count - 1, 1)
    even.narrow(axis, 0, 1).copy_(first)
    odd.narrow(axis, count - 1, 1).copy_(last)
    if count > 1:
        lower, upper = a.narrow(axis, 0, count - 1), a.narrow(axis, 1, count - 1)
        torch.lerp(upper, lower, 0.25, out=even.narrow(axis, 1, count - 1))
        torch.lerp(lower, upper, 0.25, out=odd.narrow(axis, 0, count - 1))
    return out
