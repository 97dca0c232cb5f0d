import numpy as np
import pytest
import SimpleITK as sitk
import torch

from oncoseg.modelfile import ModelMetadata, load_network, save_model
from oncoseg.phantoms.rectal import RectalPhantomGeometry, generate_case
from oncoseg.rectal.network import RectalPatchCNN, window_max
from oncoseg.rectal.sampling import extract_patches


def phantom_channels(tmp_path):
    generate_case(tmp_path / "case", 0, 0, RectalPhantomGeometry(t2w_size=(64, 64, 6),
                                                                 dwi_size=(40, 36, 6)))
    arrays = []
    for role in ("dwi_b0", "dwi_b1000", "dwi_b0"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "case" / f"{role}.nii.gz")))
        arrays.append((a - a.mean()) / a.std())
    return np.stack(arrays).astype(np.float32)


def test_dense_inference_equals_classifying_every_patch(tmp_path):
    torch.manual_seed(3)
    network = RectalPatchCNN().eval()
    for p in network.parameters():  # a trained-looking spread of weights, not just init
        p.data.mul_(3.0)
    channels = phantom_channels(tmp_path)
    _, z, h, w = channels.shape
    with torch.inference_mode():
        dense = torch.softmax(network.dense(torch.from_numpy(channels).transpose(0, 1)), 1)
        grid = np.stack(np.meshgrid(range(z), range(h), range(w), indexing="ij"), -1)
        patches = torch.from_numpy(extract_patches(channels, grid.reshape(-1, 3), 21))
        per_patch = torch.softmax(network(patches), 1).reshape(z, h, w, 2).permute(0, 3, 1, 2)
    assert dense.shape == per_patch.shape == (z, 2, h, w)
    assert float((dense - per_patch).abs().max()) <= 1e-5


def test_patch_size_and_model_file_round_trip(tmp_path):
    with pytest.raises(ValueError, match="receptive field is 21 x 21"):
        RectalPatchCNN(patch_size=25)
    network = RectalPatchCNN()
    metadata = ModelMetadata(task="rectal", architecture="rectal-patch-cnn",
                             architecture_args={"in_channels": 3, "patch_size": 21},
                             inputs=["t2w", "dwi_b0", "dwi_b1000"], preprocessing={},
                             outputs={"segments": ["Rectal tumour"]})
    path = save_model(tmp_path / "m.safetensors", network.state_dict(), metadata)
    loaded, _ = load_network(path, expected_task="rectal")
    x = torch.randn(2, 3, 21, 21)
    torch.testing.assert_close(loaded(x), network.eval()(x))


def test_a_fresh_process_loads_a_rectal_model_file(tmp_path):
    import subprocess
    import sys

    metadata = ModelMetadata(task="rectal", architecture="rectal-patch-cnn",
                             architecture_args={}, inputs=["t2w", "dwi_b0", "dwi_b1000"],
                             preprocessing={}, outputs={"segments": ["Rectal tumour"]})
    path = save_model(tmp_path / "m.safetensors", RectalPatchCNN().state_dict(), metadata)
    code = ("import sys; from oncoseg.modelfile import load_network; "
            "net, meta = load_network(sys.argv[1], expected_task='rectal'); "
            "print(type(net).__name__)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RectalPatchCNN"


def test_in_place_activations_train_as_the_functional_network():
    """LeakyReLU runs in place (a copy was a fifth of the dense pass); gradients must be those of
    the same network written without in-place operations."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    network = RectalPatchCNN().train()
    patches, targets = torch.randn(6, 3, 21, 21), torch.tensor([0, 1, 1, 0, 1, 0])

    def reference(x: torch.Tensor) -> torch.Tensor:  # dropout off on both sides (eval)
        act = lambda t: F.leaky_relu(t, network.slope)  # noqa: E731
        x = act(network.convs[0](x))
        x = F.max_pool2d(act(network.convs[1](x)), 3, stride=2)
        x = F.max_pool2d(act(network.convs[2](x)), 2, stride=2)
        x = act(network.convs[3](x))
        return network.fc2(act(network.fc1(x.flatten(1))))

    network.eval()  # dropout off; autograd still records
    F.cross_entropy(network(patches), targets).backward()
    got = {n: p.grad.clone() for n, p in network.named_parameters()}
    network.zero_grad()
    F.cross_entropy(reference(patches), targets).backward()
    for name, p in network.named_parameters():
        assert torch.allclose(got[name], p.grad, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("size, dilation", [(3, 1), (2, 2), (2, 1), (4, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_window_max_is_the_pool_bit_for_bit(size, dilation, channels_last):
    x = torch.randn(2, 5, 13, 11, dtype=torch.float32)
    x[0, 1, 3, 4] = float("nan")  # propagated as the pool propagates it
    x[1, 2, 5:8, 5:8] = 7.0  # ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.max_pool2d(x, size, stride=1, dilation=dilation)
    with torch.inference_mode():
        got = window_max(x, size, dilation)
    assert got.shape == expected.shape
    assert torch.equal(torch.nan_to_num(got, nan=-1.0), torch.nan_to_num(expected, nan=-1.0))
    assert torch.isnan(got).sum() == torch.isnan(expected).sum() > 0
    # with a graph to keep (training), the pool itself runs and gradients flow
    y = x.detach().clone().requires_grad_(True)
    window_max(y, size, dilation).sum().backward()
    assert y.grad is not None and y.grad.sum() > 0
