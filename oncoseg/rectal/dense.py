"""Every voxel's tumour probability: each voxel gets what the network gives its own patch.

For the dense-exact network (``RectalPatchCNN``) the dense form gives each voxel exactly what
the patch classifier gives its 21 x 21 patch (``RectalPatchCNN.dense``), so a whole slice costs
one pass instead of one pass per voxel. Slices go through in small batches, which bounds memory
and keeps each intermediate map in memory malloc reuses: the widest holds 256 channels at the
slice size plus the patch margin.

The paper's network (``RectalPaperCNN``, 'full' padding) has no such form: as the paper does,
"for each voxel v we (1) extracted a fixed-size patch surrounding v, (2) classified the patch
via a trained instance of the CNN, (3) collected the resulting probability, and (4) assigned
the resulting probability to v". The patches are strided views of the zero-padded slice
(``Tensor.unfold``, no copy) classified in batches of a few hundred voxels, so memory stays
bounded whatever the volume.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from oncoseg.device import heap_batch, runs_on_cpu
from oncoseg.geometry import arrays_onto
from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.rectal.network import RectalPaperCNN, RectalPatchCNN
from oncoseg.rectal.spacing import in_plane_grid

# Bytes per slice pixel of the dense pass's widest intermediate map (fc1's 256 channels,
# float32), counted on the slice with its patch margin.
_WIDEST_BYTES_PER_PIXEL = 256 * 4
# A GPU's caching allocator keeps its blocks: there, batches are as large as a memory budget
# allows (fewer kernel launches), as before on every device; on the CPU they keep the widest
# map in one of malloc's heap blocks (oncoseg.device.heap_batch: 0.53 -> 0.38 s for the rectal
# phantom's dense pass, 56-59 % -> about 80 % of the machine's convolution peak).
_GPU_SLICES_BYTES = 512 * 2**20  # the dense pass's budget
_GPU_PATCHES_BYTES = 256 * 2**20  # the paper network's per-voxel budget


def slices_per_batch(height: int, width: int, device: str = "cpu") -> int:
    """How many slices go through together (at least one): on the CPU as many as keep the
    widest map in one of malloc's heap blocks; elsewhere as many as fit the memory budget."""
    margin = 20  # the patch margin around a padded slice
    per_slice = (height + margin) * (width + margin) * _WIDEST_BYTES_PER_PIXEL
    if runs_on_cpu(device):
        return heap_batch(per_slice)
    return max(1, _GPU_SLICES_BYTES // (2 * per_slice))  # the widest map and its layer's input


# Bytes per voxel of the paper network's widest map in its per-patch pass (conv2's float32
# output, 48 x 29 x 29), and of all its maps alive together (conv2's and conv1's outputs, each
# before and after the activation, and the copied patch).
_PAPER_WIDEST_BYTES_PER_VOXEL = 48 * 29 * 29 * 4
_PAPER_BYTES_PER_VOXEL = (2 * 48 * 29 * 29 + 2 * 24 * 25 * 25 + 3 * 21 * 21) * 4


def voxels_per_batch(device: str = "cpu") -> int:
    """How many voxels' patches the paper network classifies together: on the CPU as many as
    keep its widest map in one of malloc's heap blocks (207; 3 x 3 x 80 x 80 voxels in 8.7 s,
    against 12.6 s in batches of 598, the memory budget it had before; dev CPU); elsewhere as
    many as fit the memory budget (598)."""
    if runs_on_cpu(device):
        return heap_batch(_PAPER_WIDEST_BYTES_PER_VOXEL)
    return max(1, _GPU_PATCHES_BYTES // _PAPER_BYTES_PER_VOXEL)


def probability_map(network: RectalPatchCNN | RectalPaperCNN, channels: np.ndarray,
                    device: str = "cpu", batch: int | None = None,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> np.ndarray:
    """Tumour probability (z, y, x) float32 for standardised channels (C, z, y, x); ``batch``
    counts slices for the dense network and voxels for the paper's."""
    if isinstance(network, RectalPaperCNN):
        return patch_probability_map(network, channels, device, batch, progress, cancel)
    return dense_probability_map(network, channels, device, batch, progress, cancel)


def probability_on(network: RectalPatchCNN | RectalPaperCNN, channels: np.ndarray,
                   reference: sitk.Image, in_plane_mm: float | None, device: str = "cpu",
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> np.ndarray:
    """Tumour probability on ``reference``'s grid (the b0's, where ``channels`` lie) with the
    network reading them at ``in_plane_mm`` in-plane (None: as they lie;
    :mod:`oncoseg.rectal.spacing`)."""
    grid = in_plane_grid(reference, in_plane_mm)
    if grid is None:
        return probability_map(network, channels, device, progress=progress, cancel=cancel)
    read = probability_map(network, arrays_onto(channels, reference, grid), device,
                           progress=progress, cancel=cancel)
    return np.clip(arrays_onto(read, grid, reference), 0.0, 1.0)


@torch.inference_mode()
def patch_probability_map(network: RectalPaperCNN, channels: np.ndarray, device: str = "cpu",
                          batch: int | None = None, progress: ProgressCallback | None = None,
                          cancel: CancelToken | None = None) -> np.ndarray:
    """Each voxel's probability from its own in-plane patch (zeros beyond the image, as
    :func:`oncoseg.rectal.sampling.extract_patches` pads in training), batch by batch."""
    network.eval().to(memory_format=torch.channels_last)
    _, depth, height, width = channels.shape
    size = network.patch_size
    half = size // 2
    batch = batch or voxels_per_batch(device)
    output = np.empty((depth, height, width), np.float32)
    total = depth * height * width
    done = 0
    for z in range(depth):
        check_cancelled(cancel)
        plane = torch.from_numpy(np.ascontiguousarray(channels[:, z]))
        padded = torch.nn.functional.pad(plane, (half, half, half, half))
        # (C, H, W, M, M) view: the patch around every voxel of the slice, nothing copied
        windows = padded.unfold(1, size, 1).unfold(2, size, 1)
        windows = windows.permute(1, 2, 0, 3, 4).reshape(height * width, -1, size, size)
        flat = output[z].reshape(-1)
        for start in range(0, height * width, batch):
            check_cancelled(cancel)
            stop = min(height * width, start + batch)
            patches = windows[start:stop].to(device).contiguous(
                memory_format=torch.channels_last)
            flat[start:stop] = torch.softmax(network(patches), dim=1)[:, 1].float().cpu().numpy()
            done += stop - start
            report(progress, "Segmenting", done, total,
                   message=f"slice {z + 1} of {depth}, voxel {stop} of {height * width}")
    return output


@torch.inference_mode()
def dense_probability_map(network: RectalPatchCNN, channels: np.ndarray, device: str = "cpu",
                          batch: int | None = None, progress: ProgressCallback | None = None,
                          cancel: CancelToken | None = None) -> np.ndarray:
    """Tumour probability (z, y, x) float32 with the dense network's whole-slice form."""
    # channels-last: oneDNN's fastest layout for these (dilated) convolutions, about 1.3-1.6x
    # faster than the default layout on the development CPU
    network.eval().to(memory_format=torch.channels_last)
    _, depth, height, width = channels.shape
    batch = batch or slices_per_batch(height, width, device)
    output = np.empty((depth, height, width), np.float32)
    slices = torch.from_numpy(np.ascontiguousarray(channels.transpose(1, 0, 2, 3)))
    for start in range(0, depth, batch):
        check_cancelled(cancel)
        stop = min(depth, start + batch)
        chunk = slices[start:stop].to(device).contiguous(memory_format=torch.channels_last)
        logits = network.dense(chunk)
        output[start:stop] = torch.softmax(logits, dim=1)[:, 1].float().cpu().numpy()
        report(progress, "Segmenting", stop, depth, message=f"slice {stop} of {depth}")
    return output
