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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def beside_upsampled(skip: Tensor, x: Tensor) -> Tensor:
    """``torch.cat([skip, x upsampled linearly to skip's size], 1)`` (``align_corners``
    False), as the decoder of a U-Net joins its levels."""
    if _fused(skip, x):
        return _fused_beside(skip, x)
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    upsampled = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
    return torch.cat([skip, upsampled], dim=1)


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


def _fused_beside(skip: Tensor, x: Tensor) -> Tensor:
    channels = skip.shape[1]
    out = torch.empty((x.shape[0], channels + x.shape[1], *skip.shape[2:]), dtype=x.dtype,
                      memory_format=torch.channels_last_3d)
    out[:, :channels].copy_(skip)
    doubled = x
    axes = (4, 3, 2)  # x, then y, then z (measured the faster order)
    for axis in axes:
        if axis == axes[-1]:
            target = out[:, channels:]
        else:
            shape = list(doubled.shape)
            shape[axis] *= 2
            target = torch.empty(shape, dtype=x.dtype, memory_format=torch.channels_last_3d)
        doubled = _doubled_along(doubled, axis, target)
    return out


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
