"""The staging networks of paper 002: ResNet-18 with 32 first-layer filters, every mixture of 2D
and 3D convolutions of its Table 2, slice-wise scores and a depth aggregation.

Every convolution is a ``Conv3d`` on (B, C, D, H, W); a "2D" one has a 1 x k x k kernel, so it
sees one slice (and has exactly the parameters of a 2D convolution). Nothing strides along
depth: the extractor maps a volume to D slice features of 256 channels, one shared linear layer
maps each to a slice score, and the aggregation turns the D features into one volume feature
for the volume score.

Layers are numbered as in the paper: 1 is the stem (7 x 7 convolution), 2-5 the four residual
stages. f-MCx is 3D in layers 1..x-1 and 2D from x; f-rMCx is 2D in layers 1..x-1 and 3D from
x; f-R(2+1)D factorises every 3D convolution into a spatial and a depth one (Tran et al. 2018,
with their rule for the intermediate width, so that it matches the 3D parameter count).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from oncoseg.modelfile import register_architecture
from oncoseg.staging.losses import CenterLoss

LAYERS = 5


def layer_kinds(variant: str) -> list[str]:
    """'2d', '3d' or '2+1d' for layers 1..5 of a Table 2 variant."""
    fixed = {"f-R2D": "2d", "f-R3D": "3d", "f-R(2+1)D": "2+1d"}
    if variant in fixed:
        return [fixed[variant]] * LAYERS
    match = re.fullmatch(r"f-(r?)MC([2-5])", variant)
    if not match:
        raise ValueError(f"unknown staging variant '{variant}'")
    reverse, x = match.group(1) == "r", int(match.group(2))
    early, late = ("2d", "3d") if reverse else ("3d", "2d")
    return [early if layer < x else late for layer in range(1, LAYERS + 1)]


def conv(kind: str, cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    """A k x k convolution over each slice (2d), over neighbouring slices too (3d), or the
    factorised pair (2+1d); stride only in-plane."""
    pad = kernel // 2
    if kind == "2d":
        return nn.Conv3d(cin, cout, (1, kernel, kernel), (1, stride, stride), (0, pad, pad),
                         bias=False)
    if kind == "3d":
        return nn.Conv3d(cin, cout, (3, kernel, kernel), (1, stride, stride), (1, pad, pad),
                         bias=False)
    middle = (3 * kernel * kernel * cin * cout) // (kernel * kernel * cin + 3 * cout)
    return nn.Sequential(
        nn.Conv3d(cin, middle, (1, kernel, kernel), (1, stride, stride), (0, pad, pad),
                  bias=False),
        nn.BatchNorm3d(middle), nn.ReLU(inplace=True),
        nn.Conv3d(middle, cout, (3, 1, 1), 1, (1, 0, 0), bias=False))


class BasicBlock(nn.Module):
    def __init__(self, kind: str, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv(kind, cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = conv(kind, cout, cout, 3)
        self.bn2 = nn.BatchNorm3d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x if self.shortcut is None else self.shortcut(x)  # out is fresh: in place
        return F.relu(out, inplace=True)


def aggregate(features: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, D) slice features to (B, C') volume features, without parameters."""
    if how == "average":
        return features.mean(dim=2)
    if how == "max":
        return features.amax(dim=2)
    if how == "attention":  # softmax over depth per channel, the features weigh themselves
        return (torch.softmax(features, dim=2) * features).sum(dim=2)
    if how == "bilinear":
        outer = torch.einsum("bcd,bed->bce", features, features) / features.shape[2]
        signed = torch.sign(outer) * torch.sqrt(outer.abs() + 1e-10)
        return F.normalize(signed.flatten(1), dim=1)
    raise ValueError(f"unknown depth aggregation '{how}'")


class StagingNet(nn.Module):
    def __init__(self, variant: str = "f-rMC5", aggregation: str = "bilinear",
                 filters: int = 32, in_channels: int = 1, centres: bool = False):
        super().__init__()
        kinds = layer_kinds(variant)
        self.aggregation = aggregation
        self.stem = nn.Sequential(conv(kinds[0], in_channels, filters, 7, stride=2),
                                  nn.BatchNorm3d(filters), nn.ReLU(inplace=True))
        widths = [filters, 2 * filters, 4 * filters, 8 * filters]
        stages, cin = [], filters
        for index, (kind, width) in enumerate(zip(kinds[1:], widths, strict=True)):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(kind, cin, width, stride),
                                        BasicBlock(kind, width, width)))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.features = cin
        self.slice_fc = nn.Linear(cin, 1)  # shared by every slice
        # bilinear features are C x C wide: the only aggregation with its own classifier
        self.volume_fc = nn.Linear(cin * cin, 1) if aggregation == "bilinear" else None
        # center loss (training only): the two stages' centres in volume-feature space
        width = cin * cin if aggregation == "bilinear" else cin
        self.centre_loss = CenterLoss(2, width) if centres else None

    def slice_features(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) to (B, C, D): in-plane pooled features of each slice."""
        x = F.max_pool3d(self.stem(volume), (1, 3, 3), (1, 2, 2), (0, 1, 1))
        return self.stages(x).mean(dim=(3, 4))

    def forward(self, volume: torch.Tensor) -> dict[str, torch.Tensor]:
        """Slice logits (B, D), the volume logit (B,) and the volume feature (B, C')."""
        features = self.slice_features(volume)
        slice_logits = self.slice_fc(features.transpose(1, 2))[..., 0]
        pooled = aggregate(features, self.aggregation)
        head = self.volume_fc if self.volume_fc is not None else self.slice_fc
        return {"slice_logits": slice_logits, "volume_logit": head(pooled)[:, 0],
                "volume_features": pooled}

    def paper_parameter_count(self) -> int:
        """Extractor + shared slice classifier: what Table 2's "# params" counts."""
        extra = [m for m in (self.volume_fc, self.centre_loss) if m is not None]
        return sum(p.numel() for p in self.parameters()) - \
            sum(p.numel() for m in extra for p in m.parameters())


@register_architecture("staging-resnet18")
def staging_resnet18(variant: str = "f-rMC5", aggregation: str = "bilinear", filters: int = 32,
                     in_channels: int = 1, centres: bool = False) -> StagingNet:
    return StagingNet(variant, aggregation, filters, in_channels, centres)
