"""Paper 004's networks: the 2D model with modality-specific subnetworks, the 2D-3D model, and
the ensemble that holds three 2D models (axial, coronal, sagittal) and n 2D-3D models.

2D model (section 2.2, Fig. 6): K + 1 subnetworks (one per MR sequence, one on all sequences
together) whose final feature maps are concatenated and fed to a U-Net-like main network
(convolutions and max-poolings down, bilinear upsampling, convolutions and concatenations up);
batch normalisation in every convolution except the classification layers. Each subnetwork has
an auxiliary classification layer used only in training. Subnetworks are reduced U-Nets (2D
model 1) or three convolutional layers (2D model 2). A sequence that is absent (at inference,
or left out in training) has its subnetwork's features set to zero and its channel zeroed in
the joint subnetwork's input.

2D-3D model (section 2.1, Figs. 4 and 9): a 3D U-Net-like network (instance norm, see
:func:`conv_block`) whose extra input channels are the three 2D models' last-layer outputs
(no softmax), imported at the first layer (model A) or before the final convolutions (model
B); without them it is the standard 3D model the paper compares with. The decoders upsample
to the size of the skip connection, so any patch size (the paper's 70^3) works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oncoseg.brain.config import IMPORTS, ORIENTATIONS, SUBNETWORKS
from oncoseg.modelfile import register_architecture

CLASSES = 4


def conv_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    """Convolution, normalisation, ReLU. 2D: batch norm, as the paper's 2D model. 3D: the
    paper uses none; trained on one or two 70^3 patches per batch, batch statistics are those
    of a single patch and differ from the running ones used at inference, so the 3D blocks use
    instance normalisation (affine), which behaves the same in training and inference
    (nnU-Net's choice for small 3D batches)."""
    if dims == 2:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False),
                         nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True))


def double_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_block(dims, cin, cout), conv_block(dims, cout, cout))


def upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=like.shape[2:], mode=mode, align_corners=False)


class UNetBody(nn.Module):
    """Down: double convolution + max-pooling per level; up: upsampling to the skip's size,
    concatenation, double convolution. Output: ``width`` feature maps at full resolution."""

    def __init__(self, dims: int, cin: int, width: int, levels: int):
        super().__init__()
        widths = [width * 2**i for i in range(levels + 1)]
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.down = nn.ModuleList([double_block(dims, cin, widths[0])] + [
            double_block(dims, widths[i], widths[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([double_block(dims, widths[i] + widths[i + 1], widths[i])
                                 for i in reversed(range(levels))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(torch.cat([skip, upsample_to(x, skip)], dim=1))
        return x


class ShallowSubnetwork(nn.Sequential):
    """2D model 2's subnetwork: three convolutional layers."""

    def __init__(self, cin: int, width: int):
        super().__init__(conv_block(2, cin, width), conv_block(2, width, width),
                         conv_block(2, width, width))


def subnetwork(kind: str, cin: int, width: int) -> nn.Module:
    """2D model 1's subnetworks are reduced U-Nets (one pooling level), its first layer
    concatenated with the upsampled deeper layer."""
    return UNetBody(2, cin, width, levels=1) if kind == "unet" else ShallowSubnetwork(cin, width)


class Brain2D(nn.Module):
    def __init__(self, sequences: int = 4, width: int = 16, subnetwork_kind: str = "unet",
                 levels: int = 3, classes: int = CLASSES):
        super().__init__()
        if subnetwork_kind not in SUBNETWORKS:
            raise ValueError(f"subnetwork must be one of {SUBNETWORKS}")
        self.sequences, self.levels = sequences, levels
        self.subnetworks = nn.ModuleList(
            [subnetwork(subnetwork_kind, 1, width) for _ in range(sequences)]
            + [subnetwork(subnetwork_kind, sequences, width)])
        self.auxiliary = nn.ModuleList([nn.Conv2d(width, classes, 1)
                                        for _ in range(sequences + 1)])
        self.main = UNetBody(2, (sequences + 1) * width, 2 * width, levels)
        self.head = nn.Conv2d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                auxiliary: bool = False):
        """``x`` (B, K, H, W); ``present`` (B, K) or (K,) booleans, absent sequences' inputs
        are already zero. Returns the class scores (B, C, H, W), and with ``auxiliary`` the
        subnetworks' scores too."""
        b = x.shape[0]
        mask = torch.ones((b, self.sequences), dtype=x.dtype, device=x.device) \
            if present is None else present.to(x.dtype).expand(b, self.sequences)
        x = x * mask[:, :, None, None]
        features = [self.subnetworks[k](x[:, k:k + 1]) * mask[:, k, None, None, None]
                    for k in range(self.sequences)]
        features.append(self.subnetworks[-1](x))
        scores = self.head(self.main(torch.cat(features, dim=1)))
        if not auxiliary:
            return scores
        return scores, [aux(f) for aux, f in zip(self.auxiliary, features, strict=True)]


class Brain3D(nn.Module):
    """The 2D-3D model: ``import_at`` 'first' (model A), 'final' (model B) or 'none' (the
    standard 3D model)."""

    def __init__(self, sequences: int = 4, features: int = 3 * CLASSES, width: int = 16,
                 levels: int = 2, import_at: str = "first", classes: int = CLASSES):
        super().__init__()
        if import_at not in IMPORTS:
            raise ValueError(f"import_at must be one of {IMPORTS}")
        self.import_at = import_at
        self.features = 0 if import_at == "none" else features
        first = sequences + (self.features if import_at == "first" else 0)
        self.body = UNetBody(3, first, width, levels)
        final_in = width + (self.features if import_at == "final" else 0)
        self.final = double_block(3, final_in, width)
        self.head = nn.Conv3d(width, classes, 1)

    def forward(self, image: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.import_at != "none" and features is None:
            raise ValueError("this 2D-3D model needs the 2D models' features")
        x = torch.cat([image, features], 1) if self.import_at == "first" else image
        x = self.body(x)
        if self.import_at == "final":
            x = torch.cat([x, features], 1)
        return self.head(self.final(x))


class BrainEnsemble(nn.Module):
    """Three 2D models (one per orientation) and the 2D-3D members their features feed."""

    def __init__(self, sequences: int, width_2d: int, subnetwork_kind: str, levels_2d: int,
                 members: list[dict]):
        super().__init__()
        self.nets2d = nn.ModuleDict({o: Brain2D(sequences, width_2d, subnetwork_kind, levels_2d)
                                     for o in ORIENTATIONS})
        self.nets3d = nn.ModuleList([Brain3D(sequences, len(ORIENTATIONS) * CLASSES, **m)
                                     for m in members])


@register_architecture("brain-2d")
def brain_2d(sequences: int = 4, width: int = 16, subnetwork_kind: str = "unet",
             levels: int = 3) -> Brain2D:
    return Brain2D(sequences, width, subnetwork_kind, levels)


@register_architecture("brain-3d")
def brain_3d(sequences: int = 4, width: int = 16, levels: int = 2,
             import_at: str = "first") -> Brain3D:
    return Brain3D(sequences, len(ORIENTATIONS) * CLASSES, width, levels, import_at)


@register_architecture("brain-ensemble")
def brain_ensemble(sequences: int = 4, width_2d: int = 16, subnetwork_kind: str = "unet",
                   levels_2d: int = 3, members: list | None = None) -> BrainEnsemble:
    members = members or [{"width": 16, "levels": 2, "import_at": "first"}]
    return BrainEnsemble(sequences, width_2d, subnetwork_kind, levels_2d, list(members))
