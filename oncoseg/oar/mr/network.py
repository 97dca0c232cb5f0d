"""The GI-tract network of paper 001: an FCN on a ResNet-50 backbone.

Equivalent to torchvision's ``fcn_resnet50(weights=None, weights_backbone=None)`` (same
layers, output stride 8 through dilation in the last two stages, the same 3 x 3 FCN head and
bilinear upsampling), written here because torchvision's wheels for the CPU build of torch this
project pins do not load. The input channels are one slice (the paper's input) or adjacent
slices (the 2.5D stack, ``context`` > 0); the outputs are one logit map per organ (multi-label,
sigmoid).

``width`` scales every stage (64 is ResNet-50; the CPU-trained demo model uses a narrower one and
says so in its metadata). ``gate`` adds the paper's optional first stage: a slice classifier on
the pooled backbone features whose per-organ logits decide whether that organ is segmented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oncoseg.modelfile import register_architecture


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        out += identity  # out is fresh: in place spares a map's allocation (as torchvision)
        return F.relu(out, inplace=True)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to its last stage; strides of stages 3 and 4 replaced by dilation."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, 3)
        self.layer2 = self._stage(2 * width, 4, stride=2)
        self.layer3 = self._stage(4 * width, 6, stride=2, dilate=True)
        self.layer4 = self._stage(8 * width, 3, stride=2, dilate=True)
        self.out_channels = 8 * width * Bottleneck.expansion

    def _stage(self, planes: int, blocks: int, stride: int = 1,
               dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x)), inplace=True), 3, stride=2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class FCNResNet50(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = 3, width: int = 64,
                 gate: bool = False):
        super().__init__()
        self.backbone = ResNet50Backbone(in_channels, width)
        features, inner = self.backbone.out_channels, self.backbone.out_channels // 4
        self.classifier = nn.Sequential(
            nn.Conv2d(features, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Conv2d(inner, classes, 1))
        self.gate = nn.Linear(features, classes) if gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, classes, H, W) for slice stacks (B, in_channels, H, W); with a gate,
        also the per-organ presence logits (B, classes)."""
        features = self.backbone(x)
        logits = F.interpolate(self.classifier(features), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        if self.gate is None:
            return logits
        return logits, self.gate(features.mean(dim=(2, 3)))


@register_architecture("fcn-resnet50")
def fcn_resnet50(in_channels: int = 3, classes: int = 3, width: int = 64,
                 gate: bool = False) -> FCNResNet50:
    return FCNResNet50(in_channels, classes, width, gate)
