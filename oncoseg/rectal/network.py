"""The RectalSeg voxel classifier and its exact dense (fully convolutional) form.

The paper classifies each voxel from the in-plane 21 x 21 patch around it with a 9-layer CNN
(conv, conv, max-pool; conv, max-pool; conv, max-pool; two fully connected layers; 24-48-96-192
filters; LeakyReLU; dropout 1/3 after pooling, 1/2 after the hidden fully connected layer).
It pads each convolution with zeros ('full' padding), which makes a voxel's result depend on
the zeros around its own patch: no dense evaluation of the whole slice can reproduce that, and
classifying every voxel's patch separately is hundreds of times slower.

OncoSeg therefore keeps the patch and makes the receptive field exactly the patch, with valid
(unpadded) convolutions: conv 3x3 -> 19, conv 3x3 -> 17, max-pool 3/2 -> 8, conv 3x3 -> 6,
max-pool 2/2 -> 3, conv 3x3 -> 1 x 1 x 192, fully connected, fully connected. A 21 x 21 patch
has room for two stride-2 poolings without padding, not three; the paper's third pooling is the
one deviation (it existed only because padding grew the maps). The same weights then run
densely ("a trous"): poolings with stride 1 and the layers after them dilated by 2 and 4, which
gives, for every voxel of a slice, exactly what the patch classifier gives for its patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oncoseg.modelfile import register_architecture

# (kind, kernel, stride) for the patch network; convolutions are valid (no padding)
LAYOUT = (("conv", 3, 1), ("conv", 3, 1), ("pool", 3, 2), ("conv", 3, 1), ("pool", 2, 2),
          ("conv", 3, 1))


def output_size(patch_size: int) -> int:
    size = patch_size
    for _, kernel, stride in LAYOUT:
        size = (size - kernel) // stride + 1
    return size


class RectalPatchCNN(nn.Module):
    def __init__(self, in_channels: int = 3, patch_size: int = 21,
                 filters: tuple[int, ...] = (24, 48, 96, 192), hidden: int = 256,
                 classes: int = 2, negative_slope: float = 0.01):
        super().__init__()
        if output_size(patch_size) != 1 or (patch_size - 3) % 2 or patch_size < 21:
            raise ValueError(f"patch size {patch_size}: the network's receptive field is "
                             "21 x 21 (valid convolutions and two stride-2 poolings)")
        if len(filters) != 4:
            raise ValueError("four convolution layers: give four filter counts")
        self.patch_size = patch_size
        self.slope = negative_slope
        channels = (in_channels, *filters)
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 3)
                                   for i in range(4))
        self.pool_dropout = nn.Dropout(1 / 3)
        self.fc_dropout = nn.Dropout(1 / 2)
        self.fc1 = nn.Linear(filters[-1], hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) for patches (B, C, 21, 21)."""
        x = self._act(self.convs[0](patches))
        x = self._act(self.convs[1](x))
        x = self.pool_dropout(F.max_pool2d(x, 3, stride=2))
        x = self._act(self.convs[2](x))
        x = self.pool_dropout(F.max_pool2d(x, 2, stride=2))
        x = self._act(self.convs[3](x))
        x = self.fc_dropout(self._act(self.fc1(x.flatten(1))))
        return self.fc2(x)

    def dense(self, slices: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, H, W) for whole slices (B, C, H, W): voxel (y, x) gets the
        result of its own patch (zeros beyond the slice, as patch extraction pads)."""
        half = self.patch_size // 2
        x = F.pad(slices, (half, half, half, half))
        x = self._act(self.convs[0](x))
        x = self._act(self.convs[1](x))
        x = F.max_pool2d(x, 3, stride=1)
        x = self._act(F.conv2d(x, self.convs[2].weight, self.convs[2].bias, dilation=2))
        x = F.max_pool2d(x, 2, stride=1, dilation=2)
        x = self._act(F.conv2d(x, self.convs[3].weight, self.convs[3].bias, dilation=4))
        x = self._act(F.conv2d(x, self.fc1.weight[:, :, None, None], self.fc1.bias))
        return F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)


@register_architecture("rectal-patch-cnn")
def rectal_patch_cnn(in_channels: int = 3, patch_size: int = 21,
                     filters: tuple[int, ...] = (24, 48, 96, 192), hidden: int = 256,
                     classes: int = 2) -> RectalPatchCNN:
    return RectalPatchCNN(in_channels, patch_size, tuple(filters), hidden, classes)
