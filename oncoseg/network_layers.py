"""The layers a prepared network runs on the CPU in place of PyTorch's own (issue 25), each
equal to 1e-5 to the layer it replaces and measured faster there: instance norm on the
channels-last tensor as it lies, 1 x 1 convolutions and kernel-sized transposed convolutions
as matrix products, every other convolution sent to oneDNN (with its ReLU as a post-op where
:mod:`oncoseg.network_fusion` found one). :mod:`oncoseg.network_inference` puts them in."""

from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


# Where the channel means are this close to zero (mean^2 <= SHIFT_RATIO * variance) the variance
# is taken as E[x^2] - mean^2 from one matrix product: its cancellation error stays near 1e-6
# relative (measured: 4e-6 at mean^2 = 2.25 variance); elsewhere the map is centred on the
# float32 mean and measured again (the residual mean is then tiny against the spread).
SHIFT_RATIO = 4.0


# Column sums of a (voxels, C) matrix run as sums of (voxels / k, k C) rows folded afterwards:
# PyTorch's column reduction is slow for narrow rows (16 channels, 131072 voxels: 0.61 ms, as
# rows of 512 values 0.27 ms, two threads), and rows this wide were never slower.
FOLDED_ROW = 512


def _column_mean(rows: Tensor) -> Tensor:
    """(B, 1, C) mean of (B, N, C) rows, summed as (B, N / k, k C) rows where k = 512 / C
    divides N."""
    batch, count, channels = rows.shape
    k = FOLDED_ROW // channels if FOLDED_ROW % channels == 0 else 1
    if k <= 1 or count % k:
        return rows.mean(1, keepdim=True)
    partial = rows.reshape(batch, count // k, k * channels).sum(1)
    return partial.reshape(batch, k, channels).sum(1, keepdim=True) / count


# Rows of the (voxels, C) matrix per thread below which its Gram product is made whole: one
# product per thread is faster from 16384 rows on (16 channels, 131072 rows: 0.75 -> 0.49 ms;
# 32 channels, 16384 rows: 0.23 -> 0.18 ms, two threads), no faster at 2048 and slower for
# 128 channels on 256 rows (0.059 -> 0.070 ms); on one thread it is made whole.
GRAM_ROWS_PER_THREAD = 4096


def _square_sums(rows: Tensor) -> Tensor:
    """(B, 1, C) column sums of squares of (B, N, C) rows: a Gram product's diagonal, in one
    product per thread (a batched product is split over threads by its batch; one product of
    16 columns and 131072 rows is not)."""
    batch, count, channels = rows.shape
    parts = torch.get_num_threads()
    if parts < 2 or count % parts or count // parts < GRAM_ROWS_PER_THREAD:
        parts = 1
    chunks = rows.reshape(batch * parts, count // parts, channels)
    square = torch.bmm(chunks.transpose(1, 2), chunks).diagonal(dim1=1, dim2=2)
    return square.reshape(batch, parts, channels).sum(1, keepdim=True)


def _var_mean(x: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Per-sample, per-channel (biased) variance and mean over the spatial axes, shaped
    (B, C, 1, ...), and whether some mean is far from zero (the norm then centres and measures
    again). On a channels-last tensor the voxels are rows of a (B, voxels, C) matrix: a column
    mean and a Gram matrix's diagonal cost 11 ms where ``var_mean``'s strided reduction costs
    63 ms (32 channels, 64^3, one thread)."""
    keep = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    rows = x.permute(0, *range(2, x.dim()), 1)
    if not rows.is_contiguous() or x.dtype != torch.float32:
        var, mean = torch.var_mean(x, dim=tuple(range(2, x.dim())), keepdim=True,
                                   correction=0)
    else:
        rows = rows.reshape(x.shape[0], -1, x.shape[1])
        mean = _column_mean(rows)  # (B, 1, C)
        var = (_square_sums(rows) / rows.shape[1] - mean * mean).reshape(keep)
        mean = mean.reshape(keep)
    # far: the affine step x * scale - mean * scale would cancel too (whatever gave var)
    return var, mean, bool((mean * mean > SHIFT_RATIO * var).any())


class ChannelsLastInstanceNorm(nn.Module):
    """Instance norm (no running statistics) computed where the tensor lies, without the
    memory-format round trip of ``F.instance_norm`` on a channels-last input. With
    ``inplace`` (set where the input is a convolution's fresh output, which nothing else
    reads) the result overwrites the input: one pass over the map fewer to allocate and fault
    in (0.38 ms against 0.56 ms for the affine step and LeakyReLU on 16 x 32 x 64 x 64, two
    threads)."""

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.eps = float(norm.eps)
        self.inplace = False
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().clone(),
                                                                     requires_grad=False)
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().clone(),
                                                               requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        channel = (1, -1) + (1,) * (x.dim() - 2)
        var, mean, far = _var_mean(x)
        owned = self.inplace and not x.requires_grad
        if far:  # E[x^2] - mean^2 would cancel: centred, the second measure is exact enough
            x = x.sub_(mean) if owned else x - mean
            owned = not x.requires_grad
            var, mean, _ = _var_mean(x)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.view(channel)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.view(channel)
        # keeps x's memory format
        return torch.addcmul(shift, x, scale, out=x) if owned else torch.addcmul(shift, x, scale)


def channels_last_format(tensor: Tensor) -> torch.memory_format:
    """The channels-last memory format of a 4D (2D images) or 5D (3D volumes) tensor; any other
    keeps its layout."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.dim(),
                                                                     torch.contiguous_format)


def channels_last_view(x: Tensor) -> Tensor:
    """``x`` (B, C, *spatial) as (B, *spatial, C): a view when ``x`` is channels-last."""
    return x.permute(0, *range(2, x.dim()), 1)


class PointwiseConv(nn.Module):
    """A 1 x 1 (x 1) convolution as one matrix product over the channels-last voxels: PyTorch
    sends such a convolution to its slow path on one thread and converts it out of
    channels-last."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).t().contiguous(),
                                   requires_grad=False)  # (in, out)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(),
                                                               requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = channels_last_view(x)
        spatial = rows.shape[:-1]
        rows = rows.reshape(-1, rows.shape[-1])  # a view for a channels-last input
        out = (rows @ self.weight if self.bias is None
               else torch.addmm(self.bias, rows, self.weight))
        out = out.view(*spatial, -1)
        return out.permute(0, out.dim() - 1, *range(1, out.dim() - 1))  # channels-last strides


class DirectConv(nn.Module):
    """A 2D/3D convolution sent to oneDNN whatever the batch size: for one window PyTorch
    takes its slow path when ``batch * channels * depth * height`` is small (the first layer
    of a one-channel input, the deep layers of a U-Net), 2.5x slower there (measured on the
    dev CPU) and out of channels-last, so the next layer converts it back.

    ``activation`` (a ReLU that followed the convolution: :mod:`oncoseg.network_fusion`) is
    applied by oneDNN as the convolution writes its output (a post-op), instead of in a second
    pass that reads and writes the map again: 7.18 -> 6.60 ms for 48 -> 16 channels on 16 x 96
    x 96, 44.8 -> 43.1 ms on 70^3 (two threads), the same values bit for bit."""

    def __init__(self, conv: nn.Module, activation: nn.ReLU | None = None):
        super().__init__()
        self.conv = conv  # its weights; and it runs inputs oneDNN does not take (device, type)
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = int(conv.groups)
        self.activation = activation  # run after self.conv where oneDNN is not used

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            out = self.conv(x)
            return out if self.activation is None else self.activation(out)
        if self.activation is None:
            return torch.ops.aten.mkldnn_convolution(x, self.conv.weight, self.conv.bias,
                                                     self.padding, self.stride,
                                                     self.dilation, self.groups)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.conv.weight, self.conv.bias, self.padding, self.stride, self.dilation,
            self.groups, "relu", [], "")


class PatchTransposedConv(nn.Module):
    """A transposed convolution whose stride equals its kernel (no padding): every input voxel
    writes its own kernel-sized block, so it is one matrix product over the channels-last
    voxels and one reshuffle into a channels-last output (PyTorch runs it on its slow path and
    returns it in the default memory format)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.kernel = tuple(conv.kernel_size)
        dims = len(self.kernel)
        weight = conv.weight.detach()  # (in, out, *kernel)
        self.out_channels = int(weight.shape[1])
        self.weight = nn.Parameter(weight.permute(0, *range(2, 2 + dims), 1).reshape(
            weight.shape[0], -1).contiguous(), requires_grad=False)  # (in, kernel..., out)
        self.bias = None if conv.bias is None else nn.Parameter(
            conv.bias.detach().repeat(math.prod(self.kernel)), requires_grad=False)

    BLOCK_BYTES = 8 << 20  # products held at a time

    def forward(self, x: Tensor) -> Tensor:
        rows = channels_last_view(x)  # (B, *spatial, in)
        spatial = rows.shape[1:-1]
        dims = len(self.kernel)
        size = [s * k for s, k in zip(spatial, self.kernel, strict=True)]
        out = torch.empty((x.shape[0], self.out_channels, *size), dtype=x.dtype,
                          device=x.device,
                          memory_format=torch.channels_last if dims == 2
                          else torch.channels_last_3d)
        # (B, s1, k1, s2, k2, ..., out): each spatial axis followed by its kernel axis
        target = channels_last_view(out).view(
            x.shape[0], *[a for s, k in zip(spatial, self.kernel, strict=True)
                          for a in (s, k)], self.out_channels)
        order = [0, *[a for i in range(dims) for a in (1 + i, 1 + dims + i)], 1 + 2 * dims]
        # the products are made a few input rows at a time: a block the size of the output
        # would double this layer's memory
        per_row = x.shape[0] * math.prod(spatial[1:]) * self.weight.shape[1] * x.element_size()
        step = max(1, self.BLOCK_BYTES // max(per_row, 1))
        for first in range(0, spatial[0], step):
            part = rows[:, first:first + step]
            flat = part.reshape(-1, part.shape[-1])
            blocks = (flat @ self.weight if self.bias is None
                      else torch.addmm(self.bias, flat, self.weight))
            blocks = blocks.view(part.shape[0], *part.shape[1:-1], *self.kernel,
                                 self.out_channels)
            target[:, first:first + step].copy_(blocks.permute(order))
        return out
