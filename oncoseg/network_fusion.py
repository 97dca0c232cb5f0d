"""Activations, residual sums and channel concatenations folded into the convolutions next to
them, where a prepared network's graph (``torch.fx``) shows it is safe: the last step of
:func:`oncoseg.network_inference.prepare_for_inference`.

A residual block ends with ``relu(bn(conv(out)) + identity)``: written as modules and
functions, that is the convolution's output, then a pass adding the identity and a pass for
the ReLU, each reading and writing the whole map on a CPU whose convolutions are bound by
memory at these widths. oneDNN applies both as the convolution writes (its ``sum`` and
``eltwise`` post-ops), and a 1 x 1 convolution run as a matrix product accumulates straight
into the identity (``addmm_``, BLAS's ``beta = 1``) instead of first copying its bias
into a fresh output. A ReLU right after a convolution, in an ``nn.Sequential`` or a block's
``forward``, becomes its post-op the same way (bit for bit). Measured in one process,
alternating the same network prepared with and without this step (12 rounds, dev-cpu-2, two
threads; medians): the oar-mr demo on 8 slices of 128 x 128 33.8 against 38.1 ms, the
staging demo 99.6 against 107.3 ms, a brain 2D-3D member on one 70^3 window 216 against
223 ms, a brain 2D model on 40 slices 852 against 869 ms.

A convolution whose input is a two-part ``torch.cat`` (a U-Net decoder joining its skip and
the upsampled map), or ``upsampling.beside_upsampled`` (the brain networks' join, upsampled
here instead), runs on the two parts with the two halves of its weights, summed as oneDNN
writes (:class:`ConcatenatedConv`): the concatenation is never written.

Writing into the identity overwrites a tensor the block did not create, so it is done only
where the graph proves nothing reads it afterwards: the identity (and every tensor it is an
in-place alias of) is produced inside the graph, and its other readers are convolutions or
poolings that run before the sum. Anything else keeps the out-of-place sum. A module that
cannot be traced is tried child by child; the result is a ``torch.fx.GraphModule`` where
something was fused, the module itself otherwise.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from oncoseg.graph_tracing import ThreadConfinedTracer, quietly_traced
from oncoseg.network_layers import (
    ChannelsLastInstanceNorm,
    DirectConv,
    PatchTransposedConv,
    PointwiseConv,
    channels_last_format,
    channels_last_view,
)
from oncoseg.upsampling import beside_upsampled, upsampled_to

Tensor = torch.Tensor

_LEAVES = (DirectConv, PointwiseConv, PatchTransposedConv, ChannelsLastInstanceNorm)
_READING_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                      F.avg_pool3d)
_SUMS = (operator.add, operator.iadd, torch.add)
_RELUS = (F.relu, torch.relu, torch.relu_)


class ResidualConv(nn.Module):
    """``relu(conv(x) + residual)``, written into ``residual`` (the graph proved nothing else
    reads it) where oneDNN or BLAS can: a float32 CPU tensor of the convolution's output
    shape and layout, in other memory than ``x``; elsewhere out of place."""

    def __init__(self, conv: DirectConv | PointwiseConv):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        if not self._writable(x, residual):
            return (self.conv(x) + residual).relu_()
        conv = self.conv
        if isinstance(conv, DirectConv):
            return torch.ops.mkldnn._convolution_pointwise_(
                residual, x, conv.conv.weight, conv.conv.bias, conv.padding, conv.stride,
                conv.dilation, conv.groups, "add", 1.0, "relu", [], "")
        rows = channels_last_view(residual).view(-1, residual.shape[1])
        rows.addmm_(channels_last_view(x).reshape(-1, x.shape[1]), conv.weight)
        if conv.bias is not None:
            rows.add_(conv.bias)
        return residual.relu_()

    def _writable(self, x: Tensor, residual: Tensor) -> bool:
        conv = self.conv
        if isinstance(conv, DirectConv) and conv.activation is not None:
            return False
        return (residual.dim() in (4, 5) and x.device.type == "cpu"
                and residual.device == x.device
                # the convolution must not read what it writes (a block adding its own input)
                and x.untyped_storage().data_ptr() != residual.untyped_storage().data_ptr()
                and x.dtype == residual.dtype == torch.float32
                and not residual.requires_grad
                and residual.is_contiguous(memory_format=channels_last_format(residual))
                and (isinstance(conv, PointwiseConv) or torch.backends.mkldnn.is_available())
                and tuple(residual.shape) == _output_shape(conv, x))


def _output_shape(conv: DirectConv | PointwiseConv, x: Tensor) -> tuple[int, ...]:
    """The convolution's output shape for ``x`` (the residual must have it: no broadcast)."""
    if isinstance(conv, PointwiseConv):
        return (x.shape[0], int(conv.weight.shape[1]), *x.shape[2:])
    kernel = conv.conv.kernel_size
    spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in zip(
        x.shape[2:], conv.padding, conv.dilation, kernel, conv.stride, strict=True)]
    return (x.shape[0], int(conv.conv.out_channels), *spatial)


