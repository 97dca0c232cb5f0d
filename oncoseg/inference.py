"""Sliding-window inference for 2D and 3D networks, memory-bounded.

Windows are placed as MONAI and nnU-Net place them (a regular grid whose last window is moved
back to end at the border; images smaller than the window are padded symmetrically) and blended
with the same Gaussian importance map, so results agree with MONAI's ``sliding_window_inference``.
What differs is the memory: windows are visited slab by slab along the first spatial axis and
blended into the output as they come. Rows that no later window touches are normalised by their
summed window weights (computed for those rows only, when they finish), passed through
``finalize`` (e.g. a softmax) and written into the output at once, so no weight map and no second
full-size copy exists. Each window is cut from the raw input
and passed through ``window_transform`` (e.g. CT windowing), so a normalised float copy of the
whole volume is never made either. Each chunk of windows the network returns is blended before
the next chunk runs, so no batch of predictions is held beside the network's activations
(measured on bench_sliding_window's project network, 150 x 512 x 512: peak RSS 1.50 -> 1.40 GB,
issue 25).

With ``prepare_network`` a ``torch.nn.Module`` network runs on the CPU as
:func:`oncoseg.network_inference.prepare_for_inference` rewrites a copy of it, one window at a
time (channels-last instance norm, folded batch norm,
matrix-product 1x1 and patch transposed convolutions; equal to 1e-5), and its channels-last
output is blended as it comes, without a conversion per batch. ``output_dtype`` float16 or
uint8 keeps the open rows in float32 and stores only finished rows in the smaller type (uint8
as ``round(255 * value)``, for probabilities), so the output costs 2 or 1 bytes per voxel and
class instead of 4.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from oncoseg.network_inference import PreparedNetwork, prepare_for_inference
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report

log = logging.getLogger(__name__)
Tensor = torch.Tensor


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices along one axis (in padded coordinates, where size >= window)."""
    if window >= size:
        return [0]
    interval = max(int(window * (1.0 - overlap)), 1)
    count = math.ceil((size - window) / interval) + 1
    return [min(i * interval, size - window) for i in range(count)]


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> Tensor:
    """Separable Gaussian centred on the window, peak 1, floored at max(min, 1e-3)."""
    weights = None
    for n in window:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0
        g = torch.exp(-(x**2) / (2.0 * (sigma_scale * n) ** 2))
        weights = g if weights is None else weights[..., None] * g
    assert weights is not None
    return weights.clamp_(min=max(float(weights.min()), 1e-3))


