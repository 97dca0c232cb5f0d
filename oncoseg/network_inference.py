"""A network made ready for inference on the CPU, equal to 1e-5 to the module it came from.

Measured on the CPU (Testing/benchmarks/bench_sliding_window.py, issue 25): a channels-last
convolution is fast, but ``InstanceNorm`` is not. PyTorch's instance norm reshapes a
channels-last input into a batch norm over ``(1, B * C, ...)``, which copies the whole
activation into the default memory format and back (``aten::copy_``: 29 % of a MONAI BasicUNet's
forward pass, the norm itself 13 %, on a 96^3 window). Here the norm is computed on the
channels-last tensor as it lies (a column mean, a Gram product's diagonal and one fused
multiply-add). Batch norm in eval is folded into the convolution before it, instance norms and
activations that follow a layer with a fresh output run in place, and with ``trace`` the
result is traced and frozen per input shape (``torch.jit.freeze`` folds what is left and lets
oneDNN fuse), checked against the eager network on the first batch of that shape, and dropped
when it differs or fails.

The caller's module is never changed: everything works on a deep copy, so the module can still
be trained, moved to a GPU or saved afterwards. The copy is made once per module and state and
kept while the module lives (one more copy of the weights in memory), because oar-mr, staging
and the brain's networks were copied and rewritten on every call of their prediction code
(issue 25). A later call gets the same copy while the module's structure, simple attributes,
hooks, and every parameter and buffer (storage, version counter and values) are unchanged; a
module that was trained, loaded or edited since is prepared afresh.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
import torch.fx
from torch import nn

log = logging.getLogger(__name__)
Tensor = torch.Tensor

# Layers whose output is a fresh tensor nobody else holds: an activation right after one of them
# in an nn.Sequential may overwrite it.
_FRESH_OUTPUT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, nn.Linear, nn.modules.batchnorm._BatchNorm,
                 nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.Hardtanh,
                nn.SiLU, nn.Mish, nn.Hardswish)
MAX_TRACED_SHAPES = 4  # windows are one shape; the last batch of a run may be a second one


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


def _channels_last_view(x: Tensor) -> Tensor:
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
        rows = _channels_last_view(x)
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
    dev CPU) and out of channels-last, so the next layer converts it back."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv  # its weights; and it runs inputs oneDNN does not take (device, type)
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = int(conv.groups)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return self.conv(x)
        return torch.ops.aten.mkldnn_convolution(x, self.conv.weight, self.conv.bias,
                                                 self.padding, self.stride, self.dilation,
                                                 self.groups)


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
        rows = _channels_last_view(x)  # (B, *spatial, in)
        spatial = rows.shape[1:-1]
        dims = len(self.kernel)
        size = [s * k for s, k in zip(spatial, self.kernel, strict=True)]
        out = torch.empty((x.shape[0], self.out_channels, *size), dtype=x.dtype,
                          device=x.device,
                          memory_format=torch.channels_last if dims == 2
                          else torch.channels_last_3d)
        # (B, s1, k1, s2, k2, ..., out): each spatial axis followed by its kernel axis
        target = _channels_last_view(out).view(
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


class PreparedNetwork:
    """What :func:`prepare_for_inference` returns: call it like the module (under
    ``torch.inference_mode``); ``notes`` says what could not be prepared and why."""

    def __init__(self, eager: nn.Module, trace: bool, notes: list[str]):
        # the rewritten copy (or the caller's module, when nothing could be done); no reference
        # to the caller's module is kept otherwise, so the cache does not keep it alive
        self.eager = eager
        self.trace = trace
        self.notes = notes
        self.traced: dict[tuple, torch.jit.ScriptModule | None] = {}

    def __call__(self, *inputs: Tensor) -> Tensor:
        if not self.trace:
            return self.eager(*inputs)
        key = tuple((tuple(x.shape), x.dtype, x.device, x.is_contiguous()) for x in inputs)
        if key not in self.traced:
            if len(self.traced) >= MAX_TRACED_SHAPES:
                return self.eager(*inputs)
            self.traced[key], expected = self._trace(inputs)
            return expected
        traced = self.traced[key]
        return self.eager(*inputs) if traced is None else traced(*inputs)

    def _trace(self, inputs: tuple[Tensor, ...]) -> tuple[torch.jit.ScriptModule | None, Tensor]:
        """The frozen trace for these input shapes and the eager result for ``inputs`` (the
        first call of a shape is answered by the eager network, which the trace is checked
        against)."""
        with torch.inference_mode():
            expected = self.eager(*inputs)
        try:
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", torch.jit.TracerWarning)
                traced = torch.jit.freeze(torch.jit.trace(
                    self.eager, tuple(x.clone() for x in inputs), check_trace=False))
            doubts = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
            if doubts:  # a value read in Python: the trace may hold only this input's branch
                raise RuntimeError(str(doubts[0].message).splitlines()[0])
            with torch.inference_mode():
                got = traced(*inputs)
        except Exception as error:  # any failure: run the module as it is
            self._note(f"network not traced ({type(error).__name__}: {error}); running it "
                       "as a module")
            return None, expected
        if not (isinstance(got, Tensor) and isinstance(expected, Tensor)
                and got.shape == expected.shape
                and torch.allclose(got, expected, rtol=0, atol=1e-5)):
            self._note(f"traced network differs from the module on inputs "
                       f"{[tuple(x.shape) for x in inputs]} "
                       "(data-dependent control flow?); running it as a module")
            return None, expected
        return traced, expected

    def _note(self, text: str) -> None:
        log.info(text)
        self.notes.append(text)


def prepare_for_inference(module: nn.Module, window_shape: Sequence[int] | None = None,
                          channels_last: bool = True, trace: bool = False,
                          device: str | torch.device = "cpu") -> PreparedNetwork:
    """A copy of ``module`` rewritten for inference (see the module docstring); the module
    itself is left as it is (its memory format aside, which the caller may already have set).

    ``window_shape`` (spatial) picks the memory format (channels-last for 2 or 3 spatial axes
    when ``channels_last``). A module in training mode, or on another device than the CPU, is
    run as it is (batch statistics and dropout would change its results; the rewrites are
    measured on the CPU only), and ``notes`` says so.
    """
    notes: list[str] = []
    device = torch.device(device)
    if module.training:
        notes.append("network in training mode: run as it is, not prepared for inference")
        return PreparedNetwork(module, False, notes)
    if device.type != "cpu":
        notes.append(f"network on {device}: run as it is, not prepared for inference")
        return PreparedNetwork(module, False, notes)
    memory_format = None
    if channels_last and window_shape is not None and len(window_shape) in (2, 3):
        memory_format = (torch.channels_last if len(window_shape) == 2
                         else torch.channels_last_3d)
    key = (memory_format, trace, _state(module))
    with _CACHE_LOCK:
        cached = _CACHE.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        eager = copy.deepcopy(module)
    except Exception as error:  # cannot be copied: run as is
        notes.append(f"network not copied ({type(error).__name__}: {error}); run as it is")
        return PreparedNetwork(module, False, notes)
    eager.eval().requires_grad_(False)
    _fold_through_graph(eager)
    _rewrite(eager)
    _direct(eager)
    if memory_format is not None:
        eager.to(memory_format=memory_format)
    prepared = PreparedNetwork(eager, trace, notes)
    with _CACHE_LOCK:
        _CACHE[module] = (key, prepared)
    return prepared


# module -> (its state when prepared, the prepared copy): one copy per live module
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, PreparedNetwork]] = (
    weakref.WeakKeyDictionary())
_CACHE_LOCK = threading.Lock()
_SIMPLE = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _simple(value: object) -> bool:
    return isinstance(value, _SIMPLE) or (isinstance(value, tuple)
                                          and all(isinstance(v, _SIMPLE) for v in value))


def _state(module: nn.Module) -> tuple[Hashable, ...]:
    """What a prepared copy depends on, cheaply compared: every submodule (identity, type,
    simple attributes such as ``training``, ``eps`` or ``inplace``, its hooks) and every
    parameter and buffer (storage, version counter, which in-place updates, optimisers and
    ``load_state_dict`` advance, layout, and the float64 sum of its values, which catches
    writes through ``.data`` that the version counter does not see). 2 ms for the oar-mr
    demo's 2 M parameters."""
    parts: list[Hashable] = []
    for sub in module.modules():
        parts.append((id(sub), type(sub),
                      tuple((k, v) for k, v in vars(sub).items() if _simple(v)),
                      tuple(sub._forward_hooks), tuple(sub._forward_pre_hooks)))
    with torch.no_grad():
        for name, tensor in itertools.chain(module.named_parameters(remove_duplicate=False),
                                            module.named_buffers(remove_duplicate=False)):
            parts.append((name, tensor.data_ptr(), tensor._version, tuple(tensor.shape),
                          tensor.stride(), tensor.dtype, tensor.device, _checksum(tensor)))
    return tuple(parts)


