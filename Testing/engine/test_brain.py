"""BrainTumor2D3D (paper 004) end to end on phantoms: networks, loss, inputs with sequences
missing or on other grids, the staged training, prediction and evaluation from the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from oncoseg import verbs
from oncoseg.brain.config import SEQUENCES, BrainConfig
from oncoseg.brain.losses import batch_weighted_cross_entropy
from oncoseg.brain.network import Brain2D, Brain3D
from oncoseg.brain.preprocessing import back_to_grid, from_slices, prepare_volume, to_slices
from oncoseg.cli import main
from oncoseg.datasets import read_dataset
from oncoseg.errors import InputError

DEMO_BARS = (0.80, 0.70, 0.60)  # whole tumour, tumour core, enhancing tumour
TINY = ["--set", "width_2d=2", "--set", "width_3d=2", "--set", "levels_2d=2",
        "--set", "patch=48", "--set", "iterations_2d=2", "--set", "iterations_3d=2",
        "--set", "iterations_per_epoch=2", "--set", "batches_per_iteration_2d=2",
        "--set", "batch_size_2d=2", "--set", "batches_per_iteration_3d=2"]


@pytest.mark.parametrize("kind", ["unet", "shallow"])
def test_2d_model_has_k_plus_1_subnetworks_and_ignores_an_absent_sequence(kind):
    torch.manual_seed(0)
    net = Brain2D(width=4, subnetwork_kind=kind, levels=2).eval()
    x = torch.randn(2, 4, 24, 32)
    scores, auxiliary = net(x, auxiliary=True)
    assert scores.shape == (2, 4, 24, 32) and len(auxiliary) == 5
    present = torch.tensor([True, True, True, False])
    other = x.clone()
    other[:, 3] = 100.0  # whatever the absent FLAIR holds
    assert torch.allclose(net(x, present), net(other, present))
    net.train()
    target = torch.randint(0, 4, (2, 24, 32))
    scores, auxiliary = net(x, auxiliary=True)
    loss = sum(batch_weighted_cross_entropy(s, target, (0.7, 0.1, 0.1, 0.1))
               for s in (scores, *auxiliary))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("import_at", ["first", "final", "none"])
def test_2d3d_model_variants_take_odd_patch_sizes_and_backpropagate(import_at):
    net = Brain3D(width=2, levels=2, import_at=import_at)
    image, features = torch.randn(1, 4, 19, 22, 17), torch.randn(1, 12, 19, 22, 17)
    out = net(image, features)
    assert out.shape == (1, 4, 19, 22, 17)
    out.sum().backward()
    first_conv = net.body.down[0][0][0]
    assert first_conv.in_channels == (16 if import_at == "first" else 4)
    if import_at != "none":
        with pytest.raises(ValueError, match="features"):
            net(image)


def test_batch_weights_give_each_class_its_target_share():
    scores = torch.randn(1, 4, 5, 6)
    target = torch.zeros(1, 5, 6, dtype=torch.long)
    target[0, 0, :3] = 1
    target[0, 1, :2] = 2
    target[0, 4, 5] = 3
    nll = F.cross_entropy(scores, target, reduction="none")[0]
    shares = (0.4, 0.2, 0.2, 0.2)
    expected = sum(shares[c] * nll[target[0] == c].mean() for c in range(4))
    assert float(batch_weighted_cross_entropy(scores, target, shares)) == \
        pytest.approx(float(expected), rel=1e-5)
    background_only = torch.zeros_like(target)  # absent classes pass on their share
    assert float(batch_weighted_cross_entropy(scores, background_only, shares)) == \
        pytest.approx(float(F.cross_entropy(scores, background_only)), rel=1e-5)


def brain_images(size=(20, 24, 16), spacing=(2.0, 2.0, 2.0), seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for index, name in enumerate(SEQUENCES):
        array = np.zeros(size[::-1], np.float32)
        array[2:-2, 3:-3, 3:-3] = rng.uniform(50, 150, (size[2] - 4, size[1] - 6, size[0] - 6))
        array *= index + 1
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        images[name] = image
    return images


def test_inputs_are_median_normalised_on_the_t1c_grid_and_missing_ones_reported():
    images = brain_images()
    volume = prepare_volume(images)
    assert volume.reference_role == "t1c" and volume.present.all()
    for k in range(4):
        nonzero = volume.array[k][volume.array[k] != 0]
        assert np.median(nonzero) == pytest.approx(1.0, rel=1e-5)
    images["flair"] = None
    volume = prepare_volume(images, drop=["t1c"])
    assert volume.used == ["t1", "t2"] and volume.reference_role == "t1"
    assert not volume.array[3].any() and not volume.array[1].any()
    assert "flair" in volume.messages[-1] and "t1c" in volume.messages[-1]
    with pytest.raises(InputError, match="at least one"):
        prepare_volume({name: None for name in SEQUENCES})


def test_other_grids_are_resampled_and_elsewhere_refused_by_name():
    images = brain_images()
    coarse = sitk.Resample(images["t2"], [10, 12, 8], sitk.Transform(), sitk.sitkLinear,
                           images["t2"].GetOrigin(), (4.0, 4.0, 4.0))
    images["t2"] = coarse
    volume = prepare_volume(images)
    assert volume.array.shape[1:] == (16, 24, 20)
    assert "t2 was resampled onto the t1c grid" in volume.messages
    far = sitk.Image(images["flair"])
    far.SetOrigin((900.0, 0.0, 0.0))
    images["flair"] = far
    with pytest.raises(InputError, match="flair"):
        prepare_volume(images)


def test_orientation_round_trip_on_a_flipped_permuted_grid():
    images = brain_images()
    direction = np.array([[0, 0, -1], [-1, 0, 0], [0, 1, 0]], float)
    for image in images.values():
        image.SetDirection(direction.ravel())
    volume = prepare_volume(images)
    labels = (volume.array[1] > 1.0).astype(np.uint8)
    back = back_to_grid(labels, volume)
    assert back.GetSize() == images["t1c"].GetSize()
    assert back.GetDirection() == images["t1c"].GetDirection()
    original = sitk.GetArrayFromImage(images["t1c"])
    median = np.median(original[original != 0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), original / median > 1.0)
    for orientation in ("axial", "coronal", "sagittal"):
        np.testing.assert_array_equal(from_slices(to_slices(volume.array, orientation),
                                                  orientation), volume.array)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    assert main(["phantom", "brain", "--output", str(root / "data"), "--cases", "3",
                 "--progress", "none"]) == 0
    assert main(["train", "brain", "--dataset", str(root / "data"), "--output",
                 str(root / "model"), "--progress", "none", *TINY]) == 0
    return root


def test_stages_write_the_2d_models_members_and_the_ensemble(trained):
    model = trained / "model"
    for stage in ("2d-axial", "2d-coronal", "2d-sagittal", "3d-first", "3d-final"):
        assert (model / stage / "model.safetensors").is_file()
        assert (model / stage / "history.csv").is_file()
    from oncoseg.modelfile import read_header

    header = read_header(model / "model.safetensors")
    assert header.metadata.architecture == "brain-ensemble"
    assert [m["import_at"] for m in header.metadata.architecture_args["members"]] == \
        ["first", "final"]
    features = list((model / "prepared").glob("*.features-*.npy"))
    assert features and np.load(features[0]).dtype == np.float16


def test_2d3d_stage_needs_the_2d_models(trained, tmp_path, capsys):
    assert main(["train", "brain", "--dataset", str(trained / "data"), "--output",
                 str(tmp_path / "m"), "--stage", "2d3d", "--progress", "none", *TINY]) == 2
    assert "train the 2D stages first" in capsys.readouterr().err
    assert main(["train", "staging", "--dataset", str(trained / "data"), "--output",
                 str(tmp_path / "s"), "--stage", "2d3d"]) == 2


def test_predict_without_flair_says_so_and_evaluate_reports_brats_regions(trained, tmp_path):
    case = read_dataset(trained / "data").cases[0]
    args = ["predict", "brain", "--model", str(trained / "model" / "model.safetensors"),
            "--output", str(tmp_path / "out"), "--progress", "none"]
    for role in ("t1", "t1c", "t2"):
        args += ["--input", f"{role}={case.images[role]}"]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any("flair missing" in m for m in result["messages"])
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == sitk.ReadImage(str(case.images["t1c"])).GetSize()
    one = tmp_path / "one"  # evaluation of one case is enough here
    one.mkdir()
    (one / case.images["t1"].parent.name).symlink_to(case.images["t1"].parent)
    assert main(["evaluate", "brain", "--dataset", str(one), "--model",
                 str(trained / "model" / "model.safetensors"), "--output",
                 str(tmp_path / "eval"), "--progress", "none",
                 "--set", "drop_sequences=flair"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["sequences_dropped"] == ["flair"]
    assert {"dice_wt", "dice_tc", "dice_et"} <= set(summary["metrics"])


def test_tuple_settings_take_comma_separated_values_and_are_checked():
    config = BrainConfig.from_overrides({"members": "first,none",
                                         "class_targets_3d": "0.7,0.1,0.1,0.1"})
    assert config.members == ("first", "none")
    assert config.class_targets_3d == (0.7, 0.1, 0.1, 0.1)
    with pytest.raises(InputError, match="members"):
        BrainConfig.from_overrides({"members": "first,sideways"})
    with pytest.raises(InputError, match="class_targets_3d"):
        BrainConfig.from_overrides({"class_targets_3d": "0.5,0.1"})
    with pytest.raises(InputError, match="drop_sequences"):
        BrainConfig.from_overrides({"drop_sequences": "flair,pd"})


def test_demo_ensemble_on_unseen_phantoms(tmp_path):
    """Lower bars than the 10-case figures of docs/RESULTS.md, on two phantoms the demo
    ensemble never saw, with all four sequences and without FLAIR."""
    verbs.phantom("brain", tmp_path / "data", cases=2, seed=4343, orientation="random")
    full = verbs.evaluate("brain", tmp_path / "data", tmp_path / "full")["metrics"]
    assert full["dice_wt"]["mean"] >= DEMO_BARS[0], full
    assert full["dice_tc"]["mean"] >= DEMO_BARS[1], full
    assert full["dice_et"]["mean"] >= DEMO_BARS[2], full
    no_flair = verbs.evaluate("brain", tmp_path / "data", tmp_path / "no-flair",
                              overrides={"drop_sequences": "flair"})["metrics"]
    assert no_flair["dice_wt"]["mean"] >= full["dice_wt"]["mean"] - 0.15, no_flair
