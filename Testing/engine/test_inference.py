import gc
import weakref

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oncoseg.brain.network import Brain2D, Brain3D
from oncoseg.errors import Cancelled
from oncoseg.inference import SlidingWindow, gaussian_importance, window_starts
from oncoseg.network_inference import prepare_for_inference
from oncoseg.network_layers import (
    GRAM_ROWS_PER_THREAD,
    ChannelsLastInstanceNorm,
    DirectConv,
    PatchTransposedConv,
    PointwiseConv,
    _column_mean,
    _square_sums,
)
from oncoseg.oar.ct.network import OarUNet3D
from oncoseg.progress import CancelToken

monai_inferers = pytest.importorskip("monai.inferers", reason="MONAI is the test peer")


def small_net(in_channels=1, out_channels=3, dims=3):
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(in_channels, 6, 3, padding=1), torch.nn.ReLU(),
                               conv(6, out_channels, 3, padding=1)).eval()


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(*[st.integers(4, 30)] * 3), window=st.tuples(*[st.integers(3, 16)] * 3),
       overlap=st.sampled_from([0.0, 0.25, 0.5, 0.7]), mode=st.sampled_from(["gaussian",
                                                                             "constant"]),
       batch=st.integers(1, 5))
def test_equals_monai_3d(shape, window, overlap, mode, batch):
    # at most 512 windows: a 3-voxel window at overlap 0.7 on 30^3 would be 21,952 of them
    # (37 s of one CI run for both implementations), and proves nothing more than 500 do
    assume(np.prod([len(window_starts(s, min(w, s), overlap))
                    for s, w in zip(shape, window, strict=True)]) <= 512)
    net = small_net()
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(x, window, batch, net,
                                                           overlap=overlap, mode=mode)[0]
    ours = SlidingWindow(window, overlap=overlap, mode=mode, batch_size=batch)(x[0], net)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_equals_monai_2d_multichannel():
    net = small_net(in_channels=2, out_channels=4, dims=2)
    x = torch.randn(1, 2, 53, 47, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(x, (24, 20), 3, net, overlap=0.5,
                                                           mode="gaussian")[0]
    ours = SlidingWindow((24, 20), overlap=0.5, batch_size=3)(x[0], net)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def hu_window(x):
    return x.float().clamp(-800, 800) / 800


def monai_ct_probabilities(net, hu, window, batch):
    """The reference: MONAI on the HU-windowed volume, then the softmax, as a MONAI user
    writes it."""
    with torch.no_grad():
        return torch.softmax(monai_inferers.sliding_window_inference(
            hu_window(hu)[None], window, batch, net, overlap=0.5, mode="gaussian")[0], dim=0)


def test_window_transform_and_finalize_equal_doing_it_on_the_whole_volume():
    net = small_net()
    hu = torch.randint(-1200, 1500, (1, 30, 41, 37), dtype=torch.int16)
    window = hu_window
    expected = monai_ct_probabilities(net, hu, (12, 16, 16), 2)
    ours = SlidingWindow((12, 16, 16), overlap=0.5, batch_size=2)(
        hu, net, window_transform=window, finalize=lambda rows: torch.softmax(rows, dim=0))
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="finalize must keep the shape"):
        SlidingWindow((12, 16, 16))(hu, net, window_transform=window,
                                    finalize=lambda rows: rows[1:])


def test_window_placement_and_importance():
    assert window_starts(10, 10, 0.5) == [0]
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]
    assert window_starts(101, 40, 0.5) == [0, 20, 40, 60, 61]
    weights = gaussian_importance((9, 5))
    assert weights.shape == (9, 5) and float(weights.max()) == pytest.approx(1.0)
    assert float(weights.min()) >= 1e-3


def test_cancel_stops_between_batches_and_returns_nothing():
    calls = []
    token = CancelToken()

    def network(x):
        calls.append(len(x))
        return torch.zeros(len(x), 2, *x.shape[2:])

    def progress(event):
        if event.done >= 4:
            token.cancel()

    with pytest.raises(Cancelled):
        SlidingWindow((8, 8, 8), overlap=0.5, batch_size=2)(
            torch.zeros(1, 32, 32, 32), network, progress=progress, cancel=token)
    assert sum(calls) == 4  # no window ran after the cancel