def _checksum(tensor: Tensor) -> Hashable:
    """The sum of the values (float64; complex as complex); a fresh object, equal to
    nothing, where none can be taken (a meta or lazy tensor): such a module is never reused."""
    try:
        flat = tensor.reshape(-1)  # a strided float64 sum of a channels-last weight is 100x slower
        if flat.is_complex():
            return complex(flat.sum(dtype=torch.complex128))
        return float(flat.sum(dtype=torch.float64))
    except (RuntimeError, NotImplementedError, ValueError):
        return object()


def _rewrite(module: nn.Module) -> None:
    """Instance norms computed in place of their memory format, batch norms folded into the
    convolution before them, activations after a fresh output in place; recursively (the
    convolutions are sent to oneDNN afterwards, by ``_direct``)."""
    for name, child in list(module.named_children()):
        if (isinstance(child, nn.modules.instancenorm._InstanceNorm)
                and not child.track_running_stats):
            setattr(module, name, ChannelsLastInstanceNorm(child))
        elif _is_pointwise(child):
            setattr(module, name, PointwiseConv(child))
        elif _is_patch_transposed(child):
            setattr(module, name, PatchTransposedConv(child))
        else:
            _rewrite(child)
    if isinstance(module, nn.Sequential):
        _fold_and_inplace(module)