class ConcatenatedConv(nn.Module):
    """``conv(torch.cat([first, second], 1))`` without the concatenation: the convolution is
    linear in its input channels, so it runs on ``first`` with the weights' first half and
    oneDNN sums its run on ``second`` (the other half) into that output as it writes (its
    ``sum`` post-op, the ReLU after it where the convolution had one). A U-Net decoder's
    concatenation of a skip and an upsampled map is a pass that writes both maps again
    (0.8-1.4 ms at oar-ct's first level). Measured with and without, alternated in one
    process (medians): oar-ct's stage 1.993 -> 1.925 s, probabilities within 1e-6; the brain 2D
    models' 3.301 -> 2.928 s and the members' 1.845 -> 1.719 s (their ReLUs fused too). Outside
    the fast path (not float32 channels-last on the CPU, shapes that do not join) it
    concatenates."""

    def __init__(self, conv: DirectConv, upsample: bool = False):
        super().__init__()
        self.conv = conv
        # the second part is first upsampled linearly to the first's size (a decoder's
        # ``beside_upsampled(skip, x)``)
        self.upsample = upsample
        self._halves: dict[int, tuple[Tensor, Tensor]] = {}  # by the first part's channels

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        if self.upsample:
            second = upsampled_to(first, second)
        if not self._joinable(first, second):
            return self.conv(torch.cat([first, second], 1))
        conv = self.conv
        first_weights, second_weights = self._split(first.shape[1])
        out = torch.ops.aten.mkldnn_convolution(first, first_weights, conv.conv.bias,
                                                conv.padding, conv.stride, conv.dilation, 1)
        return torch.ops.mkldnn._convolution_pointwise_(
            out, second, second_weights, None, conv.padding, conv.stride, conv.dilation, 1,
            "add", 1.0, None if conv.activation is None else "relu", [], None)

    def _split(self, channels: int) -> tuple[Tensor, Tensor]:
        if channels not in self._halves:
            weight = self.conv.conv.weight.detach()
            layout = channels_last_format(weight)
            self._halves[channels] = (weight[:, :channels].contiguous(memory_format=layout),
                                      weight[:, channels:].contiguous(memory_format=layout))
        return self._halves[channels]

    def _joinable(self, first: Tensor, second: Tensor) -> bool:
        if first.dim() not in (4, 5) or second.dim() != first.dim():
            return False
        layout = channels_last_format(first)
        return (first.device.type == second.device.type == "cpu"
                and first.dtype == second.dtype == torch.float32
                and self.conv.conv.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (first.requires_grad
                                                      or second.requires_grad))
                and first.shape[0] == second.shape[0] and first.shape[2:] == second.shape[2:]
                and first.shape[1] + second.shape[1] == self.conv.conv.in_channels
                and first.is_contiguous(memory_format=layout)
                and second.is_contiguous(memory_format=layout))


# Modules that read their input and return a fresh tensor: they may run before the sum that
# overwrites what they read.
_READERS = (DirectConv, PointwiseConv, PatchTransposedConv, ConcatenatedConv, nn.MaxPool1d,
            nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


class _Tracer(ThreadConfinedTracer):
    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, _LEAVES) or super().is_leaf_module(module, name)


# oneDNN's fused convolutions as this module calls them (registered by PyTorch builds with
# oneDNN for its own compiler; the project accepts torch >= 2.1): argument names checked, so a
# build whose operators differ runs the network unfused rather than calling them wrongly
_POST_OPS = {
    "_convolution_pointwise.default": ["X", "W", "B", "padding", "stride", "dilation", "groups",
                                       "attr", "scalars", "algorithm"],
    "_convolution_pointwise_.binary": ["other", "X", "W", "B", "padding", "stride", "dilation",
                                       "groups", "binary_attr", "alpha", "unary_attr",
                                       "unary_scalars", "unary_algorithm"],
}