def test_out_of_memory_halves_the_batch():
    net = small_net()

    class Fussy(torch.nn.Module):
        def forward(self, x):
            if len(x) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return net(x)

    x = torch.randn(1, 20, 20, 20)
    sw = SlidingWindow((8, 8, 8), overlap=0.5, batch_size=4)
    out = sw(x, Fussy())
    torch.testing.assert_close(out, SlidingWindow((8, 8, 8), overlap=0.5, batch_size=1)(x, net))
    assert sw.notes == ["out of memory on cpu: batch size reduced to 2",
                        "out of memory on cpu: batch size reduced to 1"]


def test_numpy_input_and_shape_errors():
    net = small_net()
    x = np.random.default_rng(0).normal(size=(1, 12, 12, 12)).astype(np.float32)
    assert SlidingWindow((8, 8, 8))(x, net).shape == (3, 12, 12, 12)
    with pytest.raises(ValueError, match="does not fit"):
        SlidingWindow((8, 8))(x, net)


# --- network_inference: the prepared copy SlidingWindow runs on the CPU (issue 25) ---------

CL3 = torch.channels_last_3d


def _prepared_equals_module(net, *inputs, memory_format=CL3):
    """The prepared copy's class probabilities equal the module's to 1e-5 (the project's
    tolerance), its logits to 5e-5: oneDNN sums a convolution in another order than the
    slow path PyTorch picks for one small window (7.7e-6 on a brain member's logits, as
    PyTorch's own choice between them by batch size makes), and instance norm amplifies it."""
    net.eval()
    with torch.inference_mode():
        expected = net(*inputs)
    prepared = prepare_for_inference(net, inputs[0].shape[2:])
    given = [x.contiguous(memory_format=memory_format) for x in inputs]
    kept = [x.clone() for x in given]
    with torch.inference_mode():
        got = prepared(*given)
    for x, before in zip(given, kept, strict=True):  # layers in place never touch the input
        torch.testing.assert_close(x, before, rtol=0, atol=0)
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=0)
    torch.testing.assert_close(torch.softmax(got, 1), torch.softmax(expected, 1), atol=1e-5,
                               rtol=0)
    return prepared


def _kinds(module):
    """Layer types, not counting the convolution a DirectConv holds for its weights."""
    held = {id(m.conv) for m in module.modules() if isinstance(m, DirectConv)}
    return {type(m) for m in module.modules() if id(m) not in held}


