"""The pelvic OAR network: a memory-lean 3D fully convolutional encoder-decoder.

Paper 003 uses a fully convolutional 3D network with softmax outputs over the organs plus
background, trained on 136 x 136 x 72 patches. OncoSeg's version is a U-Net of four levels with
few channels (16-32-64-128 by default), instance normalisation (batches of one or two patches
are the norm on a GPU with 3D patches this size) and LeakyReLU; anisotropic first poolings
keep through-plane resolution where CT slices are thick. Any input whose size is divisible by
the total pooling factor works, so sliding-window inference can use the training patch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from oncoseg.modelfile import register_architecture


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class OarUNet3D(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 6,
                 filters: Sequence[int] = (16, 32, 64, 128),
                 pools: Sequence[Sequence[int]] = ((2, 2, 2), (2, 2, 2), (2, 2, 2))):
        super().__init__()
        if len(pools) != len(filters) - 1:
            raise ValueError("one pooling per level below the first")
        self.pools = [tuple(int(v) for v in p) for p in pools]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for f in filters:
            self.encoders.append(_block(channels, f))
            channels = f
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(filters) - 1, 0, -1):
            pool = self.pools[level - 1]
            self.ups.append(nn.ConvTranspose3d(filters[level], filters[level - 1], pool,
                                               stride=pool))
            self.decoders.append(_block(2 * filters[level - 1], filters[level - 1]))
        self.head = nn.Conv3d(filters[0], classes, 1)

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Each input size (z, y, x) must be a multiple of this."""
        total = [1, 1, 1]
        for pool in self.pools:
            total = [t * p for t, p in zip(total, pool, strict=True)]
        return tuple(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, z, y, x) for a (B, 1, z, y, x) windowed CT."""
        skips = []
        for index, encoder in enumerate(self.encoders):
            x = encoder(x)
            if index < len(self.pools):
                skips.append(x)
                x = nn.functional.max_pool3d(x, self.pools[index])
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@register_architecture("oar-ct-unet3d")
def oar_ct_unet3d(in_channels: int = 1, classes: int = 6,
                  filters: Sequence[int] = (16, 32, 64, 128),
                  pools: Sequence[Sequence[int]] = ((2, 2, 2), (2, 2, 2), (2, 2, 2))
                  ) -> OarUNet3D:
    return OarUNet3D(in_channels, classes, filters, pools)