@functools.cache
def post_ops_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolutions with the arguments used here."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        for name, arguments in _POST_OPS.items():
            packet, overload = name.split(".")
            schema = getattr(getattr(torch.ops.mkldnn, packet), overload)._schema
            if [a.name for a in schema.arguments] != arguments:
                return False
    except (AttributeError, RuntimeError):
        return False
    return True


def fuse_through_graph(module: nn.Module) -> nn.Module:
    """``module`` with its graph's activations, residual sums and concatenations fused
    (module docstring); a
    ``GraphModule`` where anything was, ``module`` otherwise (its untraceable parents keep
    their code, with fused children)."""
    if not post_ops_available():
        return module
    if any(m._forward_hooks or m._forward_pre_hooks for m in module.modules()):
        return module  # a graph would not call them as the module does
    try:
        graph = quietly_traced(module, _Tracer())
    except Exception:  # data-dependent control flow, untraceable calls: its parts
        for name, child in list(module.named_children()):
            fused = fuse_through_graph(child)
            if fused is not child:
                setattr(module, name, fused)
        return module
    _drop_identities(graph, module)
    fused = [_fuse_relu(graph, module, node) for node in list(graph.nodes)]
    fused += [_fuse_concatenation(graph, module, node) for node in list(graph.nodes)]
    if not any(fused):
        return module
    graph.lint()
    fused_module = torch.fx.GraphModule(module, graph, type(module).__name__)
    # what callers may read from the network (a task's settings kept on it), as the module has
    for name, value in vars(module).items():
        if not name.startswith("_") and not hasattr(fused_module, name):
            setattr(fused_module, name, value)
    return fused_module


def _drop_identities(graph: torch.fx.Graph, root: nn.Module) -> None:
    """Identity modules (folded batch norms) and dropout in eval: their output is their input."""
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        layer = root.get_submodule(node.target)
        if type(layer) is nn.Identity or (isinstance(layer, nn.modules.dropout._DropoutNd)
                                          and not layer.training):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _fuse_relu(graph: torch.fx.Graph, root: nn.Module, node: torch.fx.Node) -> bool:
    """A ReLU node whose input is a convolution (post-op) or a convolution plus a residual
    (``ResidualConv``), rewritten; whether it was."""
    if not _is_relu(node, root):
        return False
    source = node.args[0]
    if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
        return False
    conv = _only_call(graph, root, source, DirectConv)
    if conv is not None and conv.activation is None:
        fresh = DirectConv(conv.conv, nn.ReLU(inplace=True))
        _replace_module(root, source.target, fresh)
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        return True
    if not (source.op == "call_function" and source.target in _SUMS and len(source.args) == 2
            and not source.kwargs):
        return False
    for out, residual in (source.args, source.args[::-1]):
        if not (isinstance(out, torch.fx.Node) and isinstance(residual, torch.fx.Node)
                and len(out.users) == 1):
            continue
        conv = _only_call(graph, root, out, (DirectConv, PointwiseConv))
        if conv is None or (isinstance(conv, DirectConv) and conv.activation is not None) \
                or not _overwritable(residual, source, root):
            continue
        name = _new_name(root, f"{out.target.replace('.', '_')}_residual")
        root.add_module(name, ResidualConv(conv))
        with graph.inserting_before(node):
            fused = graph.call_module(name, (out.args[0], residual))
        node.replace_all_uses_with(fused)
        graph.erase_node(node)
        graph.erase_node(source)
        graph.erase_node(out)
        return True
    return False


