"""Activations and residual sums fused into the convolutions of a prepared network
(``oncoseg.network_fusion``, issue 25): equal to the module, and never writing over a tensor
something else still reads."""

import pytest
import torch
from torch import nn

from oncoseg.network_fusion import ResidualConv
from oncoseg.network_inference import prepare_for_inference
from oncoseg.network_layers import DirectConv, PointwiseConv
from oncoseg.oar.mr.network import FCNResNet50
from oncoseg.staging.network import StagingNet

CL = torch.channels_last


def _with_statistics(net: nn.Module) -> nn.Module:
    """Batch norms away from (0, 1), so that folding them shows in the values."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def _count(module: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _post_ops(module: nn.Module) -> int:
    return sum(isinstance(m, DirectConv) and m.activation is not None
               for m in module.modules())


@pytest.mark.parametrize("name", ["oar-mr", "oar-mr-gate", "staging"])
def test_residual_blocks_write_their_sum_into_the_identity_and_equal_the_module(name):
    torch.manual_seed(0)
    if name.startswith("oar-mr"):  # with its slice classifier, the backbone's output is read
        net = FCNResNet50(3, 3, width=4, gate=name.endswith("gate"))  # twice
        x, blocks, layout = torch.randn(3, 3, 64, 64), 16, CL
    else:
        net, x, blocks = StagingNet(filters=8), torch.randn(2, 1, 6, 48, 48), 8
        layout = torch.channels_last_3d
    net = _with_statistics(net)
    with torch.inference_mode():
        expected = net(x)
    prepared = prepare_for_inference(net, x.shape[2:]).eager
    assert isinstance(prepared, torch.fx.GraphModule)
    assert _count(prepared, ResidualConv) == blocks  # every block's sum and ReLU
    assert _post_ops(prepared) > blocks  # the stem's and each block's first ReLU too
    given = x.contiguous(memory_format=layout)
    kept = given.clone()
    with torch.inference_mode():
        got = prepared(given)
    torch.testing.assert_close(given, kept, rtol=0, atol=0)  # the caller's input untouched
    # logits and features to 5e-5 (oneDNN sums in another order than PyTorch's path for
    # small maps), probabilities to 1e-5: the tolerance of every prepared network's test
    if isinstance(expected, dict):
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=5e-5)
        expected, got = expected["volume_logit"], got["volume_logit"]
    elif isinstance(expected, tuple):  # maps and the slice classifier's logits
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=5e-5)
        expected, got = expected[0], got[0]
    torch.testing.assert_close(torch.sigmoid(got), torch.sigmoid(expected), rtol=0, atol=1e-5)
    # the caller's module keeps its own layers and code; the copy its plain attributes
    assert not isinstance(net, torch.fx.GraphModule) and _count(net, ResidualConv) == 0
    assert not prepared.training
    if name == "staging":
        assert prepared.aggregation == net.aggregation


class _Block(nn.Module):
    """``relu(conv2(relu(conv1(x))) + identity)``: with ``reread`` the identity is read again
    after the sum; with ``own_identity`` it is a convolution's output rather than ``x``."""

    def __init__(self, own_identity: bool, reread: bool, pointwise: bool = False):
        super().__init__()
        self.own_identity, self.reread = own_identity, reread
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1 if pointwise else 3, padding=0 if pointwise else 1)
        self.shortcut = nn.Conv2d(4, 4, 1, bias=False)

    def forward(self, x):
        identity = self.shortcut(x) if self.own_identity else x
        out = self.conv2(torch.relu(self.conv1(x)))
        out += identity
        out = torch.relu(out)
        return out + identity if self.reread else out


@pytest.mark.parametrize("pointwise", [False, True])
@pytest.mark.parametrize("own_identity, reread, fused", [
    (True, False, True),  # the shortcut's fresh output, read by nothing else: written into
    (False, False, False),  # the caller's input: never written
    (True, True, False),  # read again after the sum: kept
])
def test_the_identity_is_overwritten_only_where_nothing_else_reads_it(own_identity, reread,
                                                                      fused, pointwise):
    torch.manual_seed(2)
    net = _Block(own_identity, reread, pointwise).eval()
    x = torch.randn(2, 4, 12, 10).contiguous(memory_format=CL)
    kept = x.clone()
    with torch.inference_mode():
        expected = net(x)
        prepared = prepare_for_inference(net, x.shape[2:]).eager
        got = prepared(x)
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert _count(prepared, ResidualConv) == int(fused)
    assert _post_ops(prepared) >= 1  # conv1's ReLU in every case


def test_residual_conv_outside_its_fast_path_adds_out_of_place():
    """A residual in the default memory format (or any tensor oneDNN and BLAS cannot write
    into as it lies) gets the block's own computation, and is left as it was."""
    torch.manual_seed(3)
    for conv in (nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1)):
        conv = conv.eval()
        layer = DirectConv(conv) if conv.kernel_size == (3, 3) else PointwiseConv(conv)
        fused = ResidualConv(layer.to(memory_format=CL))
        x = torch.randn(2, 4, 9, 7).contiguous(memory_format=CL)
        for residual in (torch.randn(2, 6, 9, 7),  # default layout
                         torch.randn(2, 6, 1, 1).contiguous(memory_format=CL)):  # broadcast
            kept = residual.clone()
            with torch.inference_mode():
                got = fused(x, residual)
            torch.testing.assert_close(residual, kept, rtol=0, atol=0)
            torch.testing.assert_close(got, torch.relu(conv(x) + residual), rtol=0, atol=1e-5)
        residual = torch.randn(2, 6, 9, 7).contiguous(memory_format=CL)
        expected = torch.relu(conv(x) + residual)
        with torch.inference_mode():
            got = fused(x, residual)
        assert got.data_ptr() == residual.data_ptr()  # written into, as the graph allowed
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