@dataclass
class SlidingWindow:
    """How to tile a volume; the defaults follow nnU-Net/MONAI practice."""

    window: tuple[int, ...]
    overlap: float = 0.5
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = 0.125
    batch_size: int = 4
    device: str = "cpu"
    channels_last: bool = True  # faster convolutions on CPU (AVX2) and GPU
    autocast: bool = True  # float16 on CUDA only; never bfloat16 on CPU (slow here)
    pad_value: float = 0.0
    keep_on_device: bool = False  # return the output where it was summed (the GPU, if it fit)
    notes: list[str] = field(default_factory=list)  # what the run had to do (OOM fallbacks)
    # CPU: run a rewritten copy of a Module (network_inference; 1e-5 on probabilities, not bit
    # for bit: it moves 2 of oar-ct demo's 1.01 M labels at argmax ties, so callers opt in)
    prepare_network: bool = False
    output_dtype: torch.dtype = torch.float32  # float16 or uint8 (round(255 * value)) on request

    def __call__(
        self,
        volume: np.ndarray | Tensor,
        network: Callable[[Tensor], Tensor],
        window_transform: Callable[[Tensor], Tensor] | None = None,
        finalize: Callable[[Tensor], Tensor] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        stage: str = "Inference",
    ) -> Tensor:
        """Run ``network`` over ``volume`` (channels first, 2 or 3 spatial axes).

        ``window_transform`` maps a batch of raw windows (B, C, *window) to network input;
        ``finalize`` maps blended rows (K, n, ...) to what is kept in their place (same shape,
        e.g. a softmax over K). Returns ``output_dtype`` (float32 unless asked) (K, *spatial) on
        the CPU (with ``keep_on_device``, where it was summed). A ``torch.nn.Module``
        network is switched to channels-last memory format (same weights, faster convolutions)
        and on the CPU run through a prepared copy (``prepare_network``).
        """
        if self.output_dtype not in (torch.float32, torch.float16, torch.uint8):
            raise ValueError(f"output_dtype must be float32, float16 or uint8, not "
                             f"{self.output_dtype}")
        data = torch.as_tensor(volume)
        spatial = tuple(data.shape[1:])
        if len(spatial) != len(self.window) or len(spatial) not in (2, 3):
            raise ValueError(f"window {self.window} does not fit a volume of spatial shape "
                             f"{spatial} (2 or 3 spatial axes, channels first)")
        padded = tuple(max(s, w) for s, w in zip(spatial, self.window, strict=True))
        pad_lo = tuple((p - s) // 2 for p, s in zip(padded, spatial, strict=True))
        starts = [window_starts(p, w, self.overlap)
                  for p, w in zip(padded, self.window, strict=True)]
        importance = (gaussian_importance(self.window, self.sigma_scale)
                      if self.mode == "gaussian" else torch.ones(self.window))
        runner = _BatchRunner(network, self, window_transform)
        if _fits_on(runner.device, data.element_size() * data.numel()):
            data = data.to(runner.device)  # windows are then cut where the network runs
        blend = torch.device("cpu")  # where windows are summed; the GPU when the output fits
        total = len(starts[0]) * math.prod(len(s) for s in starts[1:])
        done = 0
        output: Tensor | None = None
        grid_rest = np.stack(np.meshgrid(*starts[1:], indexing="ij"), -1).reshape(-1,
                                                                                   len(starts) - 1)

        def weights_of(first: int, stop: int) -> Tensor:
            """Summed window weights of image rows ``first:stop``, added in the order the
            windows are blended (so equal bit for bit to a map summed as they come)."""
            weights = torch.zeros((stop - first, *spatial[1:]), dtype=torch.float32,
                                  device=importance.device)
            for start0 in starts[0]:
                lo, hi = max(start0 - pad_lo[0], first), min(start0 - pad_lo[0]
                                                             + self.window[0], stop)
                if lo >= hi:
                    continue
                rows = slice(lo - (start0 - pad_lo[0]), hi - (start0 - pad_lo[0]))
                for rest in grid_rest:
                    source, target = self._place((start0, *map(int, rest)), pad_lo, spatial)
                    weights[(slice(lo - first, hi - first), *target[1:])] += importance[
                        (rows, *source[1:])]
            return weights

        slab = _WeightSlab(min(self.window[0], spatial[0]), spatial[1:], weights_of,
                           separate_values=self.output_dtype != torch.float32)
        for start0 in starts[0]:
            if output is not None:  # rows above this window row are complete
                slab.finish(output, max(start0 - pad_lo[0], 0), finalize)
            corners = [(start0, *map(int, c)) for c in grid_rest]
            for first in range(0, len(corners), self.batch_size):
                check_cancelled(cancel)
                batch = corners[first:first + self.batch_size]
                placed = 0
                # each chunk is blended before the next one runs: holding a batch's
                # predictions would add one window's output per window to the peak
                for chunk in runner(torch.stack([self._cut(data, c, pad_lo) for c in batch])):
                    if output is None:
                        classes = chunk.shape[1]
                        blend = _blend_device(runner.device, classes, spatial)
                        output = (torch.zeros if slab.separate_values is False
                                  else torch.empty)((classes, *spatial), dtype=self.output_dtype,
                                                    device=blend)
                        slab.start(classes, blend)
                        importance = importance.to(blend)
                    elif runner.device.type == "cpu" and blend.type != "cpu":  # fell back
                        blend, output = torch.device("cpu"), output.cpu()
                        importance = importance.cpu()
                        slab.to(blend)
                    placed += self._add_chunk(output, slab, chunk.to(blend), importance,
                                              batch[placed:], pad_lo, spatial)
                    del chunk
                assert placed == len(batch)
                done += len(batch)
                report(progress, stage, done, total)
        assert output is not None
        slab.finish(output, spatial[0], finalize)
        self.notes.extend(runner.notes)
        if isinstance(runner.network, PreparedNetwork):
            self.notes.extend(runner.network.notes)
        return output if self.keep_on_device else output.cpu()

    def _cut(self, data: Tensor, corner: tuple[int, ...], pad_lo: tuple[int, ...]) -> Tensor:
        """One raw window; parts outside the image are left for padding after the transform."""
        index = [slice(None)]
        for c, p, w, s in zip(corner, pad_lo, self.window, data.shape[1:], strict=True):
            index.append(slice(max(c - p, 0), min(c - p + w, s)))
        return data[tuple(index)]

    def _add_chunk(self, output: Tensor, slab: _WeightSlab, chunk: Tensor, importance: Tensor,
                   corners: list[tuple[int, ...]], pad_lo: tuple[int, ...],
                   spatial: tuple[int, ...]) -> int:
        """Blend a chunk's windows (the first ``len(chunk)`` of ``corners``); how many."""
        for prediction, corner in zip(chunk, corners, strict=False):
            self._add(output, slab, prediction, importance, corner, pad_lo, spatial)
        return len(chunk)

    def _add(self, output: Tensor, slab: _WeightSlab, prediction: Tensor, importance: Tensor,
             corner: tuple[int, ...], pad_lo: tuple[int, ...], spatial: tuple[int, ...]) -> None:
        """Blend one window's weighted prediction into the output (or the open rows)."""
        source, target = self._place(corner, pad_lo, spatial)
        w_part = importance[tuple(source)]
        slab.add(output, target, prediction[(slice(None), *source)], w_part)

    def _place(self, corner: tuple[int, ...], pad_lo: tuple[int, ...],
               spatial: tuple[int, ...]) -> tuple[list[slice], list[slice]]:
        """The part of a window inside the image: (slices in the window, slices in the
        image)."""
        source, target = [], []
        for c, p, w, s in zip(corner, pad_lo, self.window, spatial, strict=True):
            lo, hi = max(c - p, 0), min(c - p + w, s)
            source.append(slice(lo - (c - p), hi - (c - p)))
            target.append(slice(lo, hi))
        return source, target


class _WeightSlab:
    """The rows still open. Finished rows are normalised by their summed window weights
    (``weights_of``, computed for a few rows at a time when they finish: no map of weights is
    held, not even one window's depth: 67 MB at 64 x 512 x 512) and finalized in place.
    With ``separate_values`` (an output type other than float32) the weighted predictions of
    the open rows (one window's depth) are summed here, and only finished rows reach the
    output."""

    ROWS_PER_STEP = 4  # bounds the temporaries of ``finalize``

    def __init__(self, depth: int, rest: tuple[int, ...],
                 weights_of: Callable[[int, int], Tensor], separate_values: bool = False):
        self.depth, self.rest = depth, rest
        self.weights_of = weights_of
        self.separate_values = separate_values
        self.values: Tensor | None = None  # (K, depth, *rest) when separate_values
        self.first_row = 0  # image row held in values[:, 0]

    def start(self, channels: int, device: torch.device) -> None:
        """Allocate for ``channels`` classes on ``device`` (known at the first batch)."""
        if self.separate_values:
            self.values = torch.zeros((channels, self.depth, *self.rest), dtype=torch.float32,
                                      device=device)

    def to(self, device: torch.device) -> None:
        if self.values is not None:
            self.values = self.values.to(device)

    def add(self, output: Tensor, target: list[slice], prediction: Tensor, w_part: Tensor
            ) -> None:
        """Add one window's weighted ``prediction`` (K, *window part) at ``target``."""
        rows = slice(target[0].start - self.first_row, target[0].stop - self.first_row)
        if self.values is None:
            output[(slice(None), *target)].addcmul_(prediction, w_part)
        else:
            self.values[(slice(None), rows, *target[1:])].addcmul_(prediction, w_part)

    def finish(self, output: Tensor, upto: int, finalize: Callable[[Tensor], Tensor] | None
               ) -> None:
        n = upto - self.first_row
        if n <= 0:
            return
        for a in range(0, n, self.ROWS_PER_STEP):
            b = min(a + self.ROWS_PER_STEP, n)
            target = output[:, self.first_row + a:self.first_row + b]
            rows = target if self.values is None else self.values[:, a:b]
            weights = self.weights_of(self.first_row + a, self.first_row + b)
            rows.div_(weights.to(rows.device))
            kept = rows
            if finalize is not None:
                kept = finalize(rows)
                if kept.shape != rows.shape:
                    raise ValueError(f"finalize must keep the shape {tuple(rows.shape)}, "
                                     f"it returned {tuple(kept.shape)}")
            if output.dtype == torch.uint8:
                kept = (kept * 255).round_().clamp_(0, 255)
            if kept is not target:
                target.copy_(kept)
        keep = self.depth - n
        if self.values is not None:
            if keep > 0:  # slide the rows still open to the front
                self.values[:, :keep] = self.values[:, n:].clone()
            self.values[:, max(keep, 0):] = 0
        self.first_row = upto


def _fits_on(device: torch.device, nbytes: int, share: float = 0.25) -> bool:
    """Whether ``nbytes`` take under ``share`` of the GPU's free memory (False on the CPU)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < share * free


def _blend_device(device: torch.device, channels: int, spatial: tuple[int, ...]) -> torch.device:
    """Sum the windows on the GPU when the output and its weights fit there (one transfer at
    the end instead of one per window, as MONAI does); else on the CPU, whose memory the
    output must fit anyway."""
    need = 4 * (channels + 1) * math.prod(spatial)
    return device if _fits_on(device, need) else torch.device("cpu")


def _channels_last(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class _BatchRunner:
    """Runs batches on the chosen device, padding windows, falling back on out-of-memory."""

    def __init__(self, network: Callable[[Tensor], Tensor], config: SlidingWindow,
                 window_transform: Callable[[Tensor], Tensor] | None):
        self.network = network
        self.config = config
        self.transform = window_transform
        self.device = torch.device(config.device)
        self.batch_size = config.batch_size
        self.notes: list[str] = []
        if isinstance(network, torch.nn.Module):
            network.to(self.device)
            if config.channels_last:
                # both weights and inputs channels-last, or the convolution converts each call
                network.to(memory_format=_channels_last(len(config.window)))
            if config.prepare_network and self.device.type == "cpu" and not network.training:
                self.network = prepare_for_inference(network, config.window,
                                                     config.channels_last)
                # measured (bench_sliding_window, issue 25): with every convolution on oneDNN a
                # single window costs no more time per window than a batch on the CPU, and
                # holds a batch-size share of the activations
                self.batch_size = 1

    def _prepare(self, windows: Tensor) -> Tensor:
        x = windows if self.transform is None else self.transform(windows)
        x = x.to(torch.float32)
        pad = []
        for have, want in zip(reversed(x.shape[2:]), reversed(self.config.window), strict=True):
            diff = want - have
            pad += [diff // 2, diff - diff // 2]
        if any(pad):
            x = torch.nn.functional.pad(x, pad, value=self.config.pad_value)
        return x

    def _forward(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        if self.config.channels_last:
            x = x.contiguous(memory_format=_channels_last(x.dim() - 2))
        use_autocast = self.config.autocast and self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16,
                                                    enabled=use_autocast):
            y = self.network(x)
        # a channels-last output is blended as it is (converting it costs a pass per batch)
        return y.float() if self.device.type == "cpu" else y.float().contiguous()

    def __call__(self, windows: Tensor) -> Iterator[Tensor]:
        """Predictions for a batch of raw windows (all of one shape), at full window size, in
        chunks of at most ``batch_size`` windows, each yielded as soon as it is computed.

        Windows are short only along axes where the image is smaller than the window; there is a
        single window position on such an axis, so every window of a batch is cut alike.
        """
        position = 0
        while position < len(windows):
            chunk = windows[position:position + self.batch_size]
            try:
                result = self._forward(self._prepare(chunk))
            except torch.cuda.OutOfMemoryError:
                self._shrink()
                continue
            position += len(chunk)
            yield result
            del result

    def _shrink(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            self._note(f"out of memory on {self.device}: batch size reduced to "
                       f"{self.batch_size}")
        elif self.device.type != "cpu":
            self._note(f"out of memory on {self.device} even with one window: continuing on "
                       "the CPU (slower)")
            self.device = torch.device("cpu")
            if isinstance(self.network, torch.nn.Module):
                self.network.to("cpu")
        else:
            raise MemoryError("out of memory on the CPU with a single window; use a smaller "
                              "window")

    def _note(self, text: str) -> None:
        log.warning(text)
        self.notes.append(text)