def test_prepared_oar_ct_network_equals_the_module():
    torch.manual_seed(3)
    net = OarUNet3D(1, 6, (8, 16, 32), ((1, 2, 2), (2, 2, 2)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 1, 8, 24, 32) * 0.5 + 0.2
    prepared = _prepared_equals_module(net, x)
    # instance norms, kernel==stride transposed convolutions, the 1x1 head and the other
    # convolutions were all replaced: the comparison above covered each rewrite
    kinds = _kinds(prepared.eager)
    assert {ChannelsLastInstanceNorm, PatchTransposedConv, PointwiseConv, DirectConv} <= kinds
    assert not kinds & {torch.nn.InstanceNorm3d, torch.nn.ConvTranspose3d, torch.nn.Conv3d}
    assert all(m.inplace for m in prepared.eager.modules() if isinstance(m, torch.nn.LeakyReLU))
    # each norm follows a convolution, whose fresh output it may overwrite
    assert all(m.inplace for m in prepared.eager.modules()
               if isinstance(m, ChannelsLastInstanceNorm))
    # the caller's module is untouched: same types, same weights, trainable
    assert torch.nn.InstanceNorm3d in _kinds(net) and torch.nn.Conv3d in _kinds(net)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    net.train()
    net(x).sum().backward()
    assert net.head.weight.grad is not None


def test_prepared_brain_3d_member_equals_the_module():
    torch.manual_seed(4)
    net = Brain3D(sequences=4, features=12, width=4, levels=2, import_at="first",
                  norm="instance")
    image, features = torch.randn(1, 4, 16, 16, 16), torch.rand(1, 12, 16, 16, 16)
    prepared = _prepared_equals_module(net, image, features)
    assert ChannelsLastInstanceNorm in _kinds(prepared.eager)


def test_prepared_batch_norm_network_is_folded_and_equal():
    torch.manual_seed(5)
    net = Brain2D(sequences=4, width=4, subnetwork_kind="unet", levels=2)
    net.train()
    with torch.no_grad():  # running statistics away from (0, 1), so folding is visible
        for _ in range(3):
            net(torch.randn(2, 4, 32, 32) * 3 + 1)
    x = torch.randn(2, 4, 32, 32) * 3 + 1
    prepared = _prepared_equals_module(net, x, memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.eager.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_instance_norm_statistics_where_the_mean_dwarfs_the_spread():
    # mean^2 far above the variance (2500x) takes the centred route; both routes are as
    # close to the float64 norm as PyTorch's float32 norm is (measured: 3-6e-6 for both),
    # in place or not
    norm = torch.nn.InstanceNorm3d(3, affine=True).eval()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    generator = torch.Generator().manual_seed(9)
    for offset in (0.0, 5.0, 5.0, 5.0):
        x = (torch.randn(2, 3, 6, 7, 8, generator=generator) * 0.1 + offset).contiguous(
            memory_format=CL3)
        got = ChannelsLastInstanceNorm(norm)(x)
        exact = torch.nn.functional.instance_norm(x.double(), weight=norm.weight.double(),
                                                  bias=norm.bias.double(), eps=norm.eps)
        torch.testing.assert_close(got.double(), exact, atol=1e-5, rtol=0)
        in_place = ChannelsLastInstanceNorm(norm)
        in_place.inplace = True
        overwritten = x.clone()
        assert in_place(overwritten).data_ptr() == overwritten.data_ptr()
        torch.testing.assert_close(overwritten, got, atol=1e-6, rtol=0)
        torch.testing.assert_close(norm(x).double(), exact, atol=1e-5, rtol=0)
        assert got.is_contiguous(memory_format=CL3)
        # an input not in channels-last takes var_mean's route, centred too where far
        plain = ChannelsLastInstanceNorm(norm)(x.contiguous())
        torch.testing.assert_close(plain.double(), exact, atol=1e-5, rtol=0)


def test_instance_norm_with_column_sums_folded_into_wide_rows():
    # 16 channels over 8 x 16 x 16 voxels: the column mean is summed as rows of 512 values
    # (32 voxels each) and folded; the same norm as float64's, near zero and far from it
    norm = torch.nn.InstanceNorm3d(16).eval()
    generator = torch.Generator().manual_seed(10)
    for offset in (0.0, 40.0):
        x = (torch.randn(2, 16, 8, 16, 16, generator=generator) + offset).contiguous(
            memory_format=CL3)
        exact = torch.nn.functional.instance_norm(x.double(), eps=norm.eps)
        torch.testing.assert_close(ChannelsLastInstanceNorm(norm)(x).double(), exact,
                                   atol=1e-5, rtol=0)
    rows = x.permute(0, 2, 3, 4, 1).reshape(2, -1, 16)
    torch.testing.assert_close(_column_mean(rows).double(),
                               rows.double().mean(1, keepdim=True), atol=1e-5, rtol=0)
    odd = rows[:, :2047]  # a voxel count 32 does not divide: summed as it is
    torch.testing.assert_close(_column_mean(odd), odd.mean(1, keepdim=True))


def test_square_sums_in_one_product_per_thread_equal_the_whole_product():
    # 2 x 8192 rows: with two threads one Gram product per thread; a row count the threads do
    # not divide, or one thread, gives the whole product; all equal to float64's sums
    # (assert_close checks the (B, 1, C) shape too)
    generator = torch.Generator().manual_seed(11)
    rows = torch.randn(2, 2 * GRAM_ROWS_PER_THREAD, 16, generator=generator) + 3.0
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for part in (rows, rows[:, 1:]):
                torch.testing.assert_close(_square_sums(part).double(),
                                           (part.double() ** 2).sum(1, keepdim=True),
                                           rtol=2e-6, atol=0)
    finally:
        torch.set_num_threads(threads)


def test_training_mode_module_runs_as_given():
    net = small_net().train()
    prepared = prepare_for_inference(net, (8, 8, 8))
    assert prepared.eager is net and prepared.notes


def test_trace_falls_back_on_data_dependent_control_flow():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y * 2 if float(y.mean()) > 0 else y - 1

    torch.manual_seed(6)
    net = Branchy().eval()
    prepared = prepare_for_inference(net, (6, 6, 6), trace=True)
    for sign in (1.0, -1.0):  # the second input takes the other branch
        x = torch.full((1, 1, 6, 6, 6), sign) + 0.01 * torch.randn(1, 1, 6, 6, 6)
        with torch.inference_mode():
            torch.testing.assert_close(prepared(x), net(x), atol=1e-5, rtol=0)
    assert len(prepared.notes) == 1 and "not traced" in prepared.notes[0]
    assert prepared.traced == {next(iter(prepared.traced)): None}


def test_trace_of_a_plain_network_is_used_and_equal():
    net = small_net()
    prepared = prepare_for_inference(net, (8, 8, 8), trace=True)
    x = torch.randn(2, 1, 8, 8, 8).contiguous(memory_format=CL3)
    with torch.inference_mode():
        first, second = prepared(x), prepared(x)
        torch.testing.assert_close(first, net(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(second, net(x), atol=1e-5, rtol=0)
    assert prepared.notes == [] and all(t is not None for t in prepared.traced.values())


def test_prepared_sliding_window_equals_monai_on_an_oar_network():
    torch.manual_seed(7)
    net = OarUNet3D(1, 4, (4, 8), ((2, 2, 2),)).eval()
    hu = torch.randint(-1000, 1500, (1, 13, 37, 29), dtype=torch.int16)
    window = hu_window
    expected = monai_ct_probabilities(net, hu, (8, 16, 16), 3)
    sw = SlidingWindow((8, 16, 16), overlap=0.5, batch_size=3, prepare_network=True)
    ours = sw(hu, net, window_transform=window, finalize=lambda rows: torch.softmax(rows, 0))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert sw.notes == []
    plain = SlidingWindow((8, 16, 16), overlap=0.5, batch_size=3, prepare_network=False)(
        hu, net, window_transform=window, finalize=lambda rows: torch.softmax(rows, 0))
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)


def test_float16_and_uint8_output():
    net = small_net(out_channels=4)
    x = torch.randn(1, 19, 23, 21, generator=torch.Generator().manual_seed(8))
    kwargs = {"finalize": lambda rows: torch.softmax(rows, 0)}
    reference = SlidingWindow((8, 8, 8), overlap=0.5, batch_size=2)(x, net, **kwargs)
    half = SlidingWindow((8, 8, 8), overlap=0.5, batch_size=2,
                         output_dtype=torch.float16)(x, net, **kwargs)
    assert half.dtype == torch.float16 and half.shape == reference.shape
    torch.testing.assert_close(half.float(), reference, atol=1e-3, rtol=0)
    small = SlidingWindow((8, 8, 8), overlap=0.5, batch_size=2,
                          output_dtype=torch.uint8)(x, net, **kwargs)
    assert small.dtype == torch.uint8
    # round(255 * p), off by one only where float rounding sits on a half step
    assert int((small.int() - (reference * 255).round().int()).abs().max()) <= 1
    assert float((small.float() / 255 - reference).abs().max()) <= 0.5 / 255 + 1e-4
    with pytest.raises(ValueError, match="output_dtype"):
        SlidingWindow((8, 8, 8), output_dtype=torch.int32)(x, net)


_OUTPUTS: list = []  # weak references to _Watched's outputs (shared by the prepared copy)
_ALIVE_AT_CALL: list = []


class _Watched(torch.nn.Module):
    """A small network that records, at each call, how many of its earlier outputs are still
    alive somewhere (by reference count alone, without a garbage collection: an output kept
    alive by a reference cycle holds its memory until a collection too, so it counts)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x):
        _ALIVE_AT_CALL.append(sum(r() is not None for r in _OUTPUTS))
        out = self.conv(x)
        _OUTPUTS.append(weakref.ref(out))
        return out


def test_each_window_is_blended_before_the_next_runs():
    # a prepared network runs one window at a time while the window asks for batches of 3:
    # the earlier windows' predictions must be blended and dropped, not held for the batch
    # (they would add one window's output per window to the peak memory)
    torch.manual_seed(3)
    net = _Watched().eval()
    _OUTPUTS.clear()
    _ALIVE_AT_CALL.clear()
    x = torch.randn(1, 12, 20, 20, generator=torch.Generator().manual_seed(4))
    sw = SlidingWindow((6, 8, 8), overlap=0.5, batch_size=3, prepare_network=True)
    ours = sw(x, net, finalize=lambda rows: torch.softmax(rows, 0))
    assert len(_ALIVE_AT_CALL) > 3 and set(_ALIVE_AT_CALL) == {0}
    with torch.no_grad():
        expected = torch.softmax(monai_inferers.sliding_window_inference(
            x[None], (6, 8, 8), 3, net, overlap=0.5, mode="gaussian")[0], 0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def _bn_net():
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def test_a_module_is_prepared_once_while_it_is_unchanged():
    net = _bn_net()
    x = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(6))
    first = prepare_for_inference(net, (9, 11))
    assert prepare_for_inference(net, (9, 11)) is first  # no copy and rewrite per call
    assert prepare_for_inference(net, (9, 11), channels_last=False) is not first
    assert prepare_for_inference(net, (9, 11)) is not first  # the last call's format wins

    def check(changed):
        before = prepare_for_inference(net, (9, 11))
        changed()
        after = prepare_for_inference(net, (9, 11))
        assert after is not before
        with torch.inference_mode():
            torch.testing.assert_close(after(x), net(x), atol=1e-5, rtol=0)

    def step():  # an optimiser's in-place update (the version counter moves)
        net.train()
        optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
        net(x).square().mean().backward()
        optimiser.step()
        net.eval()

    def through_data():  # a write the version counter does not see
        net[0].weight.data[0, 0, 0, 0] += 0.5

    def loaded():
        net.load_state_dict(_bn_net().state_dict())

    def eps():
        net[1].eps = 0.1

    def replaced():
        net[2] = torch.nn.LeakyReLU(0.2)

    for change in (step, through_data, loaded, eps, replaced):
        check(change)


def test_the_cache_does_not_keep_a_module_alive():
    net = _bn_net()
    prepared = prepare_for_inference(net, (9, 11))
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None
    assert isinstance(prepared.eager, torch.nn.Module)  # the copy lives on with its holder


class _Residual(torch.nn.Module):
    """A residual block calling its layers from ``forward`` (not an nn.Sequential); ``also``
    makes the first convolution's output feed a second consumer, which forbids folding."""

    def __init__(self, also: bool = False):
        super().__init__()
        self.also = also
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        first = self.conv1(x)
        out = torch.relu(self.bn1(first))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + x + (first if self.also else 0))


class _Branching(torch.nn.Module):
    """Control flow on a value: not traceable as a whole, its blocks are."""

    def __init__(self):
        super().__init__()
        self.block = _Residual()

    def forward(self, x):
        return self.block(x) if float(x.mean()) < 10 else x


def _trained_stats(net, x):
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x)
    return net.eval()


def test_batch_norm_inside_residual_blocks_is_folded():
    torch.manual_seed(9)
    x = torch.randn(2, 4, 10, 12)
    for net, left in ((_Residual(), 0), (_Residual(also=True), 1), (_Branching(), 0)):
        _trained_stats(net, x)
        prepared = prepare_for_inference(net, (10, 12))
        norms = [m for m in prepared.eager.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == left, type(net).__name__
        with torch.inference_mode():
            torch.testing.assert_close(prepared(x), net(x), atol=1e-5, rtol=0)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 2  # not the caller's