class _AddsItsInput(nn.Module):
    """``relu(conv2(y) + y)``: the convolution reads the tensor the sum would write into."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv1(x)
        return torch.relu(self.conv2(y) + y)


def test_a_convolution_never_writes_into_its_own_input():
    torch.manual_seed(4)
    net = _AddsItsInput().eval()
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=CL)
    with torch.inference_mode():
        expected = net(x)
        got = prepare_for_inference(net, x.shape[2:]).eager(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_pytorch_without_the_fused_operators_runs_the_network_as_prepared_before(
        monkeypatch):
    import oncoseg.network_fusion as fusion

    monkeypatch.setattr(fusion, "post_ops_available", lambda: False)
    torch.manual_seed(5)
    net = _with_statistics(FCNResNet50(3, 3, width=4))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = net(x)
        prepared = prepare_for_inference(net, x.shape[2:]).eager
        got = prepared(x.contiguous(memory_format=CL))
    assert not isinstance(prepared, torch.fx.GraphModule)
    assert _count(prepared, ResidualConv) == 0 and _post_ops(prepared) == 0
    torch.testing.assert_close(torch.sigmoid(got), torch.sigmoid(expected), rtol=0, atol=1e-5)


def test_a_decoder_convolution_runs_on_the_two_halves_of_its_concatenation():
    """OAR-CT's U-Net joins each upsampled map to its skip with ``torch.cat``: the prepared
    copy convolves the two parts with the two halves of the weights instead, equal to the
    module (probabilities to 1e-5)."""
    from oncoseg.network_fusion import ConcatenatedConv
    from oncoseg.oar.ct.network import OarUNet3D

    torch.manual_seed(6)
    net = OarUNet3D(1, 6, (8, 16, 32), ((1, 2, 2), (2, 2, 2))).eval()
    x = torch.randn(2, 1, 8, 24, 32) * 0.5 + 0.2
    with torch.inference_mode():
        expected = net(x)
        prepared = prepare_for_inference(net, x.shape[2:]).eager
        got = prepared(x.contiguous(memory_format=torch.channels_last_3d))
    assert _count(prepared, ConcatenatedConv) == 2  # one per decoder level
    torch.testing.assert_close(got, expected, rtol=0, atol=5e-5)
    torch.testing.assert_close(got.softmax(1), expected.softmax(1), rtol=0, atol=1e-5)


class _Joined(nn.Module):
    """``relu(conv(cat([a, b])))``; with ``also`` the concatenation is read a second time."""

    def __init__(self, also: bool):
        super().__init__()
        self.also = also
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 1)
        self.conv = nn.Conv2d(10, 5, 3, padding=1)

    def forward(self, x):
        joined = torch.cat([self.a(x), self.b(x)], dim=1)
        out = torch.relu(self.conv(joined))
        return out + joined.mean() if self.also else out


@pytest.mark.parametrize("also", [False, True])
def test_a_concatenation_read_elsewhere_is_kept(also):
    from oncoseg.network_fusion import ConcatenatedConv

    torch.manual_seed(7)
    net = _Joined(also).eval()
    x = torch.randn(2, 3, 10, 12).contiguous(memory_format=CL)
    with torch.inference_mode():
        expected = net(x)
        prepared = prepare_for_inference(net, x.shape[2:]).eager
        got = prepared(x)
    assert _count(prepared, ConcatenatedConv) == int(not also)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_concatenated_conv_outside_its_fast_path_concatenates():
    from oncoseg.network_fusion import ConcatenatedConv

    torch.manual_seed(8)
    conv = nn.Conv2d(10, 5, 3, padding=1).eval()
    fused = ConcatenatedConv(DirectConv(conv).to(memory_format=CL))
    first, second = torch.randn(2, 4, 9, 7), torch.randn(2, 6, 9, 7)  # default layout
    with torch.inference_mode():
        expected = conv(torch.cat([first, second], 1))
        slow = fused(first, second)
        fast = fused(first.contiguous(memory_format=CL), second.contiguous(memory_format=CL))
    torch.testing.assert_close(slow, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_brain_decoder_convolves_the_skip_and_the_upsampled_map_without_joining_them(dims):
    """The brain networks join levels with ``upsampling.beside_upsampled``, one call in the
    graph: each join becomes a ConcatenatedConv that upsamples the deeper map itself."""
    from oncoseg.brain.network import Brain2D, Brain3D
    from oncoseg.network_fusion import ConcatenatedConv

    torch.manual_seed(9)
    if dims == 3:
        net = Brain3D(sequences=4, features=12, width=4, levels=2, import_at="first",
                      norm="none").eval()
        inputs = (torch.randn(1, 4, 16, 16, 16), torch.rand(1, 12, 16, 16, 16))
        layout, joins = torch.channels_last_3d, 2
    else:
        net = _with_statistics(Brain2D(sequences=4, width=4, subnetwork_kind="unet",
                                       levels=2))
        inputs = (torch.randn(2, 4, 32, 32) * 3 + 1,)
        layout, joins = CL, None
    with torch.inference_mode():
        expected = net(*inputs)
        prepared = prepare_for_inference(net, inputs[0].shape[2:]).eager
        got = prepared(*(x.contiguous(memory_format=layout) for x in inputs))
    # the decoder's joins upsample; the 3D member's import of the 2D features is a plain join
    upsampling = [m.upsample for m in prepared.modules() if isinstance(m, ConcatenatedConv)]
    assert sum(upsampling) == joins if joins is not None else sum(upsampling) > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=5e-5)
    torch.testing.assert_close(got.softmax(1), expected.softmax(1), rtol=0, atol=1e-5)
