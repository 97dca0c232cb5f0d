"""The paper's rectal network (``--set network=paper``), its per-voxel inference, and the
dense-exact variant the shipped demo model keeps using.

Paper 000 (Trebeschi et al. 2017), "Network Definition": nine layers (two convolutions and a
max pooling; two smaller convolutions, each followed by max pooling; two fully connected
layers ending in the output layer), 5 x 5 or 3 x 3 filters, stride one, full padding, stride-2
pooling, 24-48-96-192 filters (360 in all).
"""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from oncoseg import verbs
from oncoseg.cli import main
from oncoseg.errors import InputError
from oncoseg.io.volumes import read_image
from oncoseg.method import load_task_model
from oncoseg.modelfile import ModelMetadata, load_network, read_header, save_model
from oncoseg.phantoms.rectal import RectalPhantomGeometry, generate_case
from oncoseg.rectal.config import RectalConfig
from oncoseg.rectal.dense import (
    dense_probability_map,
    probability_map,
    slices_per_batch,
    voxels_per_batch,
)
from oncoseg.rectal.network import (
    NETWORKS,
    RectalPaperCNN,
    RectalPatchCNN,
    make_network,
    paper_map_sizes,
)
from oncoseg.rectal.sampling import extract_patches

ROLES = ("t2w", "dwi_b0", "dwi_b1000")


def small_case(folder, seed=0):
    generate_case(folder, seed, seed, RectalPhantomGeometry(t2w_size=(112, 112, 6),
                                                            dwi_size=(40, 36, 6)))
    return folder


