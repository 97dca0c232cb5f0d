"""Which torch device to run on, and the network a task's prediction runs there.

A requested device that is absent is an input error. :func:`inference_network` is what every
task's network stage runs: channels-last weights (fed channels-last inputs, so no convolution
converts its input or output), and on the CPU the copy :mod:`oncoseg.network_inference`
prepares. Measured with Testing/benchmarks/bench_network_peak.py (issue 25).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oncoseg.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: this module is read at start-up
    import torch
    from torch import nn

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested not in DEVICE_CHOICES and not requested.startswith("cuda:"):
        raise InputError("--device", f"'{requested}' is not one of {', '.join(DEVICE_CHOICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested.startswith("cuda") and not cuda:
        raise InputError("--device", f"'{requested}' was asked for, but no CUDA GPU is available "
                         "to this torch build; use --device cpu or auto")
    if requested == "mps" and not mps:
        raise InputError("--device", "'mps' was asked for, but Apple's MPS is not available")
    return requested


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory (a no-op when it already is, or is not 4D/5D): oneDNN's
    fast convolutions read and write this layout; given another, each convolution converts
    its input and output, which costs as much as a narrow convolution itself."""
    from oncoseg.network_layers import channels_last_format

    return x.contiguous(memory_format=channels_last_format(x))


def channels_last_weights(network: nn.Module) -> nn.Module:
    """The network with every 4D and 5D parameter and buffer in channels-last memory, in place.

    ``Module.to(memory_format=...)`` takes one format and fails on (or skips) the other rank, so
    a network that mixes 2D and 3D convolutions (the brain ensemble) or holds only 3D ones
    (``channels_last`` is for rank 4) would keep default-layout weights, and oneDNN would then
    reorder them on every call. Values are unchanged; training works on the result as before:
    the copies are made outside inference mode even when the caller is inside it (inference
    tensors as parameters would refuse a later backward pass).
    """
    import torch

    with torch.inference_mode(False):
        return network._apply(to_channels_last)


def inference_network(network: nn.Module, spatial_dims: int,
                      device: str | torch.device = "cpu", prepare: bool = True) -> nn.Module:
    """What a task's prediction runs: ``network`` with channels-last weights (the fast layout
    on the CPU and on CUDA), and on the CPU, in eval mode, the copy that
    :func:`oncoseg.network_inference.prepare_for_inference` rewrites (eval batch norm folded
    into its convolution, channels-last instance norm, 1 x 1 convolutions as matrix products,
    activations in place); a network in training mode is returned as it is (the caller's mode
    is never changed). Call it once per case or per stage rather than per batch: the
    prepared copy is kept and reused while the network is unchanged, but checking that reads
    every weight (about 10 ms for the oar-mr demo). Feed it channels-last inputs
    (:func:`to_channels_last`). ``prepare=False``: the channels-last module itself, for a
    model whose pinned results the rewrite (equal to 1e-5, not bit for bit) would move."""
    from oncoseg.network_inference import prepare_for_inference

    channels_last_weights(network)
    if not prepare:
        return network
    window = (1,) * spatial_dims  # only its length matters: it picks the memory format
    return prepare_for_inference(network, window, device=device).eager


# glibc's malloc serves a block from its heap, where a freed block is reused as it is, once a
# block that size has been freed, up to 32 MiB on 64-bit systems (its dynamic mmap threshold's
# ceiling); a larger block is mapped afresh for every batch, and the kernel faults in and zeroes
# each of its pages again. Measured on the dev CPU: the rectal phantom's dense pass in one batch
# of 20 slices 0.53 s, in batches whose widest map stays under it 0.38 s; the brain demo's axial
# 2D model on 40 slices of 240 x 240, 3.3 s in batches of 16, 2.4 s in batches of 3. A GPU's
# caching allocator keeps its blocks, so there batches follow a memory budget instead.
HEAP_BLOCK_BYTES = 32 * 2**20


def runs_on_cpu(device: str | torch.device) -> bool:
    import torch

    return torch.device(device).type == "cpu"


def heap_batch(widest_bytes_per_item: int) -> int:
    """Items per batch on the CPU (at least one): as many as keep a batch's widest
    intermediate map within one of malloc's reusable heap blocks."""
    return max(1, HEAP_BLOCK_BYTES // max(1, widest_bytes_per_item))
