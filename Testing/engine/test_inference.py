import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oncoseg.errors import Cancelled
from oncoseg.inference import SlidingWindow, gaussian_importance, window_starts
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


def test_window_transform_and_finalize_equal_doing_it_on_the_whole_volume():
    net = small_net()
    hu = torch.randint(-1200, 1500, (1, 30, 41, 37), dtype=torch.int16)

    def window(x):
        return x.float().clamp(-800, 800) / 800

    with torch.no_grad():
        expected = torch.softmax(monai_inferers.sliding_window_inference(
            window(hu)[None], (12, 16, 16), 2, net, overlap=0.5, mode="gaussian")[0], dim=0)
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