def _fuse_concatenation(graph: torch.fx.Graph, root: nn.Module, node: torch.fx.Node) -> bool:
    """A convolution whose input is the channel concatenation of two maps, read by nothing
    else, as a :class:`ConcatenatedConv`; whether it was."""
    conv = _only_call(graph, root, node, DirectConv)
    joined = node.args[0] if conv is not None else None
    if not (isinstance(joined, torch.fx.Node) and joined.op == "call_function"
            and joined.target in (torch.cat, beside_upsampled) and len(joined.users) == 1
            and conv.groups == 1):
        return False
    upsample = joined.target is beside_upsampled
    if upsample:  # (skip, x): skip beside x upsampled to its size
        parts, dim = (None, 0) if joined.kwargs else (joined.args, 1)
    else:
        parts = joined.args[0] if joined.args else joined.kwargs.get("tensors")
        dim = joined.args[1] if len(joined.args) > 1 else joined.kwargs.get("dim", 0)
    if not (isinstance(parts, (list, tuple)) and len(parts) == 2 and dim == 1
            and all(isinstance(p, torch.fx.Node) for p in parts)):
        return False
    name = _new_name(root, f"{node.target.replace('.', '_')}_concatenated")
    root.add_module(name, ConcatenatedConv(conv, upsample))
    with graph.inserting_before(node):
        fused = graph.call_module(name, tuple(parts))
    node.replace_all_uses_with(fused)
    graph.erase_node(node)
    graph.erase_node(joined)
    return True


def _new_name(root: nn.Module, base: str) -> str:
    name = base
    while hasattr(root, name):
        name += "_"
    return name


def _is_relu(node: torch.fx.Node, root: nn.Module) -> bool:
    if node.op == "call_function":
        return (node.target in _RELUS and len(node.args) == 1
                and set(node.kwargs) <= {"inplace"})
    if node.op == "call_method":
        return node.target in ("relu", "relu_") and len(node.args) == 1 and not node.kwargs
    if node.op == "call_module":
        layer = root.get_submodule(node.target)
        return (type(layer) is nn.ReLU and len(node.args) == 1 and not layer._forward_hooks
                and not layer._forward_pre_hooks)
    return False


def _only_call(graph: torch.fx.Graph, root: nn.Module, node: torch.fx.Node, kinds
               ) -> nn.Module | None:
    """The module ``node`` calls when it is of ``kinds``, takes one input and is called
    nowhere else in the graph (its replacement must not change another call)."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    layer = root.get_submodule(node.target)
    if not isinstance(layer, kinds) or layer._forward_hooks or layer._forward_pre_hooks:
        return None
    calls = sum(1 for n in graph.nodes if n.op == "call_module" and n.target == node.target)
    return layer if calls == 1 else None


class _Unknown(Exception):
    """A producer whose aliasing is not known: the residual is not overwritten."""


def _overwritable(residual: torch.fx.Node, at: torch.fx.Node, root: nn.Module) -> bool:
    """Whether the tensor ``residual`` may be overwritten at ``at``: it, and every tensor it
    aliases through in-place steps, was made inside the graph and is read before ``at`` only,
    by modules that return fresh tensors."""
    order = {n: i for i, n in enumerate(residual.graph.nodes)}
    chain, node = [], residual
    while node is not None:
        if not isinstance(node, torch.fx.Node) or node.op not in ("call_module",
                                                                   "call_function"):
            return False  # a graph input or a parameter: the caller's tensor
        chain.append(node)
        try:
            node = _aliased_input(node, root)
        except _Unknown:
            return False
    for member in chain:
        for user in member.users:
            if user is at or user in chain:
                continue
            if order[user] > order[at] or not _fresh_reader(user, root):
                return False
    return True


def _aliased_input(node: torch.fx.Node, root: nn.Module) -> torch.fx.Node | None:
    """The node whose tensor ``node`` returns (an in-place step), None for a producer of a
    fresh tensor; raises ``_Unknown`` for anything else (a view, an out-of-place function not
    listed here), and the residual is then not overwritten."""
    if node.op == "call_module":
        layer = root.get_submodule(node.target)
        if isinstance(layer, ResidualConv):
            return node.args[1]
        if isinstance(layer, ChannelsLastInstanceNorm) and layer.inplace:
            return node.args[0]
        if isinstance(layer, _READERS):
            return None
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)) and layer.inplace:
            return node.args[0]
        raise _Unknown
    if node.op == "call_function":
        if node.target in _READING_FUNCTIONS:
            return None
        if node.target in (F.relu, F.leaky_relu) and node.kwargs.get("inplace", False):
            return node.args[0]
        if node.target in (torch.relu_, operator.iadd):
            return node.args[0]
    raise _Unknown


def _fresh_reader(user: torch.fx.Node, root: nn.Module) -> bool:
    if user.op == "call_module":
        return isinstance(root.get_submodule(user.target), _READERS)
    return user.op == "call_function" and user.target in _READING_FUNCTIONS


def _replace_module(root: nn.Module, target: str, layer: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, layer)
