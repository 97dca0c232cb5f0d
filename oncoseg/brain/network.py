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

2D-3D model (section 2.1, Figs. 4 and 9): a 3D U-Net-like network whose extra input channels
are the three 2D models' last-layer outputs (no softmax), imported at the first layer (model
A), before the final convolutions (model B), or into the second of two streams (model C: one
stream processes only the 3D patch, the other the patch with the 2D features; their outputs
are concatenated before the final convolutions); without them it is the standard 3D model the
paper compares with. The paper's 3D networks have no normalisation layer; ``norm`` may add
instance or batch normalisation (:func:`conv_block`). The decoders upsample to the size of the
skip connection, so any patch size (the paper's 70^3) works.

An ensemble holds, per 2D model kind (2D model 1 'unet', 2D model 2 'shallow'), the three
orientations' 2D models, and 2D-3D members that each read the features of one kind. Files
written before both kinds existed hold one kind (``subnetwork_kind``, tensors ``nets2d.axial``)
and members with instance norm; they load as they were trained.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from oncoseg.brain.config import IMPORTS, NORMS, ORIENTATIONS, SUBNETWORKS
from oncoseg.modelfile import register_architecture
from oncoseg.upsampling import beside_upsampled

# One call in a traced graph (its fast path is chosen on the tensors' properties, which a trace
# cannot see): the prepared copy's decoders then convolve the skip and the upsampled map without
# joining them (oncoseg.network_fusion.ConcatenatedConv).
torch.fx.wrap("beside_upsampled")

CLASSES = 4


def conv_block(dims: int, cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    """Convolution, normalisation, ReLU. The paper's 2D model uses batch norm in every
    convolution but the classification layers (section 2.2); its 3D networks use none
    (section 2.1: the normalised-gradient training converges without). ``norm``: 'batch',
    'instance' (affine: behaves the same in training and inference, nnU-Net's choice for
    one-patch 3D batches, and the brain demo model's) or 'none' (the convolution then has a
    bias, which a following normalisation would cancel)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}")
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, 3, padding=1,
                                                  bias=norm == "none")
    layers: list[nn.Module] = [conv]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout) if dims == 2 else nn.BatchNorm3d(cout))
    elif norm == "instance":
        layers.append(nn.InstanceNorm2d(cout, affine=True) if dims == 2 else
                      nn.InstanceNorm3d(cout, affine=True))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


def double_block(dims: int, cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(conv_block(dims, cin, cout, norm), conv_block(dims, cout, cout, norm))


class UNetBody(nn.Module):
    """Down: double convolution + max-pooling per level; up: upsampling to the skip's size,
    concatenation, double convolution. Output: ``width`` feature maps at full resolution."""

    def __init__(self, dims: int, cin: int, width: int, levels: int, norm: str = "batch"):
        super().__init__()
        widths = [width * 2**i for i in range(levels + 1)]
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.down = nn.ModuleList([double_block(dims, cin, widths[0], norm)] + [
            double_block(dims, widths[i], widths[i + 1], norm) for i in range(levels)])
        self.up = nn.ModuleList([double_block(dims, widths[i] + widths[i + 1], widths[i], norm)
                                 for i in reversed(range(levels))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = block(beside_upsampled(skip, x))
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

    def load_subnetwork(self, index: int, pretrained: SubnetworkPretraining) -> None:
        """Start subnetwork ``index`` (a sequence's) and its auxiliary layer from pretrained
        weights; the whole 2D model then trains on, as the paper's main part does."""
        self.subnetworks[index].load_state_dict(pretrained.subnetwork.state_dict())
        self.auxiliary[index].load_state_dict(pretrained.auxiliary.state_dict())


class Brain3D(nn.Module):
    """The 2D-3D model: ``import_at`` 'first' (model A), 'final' (model B), 'streams' (model
    C) or 'none' (the standard 3D model). Model C's figure (Fig. 9, bottom right) is described
    in the text only as "two streams, one processing only the 3D image patch and the other
    stream taking also the 2D features as input": here both streams are this U-Net body, and
    their last layers are concatenated before the final convolutions (as model B imports)."""

    def __init__(self, sequences: int = 4, features: int = 3 * CLASSES, width: int = 16,
                 levels: int = 2, import_at: str = "first", classes: int = CLASSES,
                 norm: str = "none"):
        super().__init__()
        if import_at not in IMPORTS:
            raise ValueError(f"import_at must be one of {IMPORTS}")
        self.import_at, self.norm = import_at, norm
        self.features = 0 if import_at == "none" else features
        first = sequences + (self.features if import_at in ("first", "streams") else 0)
        self.body = UNetBody(3, first, width, levels, norm)
        final_in = width + (self.features if import_at == "final" else 0)
        if import_at == "streams":  # the stream that sees only the image
            self.image_stream = UNetBody(3, sequences, width, levels, norm)
            final_in += width
        self.final = double_block(3, final_in, width, norm)
        self.head = nn.Conv3d(width, classes, 1)

    def forward(self, image: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.import_at != "none" and features is None:
            raise ValueError("this 2D-3D model needs the 2D models' features")
        x = torch.cat([image, features], 1) if self.import_at in ("first", "streams") \
            else image
        x = self.body(x)
        if self.import_at == "final":
            x = torch.cat([x, features], 1)
        elif self.import_at == "streams":
            x = torch.cat([self.image_stream(image), x], 1)
        return self.head(self.final(x))


class SubnetworkPretraining(nn.Module):
    """One modality-specific subnetwork of a 2D model with its auxiliary classification
    layer, to be pretrained on the slices of the cases that have its sequence (section 2.2:
    "each modality-specific subnetwork can be pretrained independently of the others");
    :meth:`Brain2D.load_subnetwork` takes its weights."""

    def __init__(self, width: int = 16, subnetwork_kind: str = "unet", classes: int = CLASSES):
        super().__init__()
        if subnetwork_kind not in SUBNETWORKS:
            raise ValueError(f"subnetwork must be one of {SUBNETWORKS}")
        self.levels = 1 if subnetwork_kind == "unet" else 0
        self.subnetwork = subnetwork(subnetwork_kind, 1, width)
        self.auxiliary = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.auxiliary(self.subnetwork(x))


class BrainEnsemble(nn.Module):
    """Per 2D model kind, three 2D models (one per orientation), and the 2D-3D members their
    features feed. With ``subnetwork_kinds`` the 2D models sit under their kind
    (``nets2d.unet.axial``); without, one kind's sit directly under ``nets2d`` (files written
    before the second kind)."""

    def __init__(self, sequences: int, width_2d: int, subnetwork_kind: str, levels_2d: int,
                 members: list[dict], subnetwork_kinds: list[str] | None = None):
        super().__init__()

        def orientations(kind: str) -> nn.ModuleDict:
            return nn.ModuleDict({o: Brain2D(sequences, width_2d, kind, levels_2d)
                                  for o in ORIENTATIONS})

        self.kinds = list(subnetwork_kinds or [subnetwork_kind])
        self.nested = subnetwork_kinds is not None
        self.nets2d = nn.ModuleDict({k: orientations(k) for k in self.kinds}) if self.nested \
            else orientations(subnetwork_kind)
        nets3d = []
        for member in members:
            member = dict(member)
            kind = member.pop("features_from", self.kinds[0])
            if kind not in self.kinds:
                raise ValueError(f"a member reads 2D model '{kind}', which the ensemble lacks")
            net = Brain3D(sequences, len(ORIENTATIONS) * CLASSES,
                          norm=member.pop("norm", "instance"), **member)
            net.features_from = kind
            nets3d.append(net)
        self.nets3d = nn.ModuleList(nets3d)

    def models_2d(self, kind: str) -> nn.ModuleDict:
        """The axial, coronal and sagittal 2D models of one kind."""
        return self.nets2d[kind] if self.nested else self.nets2d

    def member_name(self, index: int) -> str:
        """'first' in a one-kind ensemble (as before); 'first:shallow' when kinds mix."""
        net = self.nets3d[index]
        return net.import_at if len(self.kinds) == 1 else f"{net.import_at}:{net.features_from}"


@register_architecture("brain-2d")
def brain_2d(sequences: int = 4, width: int = 16, subnetwork_kind: str = "unet",
             levels: int = 3) -> Brain2D:
    return Brain2D(sequences, width, subnetwork_kind, levels)


@register_architecture("brain-2d-subnetwork")
def brain_2d_subnetwork(width: int = 16, subnetwork_kind: str = "unet"
                        ) -> SubnetworkPretraining:
    return SubnetworkPretraining(width, subnetwork_kind)


@register_architecture("brain-3d")
def brain_3d(sequences: int = 4, width: int = 16, levels: int = 2, import_at: str = "first",
             norm: str = "instance") -> Brain3D:
    """``norm`` defaults to 'instance' for files written before it was recorded (they were
    all trained with it); training records it, 'none' by default as the paper."""
    return Brain3D(sequences, len(ORIENTATIONS) * CLASSES, width, levels, import_at, norm=norm)


@register_architecture("brain-ensemble")
def brain_ensemble(sequences: int = 4, width_2d: int = 16, subnetwork_kind: str = "unet",
                   levels_2d: int = 3, members: list | None = None,
                   subnetwork_kinds: list | None = None) -> BrainEnsemble:
    members = members or [{"width": 16, "levels": 2, "import_at": "first"}]
    return BrainEnsemble(sequences, width_2d, subnetwork_kind, levels_2d, list(members),
                         list(subnetwork_kinds) if subnetwork_kinds else None)
