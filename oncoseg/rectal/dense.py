"""Every voxel's tumour probability, computed slice by slice with the network's dense form.

The dense form gives each voxel exactly what the patch classifier gives its 21 x 21 patch
(``RectalPatchCNN.dense``), so a whole slice costs one pass instead of one pass per voxel.
Slices go through in small batches to bound memory: the widest intermediate map holds 256
channels at the slice size plus the patch margin.
"""

from __future__ import annotations

import numpy as np
import torch

from oncoseg.progress import CancelToken, ProgressCallback, check_cancelled, report
from oncoseg.rectal.network import RectalPatchCNN

# Bytes per slice pixel of the dense pass's largest intermediate maps (fc1's 256 channels,
# float32, input and output of the layer alive together).
_BYTES_PER_PIXEL = 2 * 256 * 4


def slices_per_batch(height: int, width: int, budget_bytes: int = 512 * 2**20) -> int:
    """How many slices fit the memory budget together (at least one)."""
    margin = 20  # the patch margin around a padded slice
    per_slice = (height + margin) * (width + margin) * _BYTES_PER_PIXEL
    return max(1, budget_bytes // per_slice)


@torch.inference_mode()
def probability_map(network: RectalPatchCNN, channels: np.ndarray, device: str = "cpu",
                    batch: int | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> np.ndarray:
    """Tumour probability (z, y, x) float32 for standardised channels (C, z, y, x)."""
    # channels-last: oneDNN's fastest layout for these (dilated) convolutions, about 1.3-1.6x
    # faster than the default layout on the development CPU
    network.eval().to(memory_format=torch.channels_last)
    _, depth, height, width = channels.shape
    batch = batch or slices_per_batch(height, width)
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