def standardised(folder):
    arrays = []
    for role in ("dwi_b0", "dwi_b1000", "dwi_b0"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{role}.nii.gz")))
        arrays.append((a - a.mean()) / a.std())
    return np.stack(arrays).astype(np.float32)


def test_the_paper_network_is_the_papers_description(monkeypatch):
    network = RectalPaperCNN()
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    # four convolutions + three poolings + two fully connected (the second the output) = 9
    assert len(convs) == 4 and len(linears) == 2
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5), (3, 3), (3, 3)]
    assert [c.out_channels for c in convs] == [24, 48, 96, 192]
    assert sum(c.out_channels for c in convs) == 360
    assert all(c.stride == (1, 1) for c in convs)
    # 'full' padding (Lasagne's pad='full'): kernel - 1 zeros per side, the maps grow
    assert [c.padding for c in convs] == [(4, 4), (4, 4), (2, 2), (2, 2)]
    assert paper_map_sizes(21) == [21, 25, 29, 14, 16, 8, 10, 5]
    assert linears[0].in_features == 192 * 5 * 5 and linears[1].out_features == 2
    # three stride-2 poolings and three 1/3 dropouts run in forward: count them on a trace
    pools = []
    original = torch.nn.functional.max_pool2d

    def counting(x, kernel, stride=None, **kwargs):
        pools.append((x.shape[-1], kernel, stride))
        return original(x, kernel, stride, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool2d", counting)
    logits = network.eval()(torch.randn(2, 3, 21, 21))
    assert pools == [(29, 2, 2), (16, 2, 2), (10, 2, 2)]
    assert logits.shape == (2, 2)
    assert network.pool_dropout.p == pytest.approx(1 / 3) and network.fc_dropout.p == 0.5


def test_full_padding_makes_a_voxel_depend_on_its_own_patch_only():
    """The zeros of 'full' padding sit around each patch: the result for a patch cut out of a
    larger image differs from what a same-padded dense pass would give, so inference must
    classify each voxel's own patch (the dense variant's a-trous form cannot apply)."""
    torch.manual_seed(0)
    network = RectalPaperCNN().eval()
    with torch.inference_mode():
        patch = torch.randn(1, 3, 21, 21)
        bigger = torch.randn(1, 3, 29, 29)
        bigger[:, :, 4:25, 4:25] = patch
        inner = bigger[:, :, 4:25, 4:25]
        assert torch.equal(network(inner), network(patch))  # only the patch counts
        first = network.convs[0]
        dense = torch.nn.functional.conv2d(bigger, first.weight, first.bias, padding=2)
        cut = first(patch)[:, :, 2:23, 2:23]  # the patch-sized centre of its full conv
        assert not torch.allclose(dense[:, :, 4:25, 4:25], cut)  # borders see other zeros


def test_per_voxel_inference_equals_classifying_every_patch(tmp_path):
    torch.manual_seed(3)
    network = RectalPaperCNN().eval()
    for p in network.parameters():  # a trained-looking spread of weights, not just init
        p.data.mul_(3.0)
    channels = standardised(small_case(tmp_path / "case"))[:, :2]
    _, z, h, w = channels.shape
    # batches that do not divide a slice, so a batch spans the end of one
    result = probability_map(network, channels, batch=97)
    grid = np.stack(np.meshgrid(range(z), range(h), range(w), indexing="ij"), -1)
    with torch.inference_mode():
        patches = torch.from_numpy(extract_patches(channels, grid.reshape(-1, 3), 21))
        expected = torch.softmax(network(patches), 1)[:, 1].reshape(z, h, w).numpy()
    assert result.shape == (z, h, w) and result.dtype == np.float32
    assert np.abs(result - expected).max() <= 1e-5
    assert result.min() > 0.0 and result.max() < 1.0


def test_per_voxel_and_per_slice_batches_keep_the_widest_map_in_a_heap_block():
    """Memory stays bounded, and no batch's widest map is larger than the blocks malloc reuses
    (32 MiB): larger ones are mapped and zeroed afresh for every batch (1.4x slower)."""
    assert voxels_per_batch() * 48 * 29 * 29 * 4 <= 32 * 2**20 < \
        (voxels_per_batch() + 1) * 48 * 29 * 29 * 4
    assert slices_per_batch(80, 80) == 3  # 100 x 100 x 256 x 4 bytes per padded slice
    assert slices_per_batch(512, 512) == 1  # one slice is beyond a block: still progresses
    # a GPU's caching allocator keeps its blocks: the memory budget alone, as before
    assert slices_per_batch(80, 80, "cuda") == 26 and voxels_per_batch("cuda") == 598


def test_the_shipped_demo_model_keeps_the_dense_network():
    """Whatever the default network, the demo model names its own architecture
    (rectal-patch-cnn), so it predicts with the dense form exactly as before."""
    assert RectalConfig().network == "dense"  # by measurement: rectal/config.py
    model = load_task_model("rectal")
    assert model.metadata.architecture == "rectal-patch-cnn"
    assert type(model.network) is RectalPatchCNN
    rng = np.random.default_rng(0)
    channels = rng.standard_normal((3, 2, 30, 26)).astype(np.float32)
    assert np.array_equal(probability_map(model.network, channels),
                          dense_probability_map(model.network, channels))


def test_network_setting_picks_the_architecture(tmp_path):
    assert NETWORKS == {"paper": "rectal-paper-cnn", "dense": "rectal-patch-cnn"}
    assert isinstance(make_network("paper"), RectalPaperCNN)
    assert isinstance(make_network("dense"), RectalPatchCNN)
    with pytest.raises(ValueError, match="not one of paper, dense"):
        make_network("unet")
    network = RectalPaperCNN()
    metadata = ModelMetadata(task="rectal", architecture="rectal-paper-cnn",
                             architecture_args={"in_channels": 3, "patch_size": 21},
                             inputs=list(ROLES), preprocessing={},
                             outputs={"segments": ["Rectal tumour"]})
    path = save_model(tmp_path / "m.safetensors", network.state_dict(), metadata)
    loaded, _ = load_network(path, expected_task="rectal")
    assert type(loaded) is RectalPaperCNN
    x = torch.randn(2, 3, 21, 21)
    torch.testing.assert_close(loaded(x), network.eval()(x))


def test_train_the_paper_network_and_predict(tmp_path):
    data = tmp_path / "data"
    for seed in range(2):
        small_case(data / f"case_{seed:03d}", seed)
    out = tmp_path / "model"
    assert main(["train", "rectal", "--dataset", str(data), "--output", str(out),
                 "--progress", "none", "--set", "registration=none", "--set", "network=paper",
                 "--set", "samples_per_class=40", "--set", "max_epochs=1",
                 "--set", "learning_rate=1.0"]) == 0
    meta = read_header(out / "model.safetensors").metadata
    assert meta.architecture == "rectal-paper-cnn"
    assert meta.provenance["rectal_config"]["network"] == "paper"
    case = data / "case_000"
    images = {role: read_image(case / f"{role}.nii.gz") for role in ROLES}
    prediction = verbs.predict("rectal", images, out / "model.safetensors")
    assert prediction.labels.GetSize() == images["dwi_b0"].GetSize()
    probability = sitk.GetArrayFromImage(prediction.probabilities["Rectal tumour"])
    assert probability.min() >= 0.0 and probability.max() <= 1.0


def test_an_unknown_network_is_refused(tmp_path):
    from oncoseg.rectal.training import train_rectal

    with pytest.raises(InputError, match="network: 'unet' is not one of paper, dense"):
        train_rectal(None, tmp_path, RectalConfig(network="unet"))
