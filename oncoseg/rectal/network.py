"""The RectalSeg voxel classifiers: the paper's network and a dense-exact variant.

Two networks, chosen at training with ``--set network=paper|dense`` (default dense: on phantoms
at equal budgets the paper's scored a lower DSC and took 70-140x longer, see
:mod:`oncoseg.rectal.config`); the model file names the architecture (``rectal-paper-cnn`` or
``rectal-patch-cnn``), so a model always predicts with the network it was trained as.
:class:`RectalPaperCNN` is the paper's network exactly (its docstring quotes the paper); each
voxel is classified from its own patch. The rest of this docstring describes
:class:`RectalPatchCNN`, the dense-exact variant:

The paper pads each convolution with zeros ('full' padding), which makes a voxel's result
depend on the zeros around its own patch: no dense evaluation of the whole slice can reproduce
that, and the paper network costs about 108 MFLOP per voxel against 0.55 for the dense form.

The variant keeps the 21 x 21 patch and makes the receptive field exactly the patch, with valid
(unpadded) convolutions: conv 3x3 -> 19, conv 3x3 -> 17, max-pool 3/2 -> 8, conv 3x3 -> 6,
max-pool 2/2 -> 3, conv 3x3 -> 1 x 1 x 192, fully connected, fully connected: eight layers,
all filters 3 x 3 (the paper's first two are 5 x 5), two poolings (a 21 x 21 patch has room for
two stride-2 poolings without padding, not three), the same 24-48-96-192 filters, LeakyReLU
and dropout. The same weights then run densely ("a trous"): poolings with stride 1 and the
layers after them dilated by 2 and 4, which gives, for every voxel of a slice, exactly what the
patch classifier gives for its patch.
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


def window_max(x: torch.Tensor, size: int, dilation: int) -> torch.Tensor:
    """``F.max_pool2d(x, size, stride=1, dilation=dilation)`` (no padding), computed as a
    maximum along the rows and then along the columns. Equal to the pool bit for bit (a
    maximum is exact); in inference it writes into its own buffers, and is then 1.5x faster on
    the dense pass's channels-last maps than torch's pool, which computes the indices a
    backward pass would need (14 % of the rectal dense pass, bench_network_peak, issue 25)."""
    if x.requires_grad or x.dim() != 4:
        return F.max_pool2d(x, size, stride=1, dilation=dilation)
    reach = (size - 1) * dilation
    width, height = x.shape[3] - reach, x.shape[2] - reach
    rows = torch.maximum(x[..., 0:width], x[..., dilation:dilation + width])
    for k in range(2, size):
        torch.maximum(rows, x[..., k * dilation:k * dilation + width], out=rows)
    out = torch.maximum(rows[..., 0:height, :], rows[..., dilation:dilation + height, :])
    for k in range(2, size):
        torch.maximum(out, rows[..., k * dilation:k * dilation + height, :], out=out)
    return out


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
        # in place: every input is a fresh convolution or linear output nothing else reads
        # (their backward needs their inputs, not outputs; LeakyReLU's own backward reads its
        # output, which autograd allows for a positive slope); a copy cost 21-25 % of the
        # dense pass
        return F.leaky_relu(x, self.slope, inplace=True)

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
        x = window_max(x, 3, 1)
        x = self._act(F.conv2d(x, self.convs[2].weight, self.convs[2].bias, dilation=2))
        x = window_max(x, 2, 2)
        x = self._act(F.conv2d(x, self.convs[3].weight, self.convs[3].bias, dilation=4))
        x = self._act(F.conv2d(x, self.fc1.weight[:, :, None, None], self.fc1.bias))
        return F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)


@register_architecture("rectal-patch-cnn")
def rectal_patch_cnn(in_channels: int = 3, patch_size: int = 21,
                     filters: tuple[int, ...] = (24, 48, 96, 192), hidden: int = 256,
                     classes: int = 2) -> RectalPatchCNN:
    return RectalPatchCNN(in_channels, patch_size, tuple(filters), hidden, classes)


# ---------------------------------------------------------------------------------------------
# The paper's own network (``--set network=paper``)
# ---------------------------------------------------------------------------------------------

# (kind, kernel, stride): 'full' padding (kernel - 1 zeros on each side, Lasagne's pad='full')
PAPER_LAYOUT = (("conv", 5, 1), ("conv", 5, 1), ("pool", 2, 2), ("conv", 3, 1), ("pool", 2, 2),
                ("conv", 3, 1), ("pool", 2, 2))


def paper_map_sizes(patch_size: int = 21) -> list[int]:
    """The side of every feature map of the paper's network, layer by layer (21 -> 25 -> 29 ->
    14 -> 16 -> 8 -> 10 -> 5 for the paper's patch)."""
    sizes = [patch_size]
    for kind, kernel, stride in PAPER_LAYOUT:
        size = sizes[-1]
        sizes.append(size + kernel - 1 if kind == "conv" else (size - kernel) // stride + 1)
    return sizes


class RectalPaperCNN(nn.Module):
    """Trebeschi et al. 2017's voxel classifier as its "Network Definition" describes it.

    "The network used for the classification of each patch is composed of a total of nine
    layers: two subsequent convolutional layers followed by a max pooling layer; a couple of
    smaller, subsequent convolutional layers, each followed by a max pooling layer; two fully
    connected layers at the end culminating in the output layer. [...] Dropout of 1/2 was used
    after each fully connected layers, and 1/3 after each max pooling layer. Leaky rectified
    linear unit (ReLu) was used as a nonlinearity in each layer, except in the on the output
    layer, where a softmax was used instead. Small filters of 5 x 5 or 3 x 3 are used at each
    convolutional layer, along with stride one and full padding. Stride two was used in the max
    pooling. Twenty-four features were used in the first convolutional layer, number which
    doubles in each subsequent layer (i.e. 24, 48, 96, 192), amounting for a total of 360
    filters throughout the entire network."

    Read as: conv 5x5 (24) -> conv 5x5 (48) -> max-pool -> conv 3x3 (96) -> max-pool ->
    conv 3x3 (192) -> max-pool -> fully connected -> fully connected output (softmax): nine
    layers, four convolutions (24 + 48 + 96 + 192 = 360 filters), three poolings, two fully
    connected layers, the second being the output layer. "Full" padding is Lasagne's
    ``pad='full'`` (the paper's implementation is Lasagne/Theano): kernel - 1 zeros on each
    side, so each convolution grows its map (21 -> 25 -> 29). The 5 x 5 filters are the first
    two ("a couple of smaller ... convolutional layers" follow them: 3 x 3). What the text
    does not give, OncoSeg chooses: pooling windows of 2 x 2 (Lasagne's default stride equals
    the window, and the text gives stride two), 256 hidden units, LeakyReLU slope 0.01
    (Lasagne's default leakiness), dropout 1/2 after the hidden fully connected layer only
    (dropping the output layer's softmax would be meaningless).

    The zero padding is part of each patch: a voxel's result depends on the zeros around its
    own patch, so this network has no exact dense form and each voxel is classified from its
    own patch (:func:`oncoseg.rectal.dense.probability_map` batches the patches).
    """

    def __init__(self, in_channels: int = 3, patch_size: int = 21,
                 filters: tuple[int, ...] = (24, 48, 96, 192), hidden: int = 256,
                 classes: int = 2, negative_slope: float = 0.01):
        super().__init__()
        if len(filters) != 4:
            raise ValueError("four convolution layers: give four filter counts")
        sizes = paper_map_sizes(patch_size)
        if patch_size % 2 == 0 or sizes[-1] < 1:
            raise ValueError(f"patch size {patch_size}: the paper's network needs an odd patch "
                             "(a voxel at its centre)")
        self.patch_size = patch_size
        self.slope = negative_slope
        channels = (in_channels, *filters)
        kernels = [kernel for kind, kernel, _ in PAPER_LAYOUT if kind == "conv"]
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernels[i], padding=kernels[i] - 1)
            for i in range(4))
        self.pool_dropout = nn.Dropout(1 / 3)
        self.fc_dropout = nn.Dropout(1 / 2)
        self.fc1 = nn.Linear(filters[-1] * sizes[-1] ** 2, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        # in place, as RectalPatchCNN's: its input is always a fresh layer output
        return F.leaky_relu(x, self.slope, inplace=True)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_dropout(F.max_pool2d(x, 2, stride=2))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) for patches (B, C, M, M); the softmax is the caller's (the
        cross-entropy's in training, the probability map's at inference)."""
        x = self._act(self.convs[0](patches))
        x = self._pool(self._act(self.convs[1](x)))
        x = self._pool(self._act(self.convs[2](x)))
        x = self._pool(self._act(self.convs[3](x)))
        x = self.fc_dropout(self._act(self.fc1(x.flatten(1))))
        return self.fc2(x)


@register_architecture("rectal-paper-cnn")
def rectal_paper_cnn(in_channels: int = 3, patch_size: int = 21,
                     filters: tuple[int, ...] = (24, 48, 96, 192), hidden: int = 256,
                     classes: int = 2) -> RectalPaperCNN:
    return RectalPaperCNN(in_channels, patch_size, tuple(filters), hidden, classes)


# --set network=...: the architecture each choice trains (model files name the architecture)
NETWORKS = {"paper": "rectal-paper-cnn", "dense": "rectal-patch-cnn"}


def make_network(network: str, in_channels: int = 3, patch_size: int = 21) -> nn.Module:
    """A fresh network of the kind ``--set network`` names."""
    if network == "paper":
        return RectalPaperCNN(in_channels, patch_size)
    if network == "dense":
        return RectalPatchCNN(in_channels, patch_size)
    raise ValueError(f"network '{network}' is not one of {', '.join(NETWORKS)}")
