"""A network made ready for inference on the CPU, equal to 1e-5 to the module it came from.

Measured on the CPU (Testing/benchmarks/bench_sliding_window.py, issue 25): a channels-last
convolution is fast, but ``InstanceNorm`` is not. PyTorch's instance norm reshapes a
channels-last input into a batch norm over ``(1, B * C, ...)``, which copies the whole
activation into the default memory format and back (``aten::copy_``: 29 % of a MONAI BasicUNet's
forward pass, the norm itself 13 %, on a 96^3 window). Here the norm is computed on the
channels-last tensor as it lies (a column mean, a Gram product's diagonal and one fused
multiply-add; the layers are in :mod:`oncoseg.network_layers`). Batch norm in eval is folded
into the convolution before it, instance norms and activations that follow a layer with a
fresh output run in place, ReLUs and residual sums after a convolution become its oneDNN
post-ops and a concatenation before it is never written (:mod:`oncoseg.network_fusion`), and
with ``trace`` the result is traced and frozen per input shape (``torch.jit.freeze`` folds what
is left and lets oneDNN fuse), checked against the eager network on the first batch of that
shape, and dropped when it differs or fails.

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
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
import torch.fx
from torch import nn

from oncoseg.graph_tracing import quietly_traced, warnings_caught
from oncoseg.network_fusion import fuse_through_graph
from oncoseg.network_layers import (
    ChannelsLastInstanceNorm,
    DirectConv,
    PatchTransposedConv,
    PointwiseConv,
)

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
            with torch.no_grad(), warnings_caught(record=True) as caught:
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
    if not trace:  # TorchScript cannot trace oneDNN's post-op arguments
        eager = fuse_through_graph(eager)
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
        graph = quietly_traced(scratch)
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