def _fold_through_graph(module: nn.Module, scratch: nn.Module | None = None) -> None:
    """Eval batch norms folded into the convolution before them wherever the module's traced
    graph (``torch.fx``) shows that convolution's output going to that norm and nowhere else:
    inside residual blocks, whose ``forward`` calls ``self.bn1(self.conv1(x))``, which the
    ``nn.Sequential`` rule of :func:`_rewrite` cannot see (staging's and oar-mr's blocks). The
    graph is traced on a scratch copy (tracing runs ``forward`` with symbolic values); a module
    that cannot be traced is tried child by child, each on its part of the same copy
    (``scratch``, made once: a copy per child made the brain's 2D models, traceable only
    in parts, spend 0.26 s of their 0.42 s preparation copying)."""
    if not any(_foldable_norm(m) for m in module.modules()):
        return
    scratch = copy.deepcopy(module) if scratch is None else scratch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.fx.symbolic_trace(scratch).graph
    except Exception:  # data-dependent control flow, untraceable calls: its parts
        for child, part in zip(module.children(), scratch.children(), strict=True):
            _fold_through_graph(child, part)
        return
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and len(source.users) == 1 and calls[node.target] == 1
                and calls[source.target] == 1):
            continue
        norm, conv = module.get_submodule(node.target), module.get_submodule(source.target)
        if (_foldable_norm(norm) and type(conv) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
                and norm.num_features == conv.out_channels
                and not (conv._forward_hooks or norm._forward_hooks
                         or norm._forward_pre_hooks)):
            _replace(module, source.target, _folded(conv, norm))
            _replace(module, node.target, nn.Identity())


def _foldable_norm(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.modules.batchnorm._BatchNorm) and not layer.training
            and layer.track_running_stats and layer.running_mean is not None)


def _replace(module: nn.Module, target: str, layer: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, layer)


def _direct(module: nn.Module) -> None:
    """Every plain 2D/3D convolution (folded ones included) sent to oneDNN directly."""
    for name, child in list(module.named_children()):
        if _is_direct(child):
            setattr(module, name, DirectConv(child))
        else:
            _direct(child)


def _fold_and_inplace(sequence: nn.Sequential) -> None:
    names = list(sequence._modules)
    for before, after in itertools.pairwise(names):
        first, second = sequence._modules[before], sequence._modules[after]
        if (isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
                and _foldable_norm(second) and second.num_features == first.out_channels):
            sequence._modules[before] = _folded(first, second)
            sequence._modules[after] = nn.Identity()
    previous = None  # the last layer before this one that is not an Identity
    for name in names:
        layer = sequence._modules[name]
        fresh = isinstance(previous, (*_FRESH_OUTPUT, ChannelsLastInstanceNorm, DirectConv,
                                      PointwiseConv, PatchTransposedConv))
        if fresh and isinstance(layer, (*_ACTIVATIONS, ChannelsLastInstanceNorm)) \
                and hasattr(layer, "inplace"):
            layer.inplace = True
        if not isinstance(layer, nn.Identity):
            previous = layer


def _folded(conv: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """``conv`` followed by ``norm`` (eval) as one convolution: the norm's per-channel scale
    and shift folded into the weights and bias (what ``torch.jit.freeze`` does on a graph)."""
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight,
        norm.bias)
    return fused


def _is_pointwise(layer: nn.Module) -> bool:
    return (type(layer) in (nn.Conv2d, nn.Conv3d) and all(k == 1 for k in layer.kernel_size)
            and all(k == 1 for k in layer.stride) and all(p == 0 for p in layer.padding)
            and layer.groups == 1)


def _is_patch_transposed(layer: nn.Module) -> bool:
    return (type(layer) in (nn.ConvTranspose2d, nn.ConvTranspose3d)
            and tuple(layer.kernel_size) == tuple(layer.stride)
            and all(p == 0 for p in layer.padding)
            and all(p == 0 for p in layer.output_padding)
            and all(d == 1 for d in layer.dilation) and layer.groups == 1
            and layer.padding_mode == "zeros")


def _is_direct(layer: nn.Module) -> bool:
    return (type(layer) in (nn.Conv2d, nn.Conv3d) and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str) and torch.backends.mkldnn.is_available())
